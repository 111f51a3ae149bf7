"""The helper protocol: typed, versioned messages between an application and its helper process.

One JSON object per line. The application writes to the helper's stdin; the
helper answers on a pipe of its own. Nothing is a request the application waits
for: it says what happened (a database opened, a flush began) and hears back,
when it comes, how far each session was delivered. Every message names its ``op``; the first one each way
(:class:`Hello`, :class:`Ready`) carries :data:`VERSION`, and a helper refuses an
application of another version (:class:`Error`) -- the application then watches
in-process. Unknown fields are ignored (a newer peer may add some); a missing
field or a wrong type is a :class:`ProtocolError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

__all__ = [
    "VERSION",
    "Error",
    "Hello",
    "Log",
    "Manual",
    "ManualDone",
    "Message",
    "Position",
    "ProtocolError",
    "Ready",
    "WatchDb",
    "decode",
    "encode",
]

VERSION = 3


class ProtocolError(ValueError):
    """A line that is not a message of this protocol."""


@dataclass
class Message:
    op: ClassVar[str] = ""


# -- application -> helper ------------------------------------------------------


@dataclass
class Hello(Message):
    """The first message: how to export (the application's resource and settings)."""

    op: ClassVar[str] = "hello"
    version: int
    resource: dict[str, Any] = field(default_factory=dict)
    severity: str = "info"
    events: str = "blob"
    file_paths: str = "full"
    poll_interval: float = 0.01
    nice: int = 19
    exit_timeout: float = 30.0  # s the helper may go on exporting once the application is gone
    state_dir: str | None = None  # where its log and undelivered.jsonl go (None: it has none)


@dataclass
class WatchDb(Message):
    """A database was opened (a new DB session): follow it until RocksDB logs its end.

    ``anchor`` is the identity of the live LOG file at the open (it may be renamed by the
    time the helper looks); ``position``, when given, is where to resume instead (a
    session an earlier helper followed)."""

    op: ClassVar[str] = "watch"
    key: int
    db: str
    log: str
    anchor: dict[str, Any] | None = None
    position: dict[str, Any] | None = None


@dataclass
class Manual(Message):
    """An application ``flush()``/``compact_range()`` began: the parent of the jobs it causes.

    ``trace_id``/``span_id`` name the call's span, which the helper records (``name``,
    ``attributes``, child of ``parent_span_id`` in the same trace, if any): the application only
    makes its context current, so its own providers never hold a span of ours."""

    op: ClassVar[str] = "manual"
    id: int
    db: str
    kind: str
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    flags: int
    start_us: int
    cf: str | None = None  # the column family the call acts on (None: not known)
    name: str | None = None  # the call's span to record (None: the span is the application's)
    parent_span_id: str | None = None  # 16 hex digits: the application's span around the call
    parent_remote: bool = False
    attributes: dict[str, Any] | None = None


@dataclass
class ManualDone(Message):
    op: ClassVar[str] = "manual_done"
    id: int
    end_us: int
    error: str | None = None  # the call raised: "<type>: <message>"


# -- helper -> application ------------------------------------------------------


@dataclass
class Ready(Message):
    op: ClassVar[str] = "ready"
    version: int = VERSION


@dataclass
class Error(Message):
    """The helper cannot do its work (bad configuration, another version): the application falls back."""

    op: ClassVar[str] = "error"
    error: str


@dataclass
class Position(Message):
    """How far the session ``key`` was delivered -- exported, not only read (a
    :meth:`~otel_blob.watching.db_watch.Watch.checkpoint`). ``"stopped"`` in it: the session
    ended and everything it logged was delivered."""

    op: ClassVar[str] = "position"
    key: int
    position: dict[str, Any]


@dataclass
class Log(Message):
    """A message of the helper's for the application's log (while the application runs)."""

    op: ClassVar[str] = "log"
    level: int
    message: str


_TYPES = {cls.op: cls for cls in (Hello, WatchDb, Manual, ManualDone, Ready, Error, Position, Log)}
_PY_TYPES = {"int": int, "str": str, "float": (int, float), "dict[str, Any]": dict, "bool": bool}  # field types as written


def encode(msg: Message) -> bytes:
    # The fields are plain JSON values: the instance's own dict (asdict() deep-copies: slower).
    return (json.dumps({"op": msg.op, **vars(msg)}, separators=(",", ":")) + "\n").encode()


def decode(line: bytes) -> Message:
    """The message on ``line``; raises :class:`ProtocolError` saying what is wrong."""
    try:
        obj = json.loads(line)
    except ValueError:
        raise ProtocolError("not JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError("not a JSON object")
    cls = _TYPES.get(obj.get("op"))  # type: ignore[arg-type]
    if cls is None:
        raise ProtocolError(f"unknown op {obj.get('op')!r:.40}")
    values = {}
    for f in fields(cls):
        if f.name not in obj:
            continue
        value = obj[f.name]
        typename, optional = str(f.type).removesuffix(" | None"), str(f.type).endswith(" | None")
        want = _PY_TYPES.get(typename)
        if value is None and optional:
            pass
        elif want is not None and (not isinstance(value, want) or (isinstance(value, bool) and want is not bool)):
            raise ProtocolError(f"{cls.op}.{f.name} must be {f.type}, not {type(value).__name__}")
        values[f.name] = value
    try:
        return cls(**values)
    except TypeError as exc:
        raise ProtocolError(f"{cls.op}: {exc}") from None

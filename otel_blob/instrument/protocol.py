"""The helper protocol: typed, versioned messages between an application and its helper process.

One JSON object per line. The application writes to the helper's stdin; the
helper answers on a pipe of its own (its stdout and stderr are not the
application's business). Every message names its ``op``; the first one each way
(:class:`Hello`, :class:`Ready`) carries :data:`VERSION`, and a helper refuses an
application of another version (:class:`Error`) -- the application then watches
in-process. Unknown fields are ignored (a newer peer may add some); a missing
field or a wrong type is a :class:`ProtocolError`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

__all__ = [
    "VERSION",
    "Ack",
    "Close",
    "Error",
    "Hello",
    "Manual",
    "ManualDone",
    "Message",
    "ProtocolError",
    "Ready",
    "WatchDb",
    "decode",
    "encode",
]

VERSION = 1


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


@dataclass
class WatchDb(Message):
    """A database was opened: follow its LOG."""

    op: ClassVar[str] = "watch"
    db: str
    log: str


@dataclass
class Close(Message):
    """A database was closed: deliver what its LOG holds, then answer :class:`Ack` ``seq``."""

    op: ClassVar[str] = "close"
    log: str
    seq: int


@dataclass
class Manual(Message):
    """An application ``flush()``/``compact_range()`` began: the parent of the jobs it causes."""

    op: ClassVar[str] = "manual"
    id: int
    db: str
    kind: str
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    flags: int
    start_us: int


@dataclass
class ManualDone(Message):
    op: ClassVar[str] = "manual_done"
    id: int
    end_us: int


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
class Ack(Message):
    op: ClassVar[str] = "ack"
    seq: int


_TYPES = {cls.op: cls for cls in (Hello, WatchDb, Close, Manual, ManualDone, Ready, Error, Ack)}
_PY_TYPES = {"int": int, "str": str, "float": (int, float), "dict[str, Any]": dict}


def encode(msg: Message) -> bytes:
    return (json.dumps({"op": msg.op, **asdict(msg)}, separators=(",", ":")) + "\n").encode()


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
        want = _PY_TYPES.get(str(f.type))
        if want is not None and (not isinstance(value, want) or isinstance(value, bool)):
            raise ProtocolError(f"{cls.op}.{f.name} must be {f.type}, not {type(value).__name__}")
        values[f.name] = value
    try:
        return cls(**values)
    except TypeError as exc:
        raise ProtocolError(f"{cls.op}: {exc}") from None

"""Typed RocksDB events and the pure decoding of info-LOG lines into them.

No I/O and no OpenTelemetry here: :func:`parse_line` turns one LOG line into a
:class:`LogLine` (or ``None``), and :class:`LogDecoder` keeps the little state a
LOG needs to be understood (the session id from the header, which job is a flush
or a compaction and of which column family, which blob files are alive and how
big they are) and turns parsed lines into ``...Info`` values.

What the LOG does not say and is derived here (documented in README "Events"):

* ``file_path`` -- ``<blob dir>/<file_number as %06d>.blob``; the blob dir is the
  DB path unless the caller names one per column family.
* ``reason`` of a blob file creation -- the kind of the job that logged it:
  ``flush_started`` -> ``flush``, ``compaction_started`` -> ``compaction``,
  ``recovery_started`` -> ``recovery``; a job we never saw start -> ``unknown``.
* ``cf_name`` of flushes and compactions -- the plain-text line RocksDB writes just
  before ``*_started`` (``[cf] [JOB n] Flushing ...`` / ``Compacting ...``).
* ``cf_name``/``file_size`` of a deletion -- remembered from the creation, or
  from the directory scan the watcher does when it starts.
"""

from __future__ import annotations

import json
import re
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Mapping as _MappingABC
from dataclasses import dataclass, field
from itertools import compress
from typing import Any, Callable, Iterable, Iterator, Mapping

__all__ = [
    "BatchInfo",
    "BlobFileCreationInfo",
    "BlobFileDeletionInfo",
    "CompactionJobInfo",
    "FlushJobInfo",
    "LineSkippedInfo",
    "LogDecoder",
    "LogLine",
    "RecoveryJobInfo",
    "TableFileCreationInfo",
    "TableFileDeletionInfo",
    "WatchInfo",
    "callback_of",
    "parse_line",
]

OK = "OK"

# ---------------------------------------------------------------------------
# Info types: one per event, job_id first, status on the same struct (Pebble's
# event.go shape). ``callback`` names the EventListener method that receives it.
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class BlobFileCreationInfo:
    """A blob file finished by a flush, compaction (incl. blob GC) or recovery."""

    callback = "on_blob_file_created"

    job_id: int | None
    db_name: str
    cf_name: str | None
    file_path: str
    file_number: int
    reason: str  # flush | compaction | recovery | unknown
    total_blob_count: int | None
    total_blob_bytes: int | None
    file_checksum: str | None
    file_checksum_func_name: str | None
    status: str
    file_size: int | None
    time_micros: int | None
    session_id: str | None

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(slots=True)
class BlobFileDeletionInfo:
    """A blob file RocksDB deleted (or failed to delete: see ``status``)."""

    callback = "on_blob_file_deleted"

    job_id: int | None
    db_name: str
    file_path: str
    file_number: int
    status: str
    time_micros: int | None
    session_id: str | None
    file_size: int | None = None
    cf_name: str | None = None
    # When this DB's watcher saw the creation: RocksDB time of it (for lifetimes).
    created_micros: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(slots=True)
class TableFileCreationInfo:
    callback = "on_table_file_created"

    job_id: int | None
    db_name: str
    cf_name: str | None
    file_path: str
    file_number: int
    file_size: int | None
    reason: str
    status: str
    time_micros: int | None
    session_id: str | None
    oldest_blob_file_number: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(slots=True)
class TableFileDeletionInfo:
    callback = "on_table_file_deleted"

    job_id: int | None
    db_name: str
    file_path: str
    file_number: int
    status: str
    time_micros: int | None
    session_id: str | None

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(slots=True)
class _JobInfo:
    job_id: int | None
    db_name: str
    cf_name: str | None
    session_id: str | None
    time_micros: int | None
    # RocksDB's reason string (flush_reason / compaction_reason); None for recovery.
    reason: str | None
    # True on the ``*_finished`` event; the ``*_started`` event has False.
    finished: bool
    # RocksDB time of the matching ``*_started`` (on finished events, when seen).
    start_micros: int | None = None
    # Every other JSON field of the event, as RocksDB wrote it.
    details: dict[str, Any] = field(default_factory=dict)
    # The JSON was cut short (RocksDB caps event lines); fields were salvaged.
    truncated: bool = False


@dataclass(slots=True)
class FlushJobInfo(_JobInfo):
    callback = "on_flush_begin"  # on_flush_completed when finished (see callback_of)


@dataclass(slots=True)
class CompactionJobInfo(_JobInfo):
    callback = "on_compaction_begin"


@dataclass(slots=True)
class RecoveryJobInfo(_JobInfo):
    callback = "on_recovery_begin"


@dataclass(slots=True)
class LineSkippedInfo:
    """A LOG line (or event) that could not be used: counted, logged, reported."""

    callback = "on_line_skipped"

    db_name: str
    reason: str  # malformed_json | invalid_file_number | line_too_long | ...
    detail: str
    log_path: str | None = None
    offset: int | None = None


@dataclass(slots=True)
class WatchInfo:
    """A watcher started or stopped following one DB's LOG."""

    callback = "on_watch_started"  # on_watch_stopped when stopped

    db_name: str
    log_path: str
    stopped: bool = False
    # Blob files found in the DB directory when watching started: number -> size.
    existing_blob_files: dict[int, int | None] = field(default_factory=dict)


@dataclass(slots=True)
class BatchInfo:
    """The watcher delivered every event of the lines it just read.

    A listener that buffers (e.g. keeps a finished job's span open for the
    deletions RocksDB logs right after it) can settle here.
    """

    callback = "on_batch_delivered"

    db_name: str
    lines: int
    events: int


_FINISHED_CALLBACK = {
    FlushJobInfo: "on_flush_completed",
    CompactionJobInfo: "on_compaction_completed",
    RecoveryJobInfo: "on_recovery_completed",
}


def callback_of(info: Any) -> str:
    """The EventListener method name that receives ``info``."""
    if isinstance(info, _JobInfo) and info.finished:
        return _FINISHED_CALLBACK[type(info)]
    if isinstance(info, WatchInfo) and info.stopped:
        return "on_watch_stopped"
    return info.callback


# ---------------------------------------------------------------------------
# parse_line: one line -> LogLine | None. Pure and total: never raises.
# ---------------------------------------------------------------------------

_EVENT_MARK = b"EVENT_LOG_v1 "
_SESSION_MARK = b"DB Session ID:"
_DBPATH_RE = re.compile(rb" SST files in (.+) dir, Total Num")
# "[default] [JOB 4] Flushing memtable ..." / "[cf1] [JOB 7] Compacting 1@0 ..."
_JOBTEXT_RE = re.compile(rb"\] \[(?P<cf>[^\]\r\n]*)\] \[JOB (?P<job>\d+)\] (?P<kind>Flushing|Compacting)")
# Salvage of a cut JSON object: scalar "key": value pairs in order of appearance.
_PAIR_RE = re.compile(
    # The string alternative unrolled ("[^"\\]*(?:\\.[^"\\]*)*"): only a character class
    # repeats, so an unterminated string costs no backtracking memory per character.
    r'"(?P<k>[A-Za-z0-9_]+)": (?P<v>"[^"\\]*(?:\\.[^"\\]*)*"|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null)'
)


# The hot path: the exact shapes RocksDB writes for blob file events, decoded
# without json.loads. A line matches only if json.loads would give the same
# object (same keys in the same order, JSON integers without sign or leading
# zero, strings without escapes or control characters, valid UTF-8); anything
# else -- a new field, an escaped path in a status -- takes the json.loads path.
_FAST_INT = rb"(0|[1-9][0-9]{0,17})"
_FAST_STR = rb'"([^"\\\x00-\x1f]*)"'
_BLOB_FAST_BODY = (
    rb'\{"time_micros": ' + _FAST_INT
    + rb'(?:, "cf_name": ' + _FAST_STR + rb")?"
    + rb', "job": ' + _FAST_INT
    + rb', "event": "blob_file_(creation|deletion)"'
    + rb', "file_number": ' + _FAST_INT
    + rb'(?:, "total_blob_count": ' + _FAST_INT
    + rb', "total_blob_bytes": ' + _FAST_INT
    + rb', "file_checksum": ' + _FAST_STR
    + rb', "file_checksum_func_name": ' + _FAST_STR + rb")?"
    + rb'(?:, "status": ' + _FAST_STR + rb")?"
    + rb"\}"
)
_BLOB_FAST = re.compile(_BLOB_FAST_BODY + rb"\Z")
_FAST_KEYS = ("time_micros", "cf_name", "job", "event", "file_number", "total_blob_count",
              "total_blob_bytes", "file_checksum", "file_checksum_func_name", "status")
_FAST_IS_INT = (True, False, True, False, True, True, True, False, False, False)


def _blob_fields(m: re.Match[bytes]) -> dict[str, Any] | None:
    """The dict json.loads would return for a _BLOB_FAST match (None: invalid UTF-8)."""
    fields: dict[str, Any] = {}
    try:
        for key, is_int, raw in zip(_FAST_KEYS, _FAST_IS_INT, m.groups()):
            if raw is not None:
                fields[key] = int(raw) if is_int else raw.decode()
    except UnicodeDecodeError:
        return None
    fields["event"] = "blob_file_" + fields["event"]
    return fields


# feed_lines' scan: every event line of a joined batch, as one tuple from findall
# (no match objects). The two lines RocksDB writes for blob files, exactly
# (creation: cf_name, totals, checksum and status always; deletion: status only
# when it failed), are split into their fields and go straight to the decoder's
# _created / _deleted; every other event line -- other events, other shapes --
# comes back as its payload (the last group) for parse_line's path. Strings are
# ASCII without escapes (so .decode() equals json.loads and _str), and cf_name is
# at most 50 bytes, which keeps the event name within the 160 bytes the blob_only
# prefilter looks at (so every line of these shapes passes it; 53 would still fit).
_ASCII_STR = rb'"([^"\\\x00-\x1f\x80-\xff]*)"'
_BATCH_RE = re.compile(
    rb'EVENT_LOG_v1 (?:\{"time_micros": ' + _FAST_INT + rb", (?:"
    + rb'"cf_name": "([^"\\\x00-\x1f\x80-\xff]{0,50})", "job": ' + _FAST_INT
    + rb', "event": "blob_file_creation", "file_number": ' + _FAST_INT
    + rb', "total_blob_count": ' + _FAST_INT + rb', "total_blob_bytes": ' + _FAST_INT
    + rb', "file_checksum": ' + _ASCII_STR + rb', "file_checksum_func_name": ' + _ASCII_STR
    + rb', "status": ' + _ASCII_STR
    + rb'|"job": ' + _FAST_INT + rb', "event": "blob_file_deletion", "file_number": ' + _FAST_INT
    + rb'(?:, "status": ' + _ASCII_STR + rb")?"
    + rb")\}(?=\n|\Z)|([^\n]*))"
)


@dataclass(slots=True)
class LogLine:
    """What one LOG line means to us.

    kind is ``event`` (fields = the EVENT_LOG_v1 JSON), ``session`` (value = the
    DB session id), ``db_path`` (value = the DB path from the header), ``job``
    (value = (cf, job id, "flush"|"compaction") from the plain-text job line), or
    ``malformed`` (value = why).
    """

    kind: str
    value: Any = None
    fields: dict[str, Any] | None = None
    truncated: bool = False


def parse_line(line: bytes, wanted: Callable[[bytes], bool] | None = None) -> LogLine | None:
    """Classify one LOG line (without its newline). Never raises.

    ``wanted``, if given, sees the raw bytes of an event line and may reject it
    before any JSON is decoded (the cheap prefilter of the hot path).
    """
    try:
        return _parse_line(line, wanted)
    except Exception as exc:  # pragma: no cover - belt and braces: total by contract
        return LogLine("malformed", f"{type(exc).__name__}: {exc}")


def _parse_line(line: bytes, wanted: Callable[[bytes], bool] | None) -> LogLine | None:
    at = line.find(_EVENT_MARK)
    if at < 0:
        if b"[JOB " in line:
            m = _JOBTEXT_RE.search(line)
            if m:
                kind = "flush" if m.group("kind") == b"Flushing" else "compaction"
                cf = m.group("cf").decode("utf-8", "replace")
                return LogLine("job", (cf, int(m.group("job")), kind))
            return None
        if _SESSION_MARK in line:
            sid = line.split(_SESSION_MARK, 1)[1].strip().decode("utf-8", "replace")
            return LogLine("session", sid) if sid else None
        if b" SST files in " in line:
            m = _DBPATH_RE.search(line)
            if m:
                return LogLine("db_path", m.group(1).decode("utf-8", "surrogateescape"))
        return None
    payload = line[at + len(_EVENT_MARK):]
    if wanted is not None and not wanted(payload):
        return None
    return _parse_payload(payload)


def _parse_payload(payload: bytes) -> LogLine:
    m = _BLOB_FAST.match(payload)
    if m is not None:
        fields = _blob_fields(m)
        if fields is not None:
            return LogLine("event", fields=fields)
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return _salvage(payload)
    if not isinstance(obj, dict):
        return LogLine("malformed", "event JSON is not an object")
    return LogLine("event", fields=obj)


# Plain-text lines parse_line may classify: every line where _JOBTEXT_RE can match
# contains one of the first two; session and DB path lines the others.
_RARE_NEEDLES = (b"] Flushing", b"] Compacting", _SESSION_MARK, b" SST files in ")


def _salvage(payload: bytes) -> LogLine:
    """Recover the leading scalar fields of an event whose JSON is cut or broken.

    RocksDB writes ``time_micros``, ``job``/``cf_name`` and ``event`` first, so a
    line cut at its length cap still tells which job finished.
    """
    text = payload.decode("utf-8", "replace")
    try:  # invalid UTF-8 alone: the JSON may be fine once decoded leniently
        obj = json.loads(text)
        if isinstance(obj, dict):
            return LogLine("event", fields=obj)
    except (ValueError, RecursionError):
        pass
    fields: dict[str, Any] = {}
    depth_cut = _top_level_prefix(text)
    end = len(depth_cut)
    for m in _PAIR_RE.finditer(depth_cut):
        key = m.group("k")
        if key in fields:
            continue
        if m.end() >= end or depth_cut[m.end()] not in ",} \t\r\n":
            # A number (or literal) that runs into the cut may itself be cut short:
            # "file_number": 12 of 1234 would name another file. Strings end in a quote.
            if not m.group("v").startswith('"'):
                continue
        try:
            fields[key] = json.loads(m.group("v"))
        except ValueError:
            continue
    if "event" not in fields:
        return LogLine("malformed", "unparseable event JSON")
    return LogLine("event", fields=fields, truncated=True)


def _top_level_prefix(text: str) -> str:
    """The part of a JSON object text before its first nested ``{`` or ``[``.

    Keeps salvage from picking keys of nested objects (``table_properties``).
    """
    cut = len(text)
    for ch in "[{":
        i = text.find(ch, 1)
        if 0 <= i < cut:
            cut = i
    return text[:cut]


# ---------------------------------------------------------------------------
# LogDecoder: the state one DB's LOG needs, LogLine -> Info values.
# ---------------------------------------------------------------------------

# Events we decode JSON for even when the listener only wants blob events: they
# give blob creations their reason.
_JOB_START_EVENTS = (b'"flush_started"', b'"compaction_started"', b'"recovery_started"')
_BLOB_EVENTS = (b'"blob_file_creation"', b'"blob_file_deletion"')

_JOB_KIND = {
    "flush_started": ("flush", False),
    "flush_finished": ("flush", True),
    "compaction_started": ("compaction", False),
    "compaction_finished": ("compaction", True),
    "recovery_started": ("recovery", False),
    "recovery_finished": ("recovery", True),
}
_JOB_TYPE = {"flush": FlushJobInfo, "compaction": CompactionJobInfo, "recovery": RecoveryJobInfo}
_REASON_KEY = {"flush": "flush_reason", "compaction": "compaction_reason"}
_COMMON_KEYS = frozenset({"time_micros", "job", "event", "cf_name"})


_INT64_END = 1 << 63


def _uint(value: Any) -> int | None:
    """A non-negative int below 2**63, or None for anything else (bools are not numbers).

    RocksDB's numbers (file numbers, counts, bytes, microseconds) are far below;
    a bigger one is garbage, and OTLP could not carry it (int64 attributes).
    """
    if type(value) is int and 0 <= value < _INT64_END:
        return value
    return None


def _str(value: Any) -> str | None:
    """A str that can be encoded as UTF-8 (json.loads lets lone surrogates through:
    ``"\\ud800"`` or raw ED A0 80 bytes; OTLP could not encode the whole batch)."""
    if type(value) is not str:
        return None
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "replace").decode("utf-8")
    return value


@dataclass(slots=True)
class _Job:
    kind: str
    cf: str | None = None
    reason: str | None = None
    start_micros: int | None = None


_I64 = 1 << 63  # sizes and times at or above this (never seen from RocksDB) are kept as None
_U64 = 1 << 64  # file numbers at or above this (not a RocksDB uint64) are not kept
_MAX_CF_NAMES = 4096  # distinct column family names kept; beyond, an entry's cf is None
_COMPACT_MIN = 4096  # dead array entries tolerated before a rebuild


class _LiveBlobFiles(_MappingABC):
    """The blob files alive as far as the decoder knows: number -> (size, cf, created_micros).

    Bounded: at most ``cap`` entries. A creation beyond it evicts the oldest file
    -- the lowest number: RocksDB numbers files in creation order -- and counts it
    in :attr:`evicted`; that file's deletion is then reported without size, cf and
    lifetime, as for a file created before the watch began.

    Compact and fast in two tiers. The newest files (at most ``young``: cap / 8, up
    to 8,192) are a dict, ~190 bytes an entry: creations and the deletions of
    recent files -- in the benchmark's blob GC workload every deletion is of one
    of the last ~2,000 files created -- cost what a dict costs. When it is full
    its older half moves, lowest numbers first, into parallel arrays sorted by
    number: ~29 bytes an entry (number, size, time as 8-byte integers, the cf as
    a 4-byte index into the few distinct names, an alive flag), looked up by
    bisection. Every array number is below every dict number. Dead array entries
    only clear their flag until there are more than half as many as live ones;
    then the arrays are rebuilt.
    """

    __slots__ = ("cap", "evicted", "_young_max", "_young", "_num", "_size", "_when", "_cf", "_alive",
                 "_top", "_head", "_live", "_dead", "_cf_names", "_cf_index")

    def __init__(self, cap: int, young: int | None = None) -> None:
        self.cap = max(0, int(cap))
        self._young_max = max(1, min(8192, self.cap // 8) if young is None else int(young))
        self.evicted = 0
        self._reset()

    def _reset(self) -> None:
        # number -> (size, cf, created); cf is the one str object per name in _cf_names
        self._young: dict[int, tuple[int | None, str | None, int | None]] = {}
        self._num = array("Q")
        self._size = array("q")  # -1: unknown
        self._when = array("q")  # -1: unknown
        self._cf = array("I")  # index into _cf_names; 0: None
        self._alive = bytearray()
        self._top = -1  # the arrays' last number (-1: none)
        self._head = 0  # every array entry before it is dead
        self._live = 0  # alive array entries
        self._dead = 0
        self._cf_names: list[str | None] = [None]
        self._cf_index: dict[str | None, int] = {None: 0}

    # -- Mapping ------------------------------------------------------------------

    def __len__(self) -> int:
        return self._live + len(self._young)

    def __iter__(self) -> Iterator[int]:
        for e in self.entries():
            yield e[0]

    def __contains__(self, number: object) -> bool:
        return self.get(number) is not None

    def __getitem__(self, number: int) -> tuple[int | None, str | None, int | None]:
        v = self.get(number)
        if v is None:
            raise KeyError(number)
        return v

    def get(self, number: Any, default: Any = None) -> Any:
        if type(number) is not int:
            return default
        v = self._young.get(number)
        if v is not None:
            return v
        i = self._find(number)
        return self._entry(i) if i >= 0 else default

    def entries(self) -> Iterator[tuple[int, int | None, str | None, int | None]]:
        """(number, size, cf, created_micros) of every entry, oldest (lowest number) first."""
        h = self._head
        names = self._cf_names
        for n, s, w, c, a in zip(self._num[h:], self._size[h:], self._when[h:], self._cf[h:], self._alive[h:]):
            if a:
                yield n, (None if s < 0 else s), names[c], (None if w < 0 else w)
        young = self._young
        for n in sorted(young):
            yield (n, *young[n])

    # -- updates ------------------------------------------------------------------

    def add(self, number: Any, size: Any, cf: Any, when: Any) -> None:
        """A file exists (a checkpoint, a directory scan): anything else than a file
        number (an int in 0..2**64) is ignored, a size or time that is not an int in
        0..2**63 or a cf that is not a str kept as None."""
        if type(number) is not int or not 0 <= number < _U64:
            return
        self.created(number, size if type(size) is int and 0 <= size < _I64 else None, cf if type(cf) is str else None,
                     when if type(when) is int and 0 <= when < _I64 else None)

    def created(self, number: int, size: int | None, cf: str | None, when: int | None) -> None:
        """A file was created (the decoder's hot path: ``number`` an int >= 0, ``cf`` a str
        or None); a known number is updated in place."""
        if number <= self._top:  # not newer than the arrays: in order there
            c = self._cf_index.get(cf)
            if self._add_old(number, size, self._cf_name(cf) if c is None else c, when) \
                    and self._live + len(self._young) > self.cap:
                self._evict()
            return
        young = self._young
        n = len(young)
        young[number] = (size, cf, when)
        if (n >= self._young_max or self._live + n >= self.cap) and len(young) > n:  # rarely
            if n >= self._young_max:
                self._age()
            if self._live + len(self._young) > self.cap:
                self._evict()

    def pop(self, number: int) -> tuple[int | None, str | None, int | None] | None:
        """Forget a deleted file; what was known of it (None: nothing)."""
        v = self._young.pop(number, None)
        if v is not None:
            return v
        if type(number) is not int or number > self._top:
            return None
        # The arrays; _find and _entry inlined.
        num = self._num
        head = self._head
        if len(num) == head:
            return None
        i = bisect_left(num, number, head)
        if num[i] != number:
            return None
        alive = self._alive
        if not alive[i]:
            return None
        alive[i] = 0
        self._live -= 1
        dead = self._dead = self._dead + 1
        s = self._size[i]
        w = self._when[i]
        out = (None if s < 0 else s), self._cf_names[self._cf[i]], (None if w < 0 else w)
        if i == head:
            self._advance()
        if dead > _COMPACT_MIN and dead > self._live >> 1:
            self._compact()
        return out

    def clear(self) -> None:
        self._reset()

    # -- internals ------------------------------------------------------------------

    def _cf_name(self, cf: Any) -> int:
        """The index of a column family name not seen yet (0: not a name, or too many names;
        the names no entry uses any more are dropped when the arrays are rebuilt)."""
        if type(cf) is not str or len(self._cf_names) >= _MAX_CF_NAMES:
            return 0
        c = self._cf_index[cf] = len(self._cf_names)
        self._cf_names.append(cf)
        return c

    def _add_old(self, number: int, size: Any, c: int, when: Any) -> bool:
        """Into the arrays; False if the number was there alive (updated)."""
        s = size if type(size) is int and 0 <= size < _I64 else -1
        w = when if type(when) is int and 0 <= when < _I64 else -1
        num = self._num
        if number > self._top:
            self._top = number
            num.append(number)
            self._size.append(s)
            self._when.append(w)
            self._cf.append(c)
            self._alive.append(1)
        else:
            i = bisect_left(num, number, self._head)
            if num[i] == number:
                self._size[i] = s
                self._when[i] = w
                self._cf[i] = c
                if self._alive[i]:
                    return False
                self._alive[i] = 1
                self._dead -= 1
            else:
                num.insert(i, number)
                self._size.insert(i, s)
                self._when.insert(i, w)
                self._cf.insert(i, c)
                self._alive.insert(i, 1)
        self._live += 1
        return True

    def _age(self) -> None:
        """Move the older half of the newest files into the arrays (lowest numbers first)."""
        young = self._young
        order = sorted(young)
        m = len(order) // 2
        old = order[:m]  # (add() and the decoder keep only RocksDB file numbers: all fit the "Q" array)
        rows = [young[n] for n in old]  # all above the arrays' numbers: appended in bulk
        self._num.extend(old)
        if old:
            self._top = old[-1]
        self._size.extend([r[0] if type(r[0]) is int and 0 <= r[0] < _I64 else -1 for r in rows])
        self._when.extend([r[2] if type(r[2]) is int and 0 <= r[2] < _I64 else -1 for r in rows])
        index = self._cf_index
        cfs = [index.get(r[1]) for r in rows]
        if None in cfs:  # a name not seen yet
            cfs = [self._cf_name(r[1]) if c is None else c for c, r in zip(cfs, rows)]
        self._cf.extend(cfs)
        self._alive.extend(b"\x01" * len(old))
        self._live += len(old)
        self._young = {n: young[n] for n in order[m:]}

    def _find(self, number: int) -> int:
        num = self._num
        if number > self._top or len(num) == self._head:
            return -1
        i = bisect_left(num, number, self._head)
        if num[i] == number and self._alive[i]:
            return i
        return -1

    def _entry(self, i: int) -> tuple[int | None, str | None, int | None]:
        s = self._size[i]
        w = self._when[i]
        return (None if s < 0 else s), self._cf_names[self._cf[i]], (None if w < 0 else w)

    def _advance(self) -> None:
        h = self._alive.find(1, self._head)
        if h >= 0:
            self._head = h
        else:  # every array entry dead: start afresh (the dict may hold any numbers again)
            self._num, self._size, self._when, self._cf = array("Q"), array("q"), array("q"), array("I")
            self._alive = bytearray()
            self._top = -1
            self._head = self._dead = 0

    def _evict(self) -> None:
        while self._live + len(self._young) > self.cap:
            if self._live:
                i = self._head
                self._alive[i] = 0
                self._live -= 1
                self._dead += 1
                self._advance()
            else:  # all in the dict (a cap below its size)
                del self._young[min(self._young)]
            self.evicted += 1
        if self._dead > _COMPACT_MIN and self._dead > self._live >> 1:
            self._compact()

    def _compact(self) -> None:
        """Drop the dead array entries (and the cf names no entry uses any more)."""
        alive = self._alive
        self._num = array("Q", compress(self._num, alive))
        self._top = self._num[-1] if self._num else -1
        self._size = array("q", compress(self._size, alive))
        self._when = array("q", compress(self._when, alive))
        cf = array("I", compress(self._cf, alive))
        if len(self._cf_names) > 64:
            names = self._cf_names
            used = {0, *cf}
            used.update(self._cf_index.get(e[1], 0) for e in self._young.values())
            order = sorted(used)
            remap = {old: new for new, old in enumerate(order)}
            cf = array("I", [remap[c] for c in cf])
            self._cf_names = [names[old] for old in order]
            self._cf_index = {name: i for i, name in enumerate(self._cf_names)}
        self._cf = cf
        self._alive = bytearray(b"\x01") * self._live
        self._head = 0
        self._dead = 0


class LogDecoder:
    """Turns one DB's parsed LOG lines into Info values. No I/O.

    ``blob_dir`` maps a column family name to the directory of its blob files
    (default: the DB path). ``file_size`` is called with a blob file's path when
    its creation is decoded (the watcher passes ``os.stat``; tests may pass
    anything). ``blob_only`` restricts output to blob file events (jobs are still
    tracked, for reasons).

    Its memory is bounded whatever the LOG: at most ``max_jobs`` jobs (per session)
    and ``max_live_blob_files`` live blob files, the oldest forgotten first
    (counted in :attr:`evicted`).
    """

    MAX_JOBS = 4096  # jobs remembered per session (cf/reason lookup); oldest forgotten
    # Live blob files remembered (size, cf, creation time, for their deletions); the
    # oldest evicted beyond it. 100,000 is more than any real DB has live (at RocksDB's
    # default 256 MiB blob files, 25 TB of blobs; at 64 MiB, 6.4 TB) and costs ~4.5 MB
    # (the newest 8,192 at ~190 bytes each, the rest at ~30: _LiveBlobFiles).
    MAX_LIVE_BLOB_FILES = 100_000

    def __init__(
        self,
        db_name: str,
        *,
        blob_dir: Callable[[str | None], str] | None = None,
        file_size: Callable[[str], int | None] | None = None,
        blob_only: bool = False,
        known_blob_files: Mapping[int, int | None] | None = None,
        max_live_blob_files: int | None = None,
        max_jobs: int | None = None,
    ) -> None:
        self.db_name = db_name
        self.session_id: str | None = None
        self._blob_dir = blob_dir or (lambda _cf: db_name)
        self._file_size = file_size or (lambda _path: None)
        self.blob_only = blob_only
        if max_jobs is not None:
            self.MAX_JOBS = max(1, int(max_jobs))
        self._jobs: OrderedDict[int, _Job] = OrderedDict()
        # Live blob files we know of: number -> (size, cf, created_micros), bounded.
        self.live_blob_files = _LiveBlobFiles(
            self.MAX_LIVE_BLOB_FILES if max_live_blob_files is None else max_live_blob_files)
        for n in sorted(k for k in (known_blob_files or {}) if type(k) is int):
            self.live_blob_files.add(n, known_blob_files[n], None, None)  # type: ignore[index]
        self.wanted = self._wanted_blob_only if blob_only else None

    @property
    def evicted(self) -> int:
        """Live blob files forgotten to stay within ``MAX_LIVE_BLOB_FILES`` (their
        deletions come without size, cf and lifetime)."""
        return self.live_blob_files.evicted

    # The hot path's prefilter: only JSON we will use gets decoded.
    @staticmethod
    def _wanted_blob_only(payload: bytes) -> bool:
        head = payload[:160]
        return any(m in head for m in _BLOB_EVENTS) or any(m in head for m in _JOB_START_EVENTS)

    def feed(self, parsed: LogLine) -> list[Any]:
        """Decode one parsed line; returns the Info values it yields (0 or 1)."""
        kind = parsed.kind
        if kind == "event":
            info = self._event(parsed.fields or {}, parsed.truncated)
            return [info] if info is not None else []
        if kind == "job":
            cf, job_id, job_kind = parsed.value
            job = self._job(job_id, job_kind)
            job.cf = cf
            return []
        if kind == "session":
            if parsed.value != self.session_id:
                # A new DB session (reopen): job ids restart, forget the old ones.
                self.session_id = parsed.value
                self._jobs.clear()
            return []
        if kind == "db_path":
            return []
        return [LineSkippedInfo(self.db_name, "malformed_line", str(parsed.value))]

    def feed_lines(self, lines: list[bytes]) -> list[Any]:
        """Decode a batch of raw lines (no newlines); the Info values they yield, in order.

        Exactly ``[i for l in lines if (p := parse_line(l, self.wanted)) for i in self.feed(p)]``,
        but the lines are joined and scanned in C: only lines that can mean
        something (an event mark, a job, session or DB path line) reach Python,
        and blob file events in RocksDB's exact shape become Info values straight
        from the scan's tuples (no json.loads, no dict, no LogLine).
        """
        if not lines:
            return []
        wanted = self.wanted
        if wanted is not None and wanted is not LogDecoder._wanted_blob_only:
            # A prefilter of the caller's: it must see every event line, as parse_line shows it.
            return [i for line in lines if (p := parse_line(line, wanted)) for i in self.feed(p)]
        buf = b"\n".join(lines)
        out: list[Any] = []
        # Plain-text lines that may matter (rare): line start -> line end. (One that also
        # has an event mark is decoded as parse_line does it: as an event.)
        rare: dict[int, int] = {}
        find, rfind = buf.find, buf.rfind
        for needle in _RARE_NEEDLES:
            i = find(needle)
            while i >= 0:
                ls = rfind(b"\n", 0, i) + 1
                le = find(b"\n", i)
                if le < 0:
                    le = len(buf)
                rare[ls] = le
                i = find(needle, le)
        # The event lines between them are scanned a stretch at a time, in order.
        pos = 0
        for ls, le in sorted(rare.items()):
            self._scan_events(buf, pos, ls, out)
            parsed = parse_line(buf[ls:le], wanted)
            if parsed is not None:
                out.extend(self.feed(parsed))
            pos = le
        self._scan_events(buf, pos, len(buf), out)
        return out

    def _scan_events(self, buf: bytes, pos: int, end: int, out: list[Any]) -> None:
        """The event lines of ``buf[pos:end]`` (whole lines) -> ``out``.

        A blob line in RocksDB's exact shape goes from the regex's groups straight to
        _created / _deleted (what _blob_created / _blob_deleted call after checking the
        dict's fields: the regex admits only ints below 2**63 and ASCII strings, so
        there is nothing left to check); json.loads, the dict, LogLine, feed and
        _event were most of the cost per event. Every other event line takes
        parse_line's path from its payload.
        """
        wanted = self.wanted
        created, deleted = self._created, self._deleted
        append = out.append
        for (t, cf, cjob, cnum, count, nbytes, cks, func, cst,
             djob, dnum, dst, payload) in _BATCH_RE.findall(buf, pos, end):
            if djob:
                append(deleted(int(djob), int(t), int(dnum), dst.decode() or OK))
            elif cjob:
                append(created(int(cjob), int(t), int(cnum), cf.decode(), int(count), int(nbytes),
                               cks.decode(), func.decode(), cst.decode() or OK))
            elif wanted is None or wanted(payload):
                out.extend(self.feed(_parse_payload(payload)))

    def state(self) -> dict[str, Any]:
        """What this decoder remembers, JSON-able (a checkpoint keeps it with the LOG offset).

        ``live_blob_files`` is ``[[number, size, cf, created_micros], ...]``, oldest first
        (the format of every version); ``evicted`` was added with the bound.
        """
        return {
            "session_id": self.session_id,
            "jobs": [[job_id, j.kind, j.cf, j.reason, j.start_micros] for job_id, j in self._jobs.items()],
            "live_blob_files": [list(e) for e in self.live_blob_files.entries()],
            "evicted": self.live_blob_files.evicted,
        }

    def restore(self, state: Mapping[str, Any] | None) -> None:
        """Take back what :meth:`state` returned (resuming where a checkpoint left off).

        Also a state written before the bounds (unsorted, uncapped, no ``evicted``):
        beyond the bounds the oldest jobs and files are dropped, the files counted
        as evicted.
        """
        if not state:
            return
        self.session_id = state.get("session_id")
        self._jobs.clear()
        jobs = list(state.get("jobs", []))
        for job_id, kind, cf, reason, start in jobs[-self.MAX_JOBS:]:
            self._jobs[int(job_id)] = _Job(kind, cf, reason, start)
        table = self.live_blob_files
        table.clear()
        table.evicted = 0
        rows = sorted(((int(n), size, cf, created) for n, size, cf, created in state.get("live_blob_files", [])),
                      key=lambda row: row[0])
        for n, size, cf, created in rows:
            table.add(n, size, cf, created)
        evicted = state.get("evicted", 0)
        table.evicted += evicted if type(evicted) is int and evicted >= 0 else 0

    def _job(self, job_id: int, kind: str) -> _Job:
        job = self._jobs.get(job_id)
        if job is None or job.kind != kind:
            job = self._jobs[job_id] = _Job(kind)
            if len(self._jobs) > self.MAX_JOBS:
                self._jobs.popitem(last=False)
        return job

    def blob_path(self, cf: str | None, number: int) -> str:
        return f"{self._blob_dir(cf)}/{number:06d}.blob"

    def table_path(self, number: int) -> str:
        return f"{self.db_name}/{number:06d}.sst"

    def _event(self, f: dict[str, Any], truncated: bool) -> Any:
        event = f.get("event")
        if type(event) is not str:
            return LineSkippedInfo(self.db_name, "malformed_line", f"event JSON without an event name: {event!r}"[:200])
        job_id = _uint(f.get("job"))
        when = _uint(f.get("time_micros"))
        if event == "blob_file_creation":
            return self._blob_created(f, job_id, when, truncated)
        if event == "blob_file_deletion":
            return self._blob_deleted(f, job_id, when)
        if event in _JOB_KIND:
            return self._job_event(event, f, job_id, when, truncated)
        if self.blob_only:
            return None
        if event == "table_file_creation":
            number = _uint(f.get("file_number"))
            if number is None:
                return self._invalid_number(f)
            job = self._jobs.get(job_id) if job_id is not None else None
            return TableFileCreationInfo(
                job_id, self.db_name, _str(f.get("cf_name")), self.table_path(number), number,
                _uint(f.get("file_size")), job.kind if job else "unknown",
                _str(f.get("status")) or OK, when, self.session_id,
                _uint(f.get("oldest_blob_file_number")),
            )
        if event == "table_file_deletion":
            number = _uint(f.get("file_number"))
            if number is None:
                return self._invalid_number(f)
            return TableFileDeletionInfo(
                job_id, self.db_name, self.table_path(number), number,
                _str(f.get("status")) or OK, when, self.session_id,
            )
        return None  # an event type we do not report (e.g. flush_started of a new kind)

    def _invalid_number(self, f: dict[str, Any]) -> LineSkippedInfo:
        return LineSkippedInfo(
            self.db_name, "invalid_file_number",
            f"{f.get('event')!s}: file_number={f.get('file_number')!r}",
        )

    def _blob_created(self, f: dict[str, Any], job_id: int | None, when: int | None, truncated: bool) -> Any:
        number = _uint(f.get("file_number"))
        if number is None:
            return self._invalid_number(f)
        return self._created(
            job_id, when, number, _str(f.get("cf_name")), _uint(f.get("total_blob_count")),
            _uint(f.get("total_blob_bytes")), _str(f.get("file_checksum")), _str(f.get("file_checksum_func_name")),
            _str(f.get("status")) or (None if truncated else OK))

    def _created(self, job_id: int | None, when: int | None, number: int, cf: str | None, count: int | None,
                 nbytes: int | None, checksum: str | None, checksum_func: str | None, status: str | None) -> Any:
        job = self._jobs.get(job_id) if job_id is not None else None
        if cf is None and job is not None:
            cf = job.cf
        path = self.blob_path(cf, number)
        size = self._file_size(path)
        if status == OK or status is None:  # RocksDB >= 10.4 also logs failed creations
            self.live_blob_files.created(number, size, cf, when)
        return BlobFileCreationInfo(
            job_id, self.db_name, cf, path, number, job.kind if job else "unknown", count, nbytes,
            checksum, checksum_func, status or "unknown", size, when, self.session_id,
        )

    def _blob_deleted(self, f: dict[str, Any], job_id: int | None, when: int | None) -> Any:
        number = _uint(f.get("file_number"))
        if number is None:
            return self._invalid_number(f)
        return self._deleted(job_id, when, number, _str(f.get("status")) or OK)

    def _deleted(self, job_id: int | None, when: int | None, number: int, status: str) -> Any:
        # A failed deletion (e.g. the retry after a reopen of a file already gone)
        # is reported with its status but does not end the file's life.
        live = self.live_blob_files
        known = live.pop(number) if status == OK else live.get(number)
        size, cf, created = known if known is not None else (None, None, None)
        return BlobFileDeletionInfo(
            job_id, self.db_name, self.blob_path(cf, number), number, status, when,
            self.session_id, size, cf, created,
        )

    def _job_event(self, event: str, f: dict[str, Any], job_id: int | None, when: int | None, truncated: bool) -> Any:
        kind, finished = _JOB_KIND[event]
        if job_id is None:
            return LineSkippedInfo(self.db_name, "invalid_job_id", f"{event}: job={f.get('job')!r}")
        job = self._job(job_id, kind)
        if not finished:
            job.start_micros = when
            job.reason = _str(f.get(_REASON_KEY.get(kind, ""))) if kind in _REASON_KEY else None
        if self.blob_only:
            return None
        details = {k: v for k, v in f.items() if k not in _COMMON_KEYS}
        cf = _str(f.get("cf_name")) or job.cf
        return _JOB_TYPE[kind](
            job_id, self.db_name, cf, self.session_id, when, job.reason, finished,
            job.start_micros, details, truncated,
        )


def iter_infos(decoder: LogDecoder, lines: Iterable[bytes]) -> Iterable[Any]:
    """Decode a sequence of raw lines (a convenience for replay and tests)."""
    wanted = decoder.wanted
    feed = decoder.feed
    for line in lines:
        parsed = parse_line(line, wanted)
        if parsed is not None:
            yield from feed(parsed)

"""The one rule set for RocksDB's info-LOG lines: what a line means, never raising.

Two kinds of lines matter:

* ``EVENT_LOG_v1 {json}`` lines. The two blob file events in the exact shape
  RocksDB writes them (:data:`BLOB_LINE`) are decoded without ``json.loads``;
  every other event line is ``json.loads``-ed, and a line whose JSON was cut
  (RocksDB caps event lines) is salvaged for its leading scalar fields.
* a few plain-text lines (:data:`PLAIN_RULES`): the job line before
  ``*_started`` (it names the column family), the session id and the DB path of
  the header, the session's ``Shutdown complete`` and the creation of a new database.

:func:`parse_line` classifies one line; the decoder's batch path
(:meth:`~otel_blob.decode.decoder.LogDecoder.feed_lines`) finds the same lines
in a joined batch with :data:`BATCH_EVENT_RE` and the rules' needles, and must
give exactly what ``parse_line`` gives line by line (tests/test_decode_fastpath.py).
Pure: no I/O, no OpenTelemetry.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

__all__ = [
    "BATCH_EVENT_RE",
    "BLOB_LINE",
    "EVENT_MARK",
    "PLAIN_RULES",
    "LogLine",
    "PlainRule",
    "blob_fields",
    "parse_line",
    "parse_payload",
    "text",
    "uint",
]

EVENT_MARK = b"EVENT_LOG_v1 "


@dataclass(slots=True)
class LogLine:
    """What one LOG line means to us.

    kind is ``event`` (fields = the EVENT_LOG_v1 JSON), ``session`` (value = the
    DB session id), ``db_path`` (value = the DB path from the header), ``job``
    (value = (cf, job id, "flush"|"compaction") from the plain-text job line),
    ``shutdown`` (the session's last line), ``new_db`` (the database was just
    created), or ``malformed`` (value = why).
    """

    kind: str
    value: Any = None
    fields: dict[str, Any] | None = None
    truncated: bool = False


# ---------------------------------------------------------------------------
# Values: what a field must be to be used
# ---------------------------------------------------------------------------

_INT64_END = 1 << 63


def uint(value: Any) -> int | None:
    """A non-negative int below 2**63, or None for anything else (bools are not numbers).

    RocksDB's numbers (file numbers, counts, bytes, microseconds) are far below;
    a bigger one is garbage, and OTLP could not carry it (int64 attributes).
    """
    if type(value) is int and 0 <= value < _INT64_END:
        return value
    return None


def text(value: Any) -> str | None:
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


# ---------------------------------------------------------------------------
# Blob file event lines in RocksDB's exact shape (the hot path)
# ---------------------------------------------------------------------------

# A line matches only if json.loads would give the same object: the keys in
# RocksDB's order, JSON integers without sign or leading zero below 2**63 (so
# uint() accepts them), ASCII strings without escapes or control characters (so
# .decode() equals json.loads and text()). Anything else -- a new field, an
# escaped path in a status, a non-ASCII column family -- takes the json.loads path.
_INT = rb"(0|[1-9][0-9]{0,17})"
_STR = rb'"([^"\\\x00-\x1f\x80-\xff]*)"'
# Groups: time, cf, job, file, count, bytes, checksum, checksum func, status (creation: every field,
# always written); job, file, status (deletion: status only when it failed).
BLOB_LINE = (
    rb'\{"time_micros": ' + _INT + rb", (?:"
    + rb'"cf_name": ' + _STR + rb', "job": ' + _INT
    + rb', "event": "blob_file_creation", "file_number": ' + _INT
    + rb', "total_blob_count": ' + _INT + rb', "total_blob_bytes": ' + _INT
    + rb', "file_checksum": ' + _STR + rb', "file_checksum_func_name": ' + _STR
    + rb', "status": ' + _STR
    + rb'|"job": ' + _INT + rb', "event": "blob_file_deletion", "file_number": ' + _INT
    + rb'(?:, "status": ' + _STR + rb")?"
    + rb")\}"
)
_BLOB_LINE_RE = re.compile(BLOB_LINE + rb"\Z")
# The batch scan: every event line of a joined batch, as one findall tuple -- a blob
# line in the exact shape split into BLOB_LINE's 12 groups, any other event line as
# its payload (the 13th group) for parse_payload.
BATCH_EVENT_RE = re.compile(re.escape(EVENT_MARK) + rb"(?:" + BLOB_LINE + rb"(?=\n|\Z)|([^\n]*))")


def blob_fields(groups: tuple[bytes | None, ...]) -> dict[str, Any]:
    """The dict json.loads gives for a BLOB_LINE match's groups."""
    t, cf, cjob, cnum, count, nbytes, cks, func, cst, djob, dnum, dst = groups[:12]
    if cjob is not None:
        return {"time_micros": int(t), "cf_name": cf.decode(), "job": int(cjob),  # type: ignore[arg-type,union-attr]
                "event": "blob_file_creation", "file_number": int(cnum),  # type: ignore[arg-type]
                "total_blob_count": int(count), "total_blob_bytes": int(nbytes),  # type: ignore[arg-type]
                "file_checksum": cks.decode(), "file_checksum_func_name": func.decode(),  # type: ignore[union-attr]
                "status": cst.decode()}  # type: ignore[union-attr]
    fields: dict[str, Any] = {"time_micros": int(t), "job": int(djob),  # type: ignore[arg-type]
                              "event": "blob_file_deletion", "file_number": int(dnum)}  # type: ignore[arg-type]
    if dst is not None:
        fields["status"] = dst.decode()
    return fields


# ---------------------------------------------------------------------------
# Plain-text lines
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PlainRule:
    """A plain-text line the decoder uses. Every such line contains one of ``needles``:
    the batch path finds candidate lines with them (in C) before ``parse`` sees one."""

    name: str
    needles: tuple[bytes, ...]
    parse: Callable[[bytes], LogLine | None]


# "[default] [JOB 4] Flushing memtable ..." / "[cf1] [JOB 7] Compacting 1@0 ..."
_JOBTEXT_RE = re.compile(rb"\] \[(?P<cf>[^\]\r\n]*)\] \[JOB (?P<job>\d+)\] (?P<kind>Flushing|Compacting)")
_SESSION_MARK = b"DB Session ID:"
_DBPATH_RE = re.compile(rb" SST files in (.+) dir, Total Num")


def _job_line(line: bytes) -> LogLine | None:
    m = _JOBTEXT_RE.search(line)
    if m is None:
        return None
    kind = "flush" if m.group("kind") == b"Flushing" else "compaction"
    return LogLine("job", (m.group("cf").decode("utf-8", "replace"), int(m.group("job")), kind))


def _session_line(line: bytes) -> LogLine | None:
    sid = line.split(_SESSION_MARK, 1)[1].strip().decode("utf-8", "replace")
    return LogLine("session", sid) if sid else None


def _db_path_line(line: bytes) -> LogLine | None:
    m = _DBPATH_RE.search(line)
    return LogLine("db_path", m.group(1).decode("utf-8", "surrogateescape")) if m else None


# "[db/db_impl/db_impl.cc:709] Shutdown complete": the last line of a DB session.
_SHUTDOWN_RE = re.compile(rb"\] Shutdown complete\s*$")
# "[db/db_impl/db_impl_open.cc:312] Creating manifest 1": only a new database writes MANIFEST-000001
# (later manifests -- "Creating manifest 5" from version_set.cc -- are rolls of an existing one).
_NEW_DB_RE = re.compile(rb"\] Creating manifest 1\s*$")


def _shutdown_line(line: bytes) -> LogLine | None:
    return LogLine("shutdown") if _SHUTDOWN_RE.search(line) else None


def _new_db_line(line: bytes) -> LogLine | None:
    return LogLine("new_db") if _NEW_DB_RE.search(line) else None


# In order: the first rule whose needle a line contains decides what it means.
PLAIN_RULES: tuple[PlainRule, ...] = (
    PlainRule("job", (b"] Flushing", b"] Compacting"), _job_line),
    PlainRule("session", (_SESSION_MARK,), _session_line),
    PlainRule("db_path", (b" SST files in ",), _db_path_line),
    PlainRule("shutdown", (b"] Shutdown complete",), _shutdown_line),
    PlainRule("new_db", (b"] Creating manifest 1",), _new_db_line),
)


# ---------------------------------------------------------------------------
# parse_line: one line -> LogLine | None. Pure and total: never raises.
# ---------------------------------------------------------------------------


def parse_line(line: bytes, wanted: Callable[[bytes], bool] | None = None) -> LogLine | None:
    """Classify one LOG line (without its newline). Never raises.

    ``wanted``, if given, sees the raw bytes of an event line and may reject it
    before any JSON is decoded (the cheap prefilter of the hot path).
    """
    try:
        at = line.find(EVENT_MARK)
        if at < 0:
            return parse_plain(line)
        payload = line[at + len(EVENT_MARK):]
        if wanted is not None and not wanted(payload):
            return None
        return parse_payload(payload)
    except Exception as exc:  # pragma: no cover - belt and braces: total by contract
        return LogLine("malformed", f"{type(exc).__name__}: {exc}")


def parse_plain(line: bytes) -> LogLine | None:
    """A line without an event mark: what the first rule it matches says, or None."""
    for rule in PLAIN_RULES:
        for needle in rule.needles:
            if needle in line:
                return rule.parse(line)
    return None


def parse_payload(payload: bytes) -> LogLine:
    """The JSON after ``EVENT_LOG_v1``: an ``event`` LogLine, or ``malformed``."""
    m = _BLOB_LINE_RE.match(payload)
    if m is not None:
        return LogLine("event", fields=blob_fields(m.groups()))
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return _salvage(payload)
    if not isinstance(obj, dict):
        return LogLine("malformed", "event JSON is not an object")
    return LogLine("event", fields=obj)


# Salvage of a cut JSON object: scalar "key": value pairs in order of appearance.
_PAIR_RE = re.compile(
    # The string alternative unrolled ("[^"\\]*(?:\\.[^"\\]*)*"): only a character class
    # repeats, so an unterminated string costs no backtracking memory per character.
    r'"(?P<k>[A-Za-z0-9_]+)": (?P<v>"[^"\\]*(?:\\.[^"\\]*)*"|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null)'
)


def _salvage(payload: bytes) -> LogLine:
    """Recover the leading scalar fields of an event whose JSON is cut or broken.

    RocksDB writes ``time_micros``, ``job``/``cf_name`` and ``event`` first, so a
    line cut at its length cap still tells which job finished.
    """
    decoded = payload.decode("utf-8", "replace")
    try:  # invalid UTF-8 alone: the JSON may be fine once decoded leniently
        obj = json.loads(decoded)
        if isinstance(obj, dict):
            return LogLine("event", fields=obj)
    except (ValueError, RecursionError):
        pass
    fields: dict[str, Any] = {}
    depth_cut = _top_level_prefix(decoded)
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


def _top_level_prefix(decoded: str) -> str:
    """The part of a JSON object text before its first nested ``{`` or ``[``.

    Keeps salvage from picking keys of nested objects (``table_properties``).
    """
    cut = len(decoded)
    for ch in "[{":
        i = decoded.find(ch, 1)
        if 0 <= i < cut:
            cut = i
    return decoded[:cut]

"""Hostile input: fuzzing the LOG decoder and the follower with real RocksDB lines.

Every line mutated here comes from the LOG of a real rocksdict blob workload
(flushes, compactions with blob GC, table and blob files created and deleted;
the ``real_log`` session fixture). The properties:

* nothing raises out of ``parse_line`` / ``LogDecoder.feed`` / ``feed_lines`` or
  a :class:`otel_blob.Watch`; the batch decoder (``feed_lines``) and the line by
  line path agree on every input;
* what comes out is typed as the README promises: a blob event whose
  ``file_number`` is not a non-negative integer is a counted skip, a faulty
  secondary field is ``None`` and the event is still delivered;
* memory is bounded (tracemalloc peaks, no retention), not timed;
* a valid blob event written *after* the garbage still arrives, through a real
  watch of a DB directory -- and through the OTLP exporter to a receiver.

Bugs this file found (and that are fixed): a cut number salvaged as another file's
number, file numbers beyond int64, lone surrogates breaking an OTLP batch, time
beyond uint64 nanoseconds, and the salvage regex's backtracking memory.
The follower's handling of LOG files that come and go (a rename before the new
LOG exists, a late line in a renamed file, thousands of rolled files) is at the end.
"""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tracemalloc
from dataclasses import dataclass, fields as dc_fields
from typing import Any

import pytest
import rocksdict
from hypothesis import HealthCheck, given, settings, strategies as st

import otel_blob
from dbutil import Recorder, blob_options, quiesce, write_round
from faults import PeakRss, account, events_from_recorder, log_scan, record
from otel_blob.decode import (
    BlobFileCreationInfo,
    BlobFileDeletionInfo,
    CompactionJobInfo,
    FlushJobInfo,
    LineSkippedInfo,
    LogDecoder,
    SessionInfo,
    TableFileCreationInfo,
    TableFileDeletionInfo,
    parse_line,
)

MARK = b"EVENT_LOG_v1 "
BLOB_EVENTS = ("blob_file_creation", "blob_file_deletion")
JOB_EVENTS = ("flush_started", "flush_finished", "compaction_started", "compaction_finished")
TABLE_EVENTS = ("table_file_creation", "table_file_deletion")
TYPE_OF = {
    "blob_file_creation": BlobFileCreationInfo,
    "blob_file_deletion": BlobFileDeletionInfo,
    "flush_started": FlushJobInfo,
    "flush_finished": FlushJobInfo,
    "compaction_started": CompactionJobInfo,
    "compaction_finished": CompactionJobInfo,
    "table_file_creation": TableFileCreationInfo,
    "table_file_deletion": TableFileDeletionInfo,
}


# ---------------------------------------------------------------------------
# The real LOG
# ---------------------------------------------------------------------------

@dataclass
class RealLog:
    db: str  # a closed DB directory (copy it before appending to its LOG)
    lines: list[bytes]  # every line of its LOG, without newlines
    events: dict[str, list[bytes]]  # event name -> real lines of that event

    def first(self, event: str) -> bytes:
        return self.events[event][0]

    def payload(self, event: str) -> dict[str, Any]:
        line = self.first(event)
        return json.loads(line[line.index(MARK) + len(MARK):])

    def prefix(self, event: str) -> bytes:
        line = self.first(event)
        return line[: line.index(MARK) + len(MARK)]


@pytest.fixture(scope="session")
def real_log(tmp_path_factory) -> RealLog:
    path = str(tmp_path_factory.mktemp("hostile") / "db")
    db = rocksdict.Rdict(path, blob_options(blob_file_size=16 << 10))
    for r in range(6):
        write_round(db, 60, prefix=b"r%d-" % (r % 3))  # overwrites: blob GC has garbage to collect
        db.flush()
    db.compact_range(None, None)
    quiesce(db)
    db.close()
    with open(os.path.join(path, "LOG"), "rb") as f:
        lines = f.read().split(b"\n")[:-1]
    events: dict[str, list[bytes]] = {}
    for line in lines:
        m = re.search(rb'EVENT_LOG_v1 \{.*"event": "(\w+)"', line)
        if m:
            events.setdefault(m.group(1).decode(), []).append(line)
    missing = [e for e in TYPE_OF if e not in events]
    assert not missing, f"the workload wrote no {missing}: the fuzzing below would prove less"
    return RealLog(path, lines, events)


@pytest.fixture
def db_copy(real_log, tmp_path) -> str:
    path = str(tmp_path / "db")
    shutil.copytree(real_log.db, path)
    return path


def append_log(db: str, data: bytes) -> None:
    with open(os.path.join(db, "LOG"), "ab") as f:
        f.write(data)


def number_of(line: bytes) -> int:
    return int(re.search(rb'"file_number": (\d+)', line).group(1))


def creation_line(real_log: RealLog, number: int) -> bytes:
    return real_log.first("blob_file_creation").replace(
        b'"file_number": %d' % number_of(real_log.first("blob_file_creation")), b'"file_number": %d' % number)


def deletion_line(real_log: RealLog, number: int) -> bytes:
    return real_log.first("blob_file_deletion").replace(
        b'"file_number": %d' % number_of(real_log.first("blob_file_deletion")), b'"file_number": %d' % number)


# ---------------------------------------------------------------------------
# The two decoding paths
# ---------------------------------------------------------------------------

def line_by_line(lines: list[bytes], blob_only: bool = False, db: str = "/db") -> list[Any]:
    d = LogDecoder(db, blob_only=blob_only)
    out: list[Any] = []
    for line in lines:
        parsed = parse_line(line, d.wanted)
        if parsed is not None:
            out.extend(d.feed(parsed))
    return out


def decode_both(lines: list[bytes], blob_only: bool = False) -> list[Any]:
    """Decode ``lines`` line by line and in one batch; they must agree (NaN-proof: by repr)."""
    one = line_by_line(lines, blob_only)
    batch = LogDecoder("/db", blob_only=blob_only).feed_lines(lines)
    assert repr(batch) == repr(one), "feed_lines and parse_line+feed disagree"
    return one


def as_follower_would(data: bytes) -> list[bytes]:
    """A mutated line as the follower hands it out: split at newlines."""
    return data.split(b"\n")


def strings_of(info: Any) -> list[str]:
    return [v for f in dc_fields(info) if isinstance(v := getattr(info, f.name), str)]


# ---------------------------------------------------------------------------
# Truncation at every byte offset, bit flips
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("event", list(TYPE_OF))
def test_every_truncation_of_a_real_event_line(real_log, event):
    """Each real event line cut at every byte offset: never raises, both decoding paths
    agree, a cut line never becomes another kind of event, and a decoder that saw
    every cut still decodes the whole line as a fresh one does."""
    line = real_log.first(event)
    cuts = [line[:i] for i in range(len(line) + 1)]
    allowed = {TYPE_OF[event], LineSkippedInfo}
    for blob_only in (False, True):
        out = decode_both(cuts, blob_only)
        assert {type(i) for i in out} <= allowed, {type(i).__name__ for i in out}
        assert not [i for i in out if isinstance(i, LineSkippedInfo)
                    and i.reason not in ("malformed_line", "repeated_event") and not i.reason.startswith("invalid_")], out
    if event in BLOB_EVENTS:
        # Cut copies that still name the whole file are that event: over every cut and the
        # whole line, the file's event is delivered exactly once, the copies counted as repeats.
        d = LogDecoder("/db")
        out = d.feed_lines(cuts) + d.feed_lines([line])
        fresh = LogDecoder("/db").feed_lines([line])
        # (The first wins: a salvaged cut may not know the status yet.)
        key = lambda i: (type(i), i.file_number, i.job_id)  # noqa: E731
        events = [key(i) for i in out if isinstance(i, TYPE_OF[event])]
        assert events == [key(i) for i in fresh] and len(fresh) == 1
        repeats = [i for i in out if isinstance(i, LineSkippedInfo) and i.reason == "repeated_event"]
        salvaged = [c for c in cuts if [key(i) for i in LogDecoder("/db").feed_lines([c])
                                        if isinstance(i, TYPE_OF[event])] == events]
        assert len(repeats) == len(salvaged) >= 1  # cuts holds the whole line too: it came twice


@pytest.mark.parametrize("event", BLOB_EVENTS)
def test_a_cut_blob_line_never_names_another_file(real_log, event):
    """A blob line cut anywhere (a crash mid-line, handed out at stop()) is skipped or
    names its own file -- never another blob file."""
    line = real_log.first(event)
    number = number_of(line)
    wrong = {}
    for i in range(len(line) + 1):
        for info in decode_both([line[:i]]):
            if isinstance(info, (BlobFileCreationInfo, BlobFileDeletionInfo)) and info.file_number != number:
                wrong[line[:i][-24:]] = info.file_number
    assert not wrong, f"cut lines delivered as other blob files: {wrong}"


@pytest.mark.parametrize("event", ["blob_file_creation", "blob_file_deletion", "flush_started", "compaction_finished"])
def test_every_bit_flip_of_a_real_event_line(real_log, event):
    """Every bit of every byte flipped, one at a time (thousands of variants, split at
    newlines as the follower would): never raises, both paths agree, no other kind of
    event appears, and the real line decodes right after all of them."""
    line = real_log.first(event)
    variants: list[bytes] = []
    for i in range(len(line)):
        for bit in range(8):
            m = bytearray(line)
            m[i] ^= 1 << bit
            variants.extend(as_follower_would(bytes(m)))
    assert len(variants) >= 8 * len(line)
    allowed = {TYPE_OF[event], LineSkippedInfo}
    for blob_only in (False, True):
        out = decode_both(variants, blob_only)
        assert {type(i) for i in out} <= allowed, {type(i).__name__ for i in out}
    d = LogDecoder("/db")
    seen = d.feed_lines(variants)
    after, fresh = d.feed_lines([line]), LogDecoder("/db").feed_lines([line])
    assert [type(i) for i in fresh] == [TYPE_OF[event]]
    if event in BLOB_EVENTS:
        # A variant that kept the file number (a flip elsewhere) already delivered this file:
        # the real line is then a repeat; either way the file's event is delivered once.
        n = number_of(line)
        before = [i for i in seen if isinstance(i, TYPE_OF[event]) and i.file_number == n and i.ok]
        if before:
            assert [i.reason for i in after] == ["repeated_event"] and len(before) == 1
        else:
            assert [type(i) for i in after] == [TYPE_OF[event]] and after[0].file_number == n
    else:
        assert [type(i) for i in after] == [TYPE_OF[event]]


# ---------------------------------------------------------------------------
# Wrong types for every field (property-based)
# ---------------------------------------------------------------------------

# Short values: the blob-only prefilter looks at the first 160 bytes of an event for its name.
HOSTILE = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2 ** 70), max_value=2 ** 63 - 1),  # larger: test_out_of_range_file_numbers
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(-3, 3), max_size=2),
)


def _uint(v: Any) -> int | None:
    return v if type(v) is int and v >= 0 else None


def _str(v: Any) -> str | None:
    return v if type(v) is str else None


def check_spec(event: str, f: dict[str, Any], out: list[Any], blob_only: bool) -> None:
    """What README promises for one event line whose fields are ``f``."""
    ev = f.get("event")
    if type(ev) is not str:
        # No event name: a counted malformed line (the blob-only prefilter may drop it unseen).
        assert len(out) <= 1 if blob_only else len(out) == 1
        assert all(isinstance(i, LineSkippedInfo) and i.reason == "malformed_line" for i in out), out
        return
    if ev != event:  # the hostile value replaced the name with another string
        assert all(not isinstance(i, (BlobFileCreationInfo, BlobFileDeletionInfo)) for i in out), out
        return
    if event in BLOB_EVENTS:
        n = _uint(f.get("file_number"))
        assert len(out) == 1, out
        (info,) = out
        if n is None:
            assert isinstance(info, LineSkippedInfo) and info.reason == "invalid_file_number", info
            return
        assert type(info) is TYPE_OF[event] and info.file_number == n
        assert info.file_path == "/db/%06d.blob" % n
        assert info.job_id == _uint(f.get("job")) and info.time_micros == _uint(f.get("time_micros"))
        status = _str(f.get("status")) or "OK"
        assert info.status == status
        if event == "blob_file_creation":
            assert info.cf_name == _str(f.get("cf_name"))
            assert info.total_blob_count == _uint(f.get("total_blob_count"))
            assert info.total_blob_bytes == _uint(f.get("total_blob_bytes"))
            assert info.file_checksum == _str(f.get("file_checksum"))
            assert info.file_checksum_func_name == _str(f.get("file_checksum_func_name"))
            assert info.reason == "unknown"  # no job start seen
        return
    if event in JOB_EVENTS:
        job = _uint(f.get("job"))
        started = event.endswith("_started")
        if job is None:
            if blob_only and not started:
                assert out == []  # the prefilter does not decode finished jobs for blob-only listeners
            else:
                assert len(out) == 1 and isinstance(out[0], LineSkippedInfo) and out[0].reason == "invalid_job_id", out
            return
        if blob_only:
            assert out == []
            return
        assert len(out) == 1 and type(out[0]) is TYPE_OF[event], out
        info = out[0]
        assert info.job_id == job and info.finished == (not started)
        assert info.time_micros == _uint(f.get("time_micros")) and info.cf_name == _str(f.get("cf_name"))
        if started:
            reason_key = "flush_reason" if event.startswith("flush") else "compaction_reason"
            assert info.reason == _str(f.get(reason_key))
        assert repr(info.details) == repr({k: v for k, v in f.items() if k not in ("time_micros", "job", "event", "cf_name")})
        return
    # table files
    if blob_only:
        assert out == []
        return
    n = _uint(f.get("file_number"))
    assert len(out) == 1, out
    if n is None:
        assert isinstance(out[0], LineSkippedInfo) and out[0].reason == "invalid_file_number"
    else:
        assert type(out[0]) is TYPE_OF[event] and out[0].file_number == n


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_wrong_types_for_every_field(real_log, data):
    """A real event line of every kind with one field (any field, incl. event, job,
    file_number) replaced by null, a bool, an int, a float incl. NaN/Infinity, a
    string, a list or an object -- or removed. Decoded both ways and in blob-only
    mode, the result is exactly what README promises."""
    event = data.draw(st.sampled_from(list(TYPE_OF)), label="event")
    f = real_log.payload(event)
    key = data.draw(st.sampled_from(sorted(f)), label="field")
    if data.draw(st.booleans(), label="remove"):
        del f[key]
    else:
        f[key] = data.draw(HOSTILE, label="value")
    line = real_log.prefix(event) + json.dumps(f, ensure_ascii=False, allow_nan=True).encode()
    for blob_only in (False, True):
        check_spec(event, f, decode_both([line], blob_only), blob_only)


NUMBERS = [
    # OTLP carries int64 attributes: a file number from 2**63 on could not be exported (RocksDB's never get there).
    ("0", 0), ("-0", 0), (str(2 ** 63 - 1), 2 ** 63 - 1), (str(2 ** 63), None), (str(2 ** 64 - 1), None),
    ("-1", None), ("1.0", None), ("-0.0", None), ("1e308", None), ("1e400", None), ("-1e400", None),
    ("NaN", None), ("Infinity", None), ("-Infinity", None), ('"12"', None), ("9" * 5000, None),
    ("-" + "9" * 5000, None), ("[12]", None), ('{"n": 12}', None), ("null", None), ("true", None),
    (str(2 ** 64), None), (str(10 ** 30), None),
]


@pytest.mark.parametrize("event", BLOB_EVENTS)
@pytest.mark.parametrize("literal, number", NUMBERS)
def test_out_of_range_file_numbers(real_log, event, literal, number):
    """file_number as raw JSON text (what json.dumps cannot write: NaN, Infinity, 1e400,
    5000-digit integers): a blob file number is a uint64, anything else a counted skip."""
    line = real_log.first(event)
    hostile = line.replace(b'"file_number": %d' % number_of(line), b'"file_number": ' + literal.encode())
    for blob_only in (False, True):
        out = decode_both([hostile], blob_only)
        assert len(out) == 1, out
        if number is None:
            assert isinstance(out[0], LineSkippedInfo) and out[0].reason == "invalid_file_number", out
        else:
            assert type(out[0]) is TYPE_OF[event] and out[0].file_number == number


# ---------------------------------------------------------------------------
# Invalid UTF-8, deep nesting, huge lines
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("event, field", [
    ("blob_file_creation", "cf_name"), ("blob_file_creation", "file_checksum"),
    ("blob_file_creation", "file_checksum_func_name"), ("blob_file_creation", "status"),
    ("blob_file_deletion", "status"),
])
@pytest.mark.parametrize("bad", [
    b"\xff\xfe", b"caf\xc3", b"\xc0\xaf", b"\x80" * 3, b"\xed\xa0\x80",
    b"\\ud800", b"x\\udfff",
])
def test_invalid_utf8_in_string_fields(real_log, event, field, bad):
    """Invalid UTF-8 (and a JSON-escaped lone surrogate) in each string field of a real
    blob line: the event is still delivered, for its own file, and every string in it is
    valid Unicode (an exporter can encode it)."""
    f = real_log.payload(event)
    f[field] = "@@"
    line = real_log.prefix(event) + json.dumps(f).encode().replace(b"@@", bad)
    for blob_only in (False, True):
        out = decode_both([line], blob_only)
        assert [type(i) for i in out] == [TYPE_OF[event]], out
        assert out[0].file_number == f["file_number"]
        for s in strings_of(out[0]):
            s.encode("utf-8")  # raises on a lone surrogate


def test_invalid_utf8_in_plain_text_lines(real_log):
    """Job and session lines with invalid bytes: decoded leniently, the job's blob file
    keeps its reason and column family, all strings are valid Unicode."""
    job_line = next(l for l in real_log.lines if b"[JOB " in l and b"] Flushing" in l)
    cf = re.search(rb"\] \[([^\]]*)\] \[JOB", job_line).group(1)
    job = int(re.search(rb"\[JOB (\d+)\]", job_line).group(1))
    started = next(l for l in real_log.events["flush_started"] if b'"job": %d,' % job in l)
    created = next(l for l in real_log.events["blob_file_creation"] if b'"job": %d,' % job in l).replace(
        b'"cf_name": "%s", ' % cf, b"")
    session = next(l for l in real_log.lines if b"DB Session ID:" in l)
    lines = [session.replace(b"ID:  ", b"ID:  \xff\xfe"), job_line.replace(b"[%s]" % cf, b"[caf\xe9\xff]"),
             started, created]
    for blob_only in (False, True):
        out = [i for i in decode_both(lines, blob_only) if isinstance(i, BlobFileCreationInfo)]
        assert len(out) == 1 and out[0].reason == "flush" and out[0].cf_name.startswith("caf")
        for s in strings_of(out[0]):
            s.encode("utf-8")


def _nest(depth: int, kind: str) -> bytes:
    return (b"[" * depth + b"]" * depth) if kind == "list" else (b'{"a": ' * depth + b"1" + b"}" * depth)


@pytest.mark.parametrize("kind", ["list", "object"])
@pytest.mark.parametrize("depth", [900, 100_000])
def test_deeply_nested_json(real_log, kind, depth):
    """Nesting below and far beyond the recursion limit: appended to a blob creation (still
    delivered, its own file), as its file_number (a counted skip), and as a compaction's
    lsm_state (the job event still delivered, its id intact)."""
    nest = _nest(depth, kind)
    create = real_log.first("blob_file_creation")
    number = number_of(create)
    extra = create[:-1] + b', "x": ' + nest + b"}"
    as_number = create.replace(b'"file_number": %d' % number, b'"file_number": ' + nest)
    comp = real_log.first("compaction_finished")
    job = real_log.payload("compaction_finished")["job"]
    comp_nested = re.sub(rb'"lsm_state": \[[^\]]*\]', lambda m: b'"lsm_state": ' + nest, comp)
    assert comp_nested != comp
    for blob_only in (False, True):
        out = decode_both([extra, as_number, comp_nested], blob_only)
        assert isinstance(out[0], BlobFileCreationInfo) and out[0].file_number == number, out[0]
        assert isinstance(out[1], LineSkippedInfo) and out[1].reason == "invalid_file_number"
        if blob_only:
            assert len(out) == 2
        else:
            assert len(out) == 3 and isinstance(out[2], CompactionJobInfo) and out[2].job_id == job and out[2].finished


def _traced(fn) -> tuple[Any, int, int]:
    """(result of fn(), peak bytes above the start, bytes still held once the result is dropped)."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
        summary = repr(result)[:200]
        del result
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return summary, peak, held


TEN_MB = 10 << 20


def test_ten_megabyte_lines_parse_in_bounded_memory(real_log):
    """A 10 MB line without an event mark, a 10 MB event (a valid JSON object with a 10 MB
    string), and one the blob-only prefilter rejects: parsed in a bounded multiple of the
    line's size, nothing kept afterwards."""
    prefix = real_log.prefix("compaction_finished")
    plain = b"2026/11/26-14:11:25.707298 1 " + b"x" * TEN_MB
    event = prefix + b'{"time_micros": 1, "job": 3, "event": "compaction_finished", "pad": "' + b"a" * TEN_MB + b'"}'
    cases = [
        ("plain", lambda: parse_line(plain), 1 << 20),
        ("event", lambda: parse_line(event), 4 * TEN_MB),
        ("event, batch", lambda: LogDecoder("/db").feed_lines([event]), 4 * TEN_MB),
        ("event, blob-only batch", lambda: LogDecoder("/db", blob_only=True).feed_lines([event]), 2 * TEN_MB),
    ]
    for name, fn, bound in cases:
        summary, peak, held = _traced(fn)
        assert peak < bound, f"{name}: peak {peak / 2**20:.1f} MiB (bound {bound / 2**20:.0f} MiB)"
        assert held < 256 << 10, f"{name}: {held} bytes still held after the result was dropped"
    assert parse_line(plain) is None
    assert parse_line(event).fields["pad"] == "a" * TEN_MB


def test_unterminated_string_in_a_capped_line_is_cheap(real_log):
    """A hostile event line of 1 MiB (the follower's line cap) whose last string never
    ends: salvaging its leading fields must not cost a multiple of 16 of its size."""
    line = real_log.first("blob_file_creation")[:-1] + b', "pad": "' + b"a" * (1 << 20)
    summary, peak, held = _traced(lambda: parse_line(line))
    assert "blob_file_creation" in summary
    assert peak < 16 << 20, f"peak {peak / 2**20:.0f} MiB for a 1 MiB line"


def test_ten_megabyte_lines_through_a_watch(real_log, db_copy):
    """Through a real watch of a DB directory: a 10 MB line without a newline (RocksDB or
    a tool still writing), then its newline and a valid blob event, then a 10 MB line with
    its newline and another event in one write. Each long line is one counted skip
    (line_too_long), the events after them arrive, the follower's memory stays bounded
    by its line cap (it never holds the 10 MB), and nothing is kept afterwards."""
    rec = Recorder()
    expected = log_scan(db_copy)
    rss = PeakRss().__enter__()
    w = otel_blob.watch(db_copy, rec, from_start=True, loop=None)
    w.drain()
    real = len(rec.created)
    assert real == len(real_log.events["blob_file_creation"])
    append_log(db_copy, b"2026/11/26-14:11:25.707298 1 EVENT_LOG_v1 {\"pad\": \"" + b"a" * TEN_MB)
    _s, peak, _h = _traced(w.drain)
    peaks = [peak]
    assert w.stats.skipped["line_too_long"] == 1
    assert peak < 8 << 20, f"reading a 10 MB line peaked at {peak / 2**20:.1f} MiB"
    append_log(db_copy, b'"}\n' + creation_line(real_log, 990001) + b"\n")
    w.drain()
    assert [e.file_number for e in rec.created[real:]] == [990001]
    assert w.stats.skipped["line_too_long"] == 1, "the end of the long line was counted again"
    append_log(db_copy, b"x" * TEN_MB + b"\n" + creation_line(real_log, 990002) + b"\n")
    _s, peak, _h = _traced(w.drain)
    peaks.append(peak)
    assert peak < 8 << 20, f"reading a 10 MB line peaked at {peak / 2**20:.1f} MiB"
    _s, _p, held = _traced(w.stop)
    rss.__exit__(None, None, None)
    expected += log_scan(db_copy) - expected  # the two valid events written after the long lines
    record(account("hostile input: 10 MB lines (with and without newline) in a real LOG, path watch",
                   "test_hostile_input.py::test_ten_megabyte_lines_through_a_watch", expected,
                   events_from_recorder(rec.events), peak_rss_kb=rss.kb, skipped=dict(w.stats.skipped),
                   tracemalloc_peak_kb=[p >> 10 for p in peaks], held_after_stop_bytes=held))
    assert [e.file_number for e in rec.created[real:]] == [990001, 990002]
    assert w.stats.skipped == {"line_too_long": 2}
    assert [s.reason for s in rec.skipped] == ["line_too_long"] * 2
    assert held < 1 << 20


# ---------------------------------------------------------------------------
# All of it in one LOG, through a real watch
# ---------------------------------------------------------------------------

def hostile_corpus(real_log: RealLog) -> list[bytes]:
    """Raw bytes (each ends with a newline) of every kind of garbage above, in one list."""
    out: list[bytes] = []
    for event in TYPE_OF:
        line = real_log.first(event)
        out += [line[:i] + b"\n" for i in range(0, len(line), 7)]
    line = real_log.first("blob_file_deletion")
    for i in range(len(line)):
        m = bytearray(line)
        m[i] ^= 0x04
        out.append(bytes(m) + b"\n")
    create = real_log.first("blob_file_creation")
    n = number_of(create)
    for literal in (b"-1", b"1e308", b"NaN", b"Infinity", b"9" * 5000, b'"7"', b"null", b"[1]", b"{}", b"true"):
        out.append(create.replace(b'"file_number": %d' % n, b'"file_number": ' + literal) + b"\n")
    for key in ("job", "time_micros", "cf_name", "total_blob_count", "total_blob_bytes", "file_checksum", "status"):
        for value in (None, True, [1], {"a": 1}, "x", -5, 1.5):
            f = real_log.payload("blob_file_creation")
            f[key] = value
            f["file_number"] = 880000 + len(out)
            out.append(real_log.prefix("blob_file_creation") + json.dumps(f).encode() + b"\n")
    for event in JOB_EVENTS:
        for value in (None, "2", [2], -1):
            f = real_log.payload(event)
            f["job"] = value
            out.append(real_log.prefix(event) + json.dumps(f).encode() + b"\n")
    out.append(create[:-1] + b', "x": ' + _nest(100_000, "list") + b"}\n")
    out.append(b"\xff\xfe\x00\x01 garbage " + MARK + b"\xc3\x28{\n")
    out.append(MARK + b"[1, 2]\n" + MARK + b"\n" + MARK + b"{}\n" + MARK + b'{"event": 5}\n')
    out.append(b"2026/11/26-14:11:25.707298 1 " + b"y" * (3 << 20) + b"\n")  # over the 1 MiB cap
    return out


def test_watch_delivers_the_valid_event_after_all_the_garbage(real_log, db_copy):
    """Every kind of garbage appended to a real LOG, then a valid creation and deletion.
    A real watch of the DB directory (replay from the start): nothing raises, the events
    are exactly what the decoder makes of the same lines, every skip is counted and
    reported, and the valid events at the end arrive."""
    garbage = hostile_corpus(real_log)
    tail = creation_line(real_log, 990001) + b"\n" + deletion_line(real_log, 990001) + b"\n"
    real_events = log_scan(db_copy)
    append_log(db_copy, b"".join(garbage) + tail)
    rec = Recorder()
    with PeakRss() as rss:
        w = otel_blob.watch(db_copy, rec, from_start=True, loop=None)
        w.stop()
    # Expected: the real events, the corpus's creations with a faulty secondary field
    # (delivered by design: numbers 880000+), the valid tail.
    for line in garbage:
        m = re.search(rb'"file_number": (88\d{4})', line)
        if m:
            real_events[("created", os.path.abspath(db_copy), int(m.group(1)))] += 1
    real_events[("created", os.path.abspath(db_copy), 990001)] += 1
    real_events[("deleted", os.path.abspath(db_copy), 990001)] += 1
    record(account(f"hostile input: {len(garbage)} garbage lines between real events and a valid tail, path watch",
                   "test_hostile_input.py::test_watch_delivers_the_valid_event_after_all_the_garbage",
                   real_events, events_from_recorder(rec.events), reported_lost=0, peak_rss_kb=rss.kb,
                   skipped_total=w.stats.skipped_total, skipped=dict(w.stats.skipped),
                   note="cut copies of real lines salvaged as their events are counted repeats, not duplicates; "
                        "unexpected: cut inside a file_number (a decoder bug)"))
    # The decoder's view of the same lines (the follower drops lines over its 1 MiB cap).
    with open(os.path.join(db_copy, "LOG"), "rb") as f:
        lines = f.read().split(b"\n")[:-1]
    kept = [l for l in lines if len(l) <= 1 << 20]
    expected = [i for i in LogDecoder(db_copy).feed_lines(kept) if not isinstance(i, (LineSkippedInfo, SessionInfo))]
    got = [e for e in rec.events if not isinstance(e, LineSkippedInfo)]
    key = lambda i: (type(i).__name__, getattr(i, "file_number", None), getattr(i, "job_id", None),  # noqa: E731
                     getattr(i, "status", None))
    assert [key(i) for i in got] == [key(i) for i in expected]
    assert rec.created[-1].file_number == 990001 and rec.deleted[-1].file_number == 990001
    assert rec.deleted[-1].ok and rec.deleted[-1].created_micros == rec.created[-1].time_micros
    decoder_skips = [i.reason for i in LogDecoder(db_copy).feed_lines(kept) if isinstance(i, LineSkippedInfo)]
    assert w.stats.skipped_total == len(rec.skipped) == len(decoder_skips) + len(lines) - len(kept)
    assert w.stats.skipped["line_too_long"] == len(lines) - len(kept) >= 1
    assert w.stats.skipped["invalid_file_number"] >= 10 and w.stats.skipped["malformed_line"] >= 3
    assert w.stats.listener_errors == 0


def _batch_logger_provider(receiver):
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    lp = LoggerProvider(shutdown_on_exit=False)
    lp.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=receiver.grpc_endpoint, insecure=True)))
    return lp


def _export_case(real_log: RealLog, case: str) -> list[bytes]:
    create = real_log.first("blob_file_creation")
    n = number_of(create)
    if case == "corpus":
        return hostile_corpus(real_log)
    if case == "surrogate cf_name":
        return [create.replace(b'"cf_name": "default"', b'"cf_name": "\\ud800"').replace(
            b'"file_number": %d' % n, b'"file_number": 990007') + b"\n"]
    if case == "time_micros beyond uint64 ns":
        return [re.sub(rb'"time_micros": \d+', b'"time_micros": %d' % (2 ** 64), create).replace(
            b'"file_number": %d' % n, b'"file_number": 990007') + b"\n"]
    if case == "file_number 2**64":
        return [create.replace(b'"file_number": %d' % n, b'"file_number": %d' % 2 ** 64) + b"\n"]
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "corpus",
    "surrogate cf_name", "time_micros beyond uint64 ns", "file_number 2**64",
])
def test_garbage_does_not_break_the_otlp_export(real_log, db_copy, otlp_receiver, caplog, case):
    """The same, exported: TelemetryListener -> the SDK's BatchLogRecordProcessor -> the
    OTLP/gRPC exporter -> a receiver decoding the protobuf. Every blob event the watch
    delivered is exported (one bad record must not sink its batch), the valid event after
    the garbage arrives, and neither the SDK nor its exporter logs an error."""
    from otel_blob.telemetry import TelemetryListener

    append_log(db_copy, b"".join(_export_case(real_log, case)) + creation_line(real_log, 990001) + b"\n")
    rec = Recorder()
    lp = _batch_logger_provider(otlp_receiver)
    caplog.set_level("WARNING", logger="opentelemetry")
    try:
        w = otel_blob.watch(db_copy, [rec, TelemetryListener(logger_provider=lp)], from_start=True, loop=None)
        w.stop()
        assert lp.force_flush(30_000)
    finally:
        lp.shutdown()
    records = [r for r in otlp_receiver.log_records()
               if r["event_name"] in ("rocksdb.blob_file.created", "rocksdb.blob_file.deleted")]
    exported = sorted(r["attributes"].get("rocksdb.blob_file.number", -1) for r in records)
    delivered = sorted(e.file_number for e in rec.created + rec.deleted)
    assert 990001 in exported, "the valid event after the garbage was not exported"
    assert exported == delivered, "the exported blob file numbers are not the delivered ones (-1: attribute dropped)"
    errors = [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry") and r.levelno >= 40]
    assert not errors, errors[:3]


# ---------------------------------------------------------------------------
# A LOG without read permission (as a real non-root process)
# ---------------------------------------------------------------------------

UNREADABLE_APP = textwrap.dedent(
    """
    import json, os, sys
    import otel_blob, otel_blob.watching, otel_blob.source, otel_blob.decode
    db, uid = sys.argv[1], int(sys.argv[2])
    if os.geteuid() == 0:
        # Everything is imported: become a user file modes apply to.
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    log = os.path.join(db, "LOG")
    assert not os.access(log, os.R_OK), "the LOG is readable: the test proves nothing"
    seen = []

    class Rec(otel_blob.EventListener):
        def on_line_skipped(self, info):
            seen.append(["skipped", info.reason, info.detail])

        def on_blob_file_created(self, info):
            seen.append(["created", info.file_number])

    w = otel_blob.watch(db, Rec(), from_start=True, loop=None)
    for _ in range(5):
        w.drain()
    print(json.dumps(["before", dict(w.stats.skipped), seen]), flush=True)
    sys.stdin.readline()          # the test gives read permission back
    w.stop()
    print(json.dumps(["after", dict(w.stats.skipped), seen]), flush=True)
    """
)


@pytest.fixture
def shared_dir():
    """A directory another user can enter (pytest's base temp is private to its user)."""
    import tempfile

    d = tempfile.mkdtemp(prefix="otel-blob-hostile-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_log_without_read_permission_is_one_clear_counted_problem(real_log, shared_dir):
    """A LOG a (non-root) watcher may not read: one log_unreadable skip naming the file
    and 'permission denied' -- not one per poll, no exception -- and once the permission
    is given back, the LOG is followed from its start. Root bypasses file modes: the
    watcher then runs as user nobody (setuid after its imports)."""
    uid = 65534 if os.geteuid() == 0 else os.geteuid()
    base = shared_dir
    db = os.path.join(base, "db")
    shutil.copytree(real_log.db, db)
    os.chmod(db, 0o755)
    for name in os.listdir(db):
        os.chmod(os.path.join(db, name), 0o644)
    log = os.path.join(db, "LOG")
    os.chmod(log, 0)
    if os.geteuid() != 0 and os.access(log, os.R_OK):
        pytest.skip("this user reads files whatever their mode")
    script = os.path.join(base, "app.py")
    with open(script, "w") as f:
        f.write(UNREADABLE_APP)
    os.chmod(script, 0o644)
    p = subprocess.Popen([sys.executable, script, db, str(uid)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=base)
    try:
        first = p.stdout.readline()
        if not first:
            err = p.stderr.read()
            if "PermissionError" in err or "Operation not permitted" in err:
                pytest.skip(f"cannot run a watcher as a user that file modes apply to: {err.strip()[-200:]}")
            pytest.fail(err)
        phase, skipped, seen = json.loads(first)
        assert skipped == {"log_unreadable": 1}, skipped
        assert seen == [["skipped", "log_unreadable", f"{log}: permission denied"]]
        os.chmod(log, 0o644)
        out, err = p.communicate("go\n", timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0 and "Traceback" not in err, err
    phase, skipped, seen = json.loads(out.strip().splitlines()[-1])
    assert skipped == {"log_unreadable": 1}
    created = [s[1] for s in seen if s[0] == "created"]
    assert created == [number_of(l) for l in real_log.events["blob_file_creation"]]


# ---------------------------------------------------------------------------
# LOG files that come and go: the follower
# ---------------------------------------------------------------------------

def roll(db: str, when: int) -> str:
    """What RocksDB does at a roll: rename LOG to LOG.old.<when>; returns the new name.
    The new LOG is written by the caller (it may not exist yet)."""
    old = os.path.join(db, f"LOG.old.{when}")
    os.rename(os.path.join(db, "LOG"), old)
    return old


def new_log(db: str, real_log: RealLog, *numbers: int, tag: int) -> None:
    """A new live LOG: a real header (its own first line) and one creation per number."""
    header = [re.sub(rb"^\d{4}/\d\d/\d\d-\d\d:\d\d:\d\d\.\d{6}", b"2026/11/26-15:00:00.%06d" % tag, real_log.lines[0])]
    header += [line for line in real_log.lines[1:40] if MARK not in line]
    body = [creation_line(real_log, n) for n in numbers]
    with open(os.path.join(db, "LOG"), "wb") as f:
        f.write(b"\n".join(header + body) + b"\n")


def roll_to_new_log(db: str, real_log: RealLog, when: int, number: int, tag: int) -> str:
    """A roll, then a new LOG with one creation (``number``); returns the rolled file's name."""
    old = roll(db, when)
    new_log(db, real_log, number, tag=tag)
    return old


def open_rolled_fds(db: str) -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(os.path.join(db, "LOG.old.")):
            n += 1
    return n


def test_no_log_missing_between_rename_and_new_log(real_log, db_copy):
    """RocksDB renames LOG before it creates the new one. Polls in that instant see no
    live LOG: that is not reported (the follower waits missing_grace, here made long so
    the test does not depend on timing); the new LOG's events arrive."""
    rec = Recorder()
    w = otel_blob.watch(db_copy, rec, from_start=True, loop=None)
    w.follower.missing_grace = 3600.0
    w.drain()
    before = len(rec.created)
    roll(db_copy, 1795702285000001)
    for _ in range(5):
        w.drain()
    new_log(db_copy, real_log, 990011, tag=1)
    w.drain()
    w.stop()
    assert w.stats.skipped_total == 0, w.stats.skipped
    assert [e.file_number for e in rec.created[before:]] == [990011]


def test_log_missing_is_reported_once_per_episode(real_log, db_copy, caplog):
    """A LOG that stays missing (beyond missing_grace, here 0, over two polls) is one
    log_missing -- not one per poll; when it is back it is followed; missing again is a
    new report. stop() (final) reports a missing LOG at once."""
    rec = Recorder()
    w = otel_blob.watch(db_copy, rec, from_start=True, loop=None)
    w.follower.missing_grace = 0.0
    w.drain()
    roll(db_copy, 1795702285000001)
    w.drain()
    assert w.stats.skipped["log_missing"] == 0, "reported after one poll"
    for _ in range(5):
        w.drain()
    assert w.stats.skipped["log_missing"] == 1
    assert "does not exist" in rec.skipped[-1].detail and rec.skipped[-1].detail.startswith(os.path.join(db_copy, "LOG"))
    new_log(db_copy, real_log, 990021, tag=2)
    w.drain()
    assert rec.created[-1].file_number == 990021
    roll(db_copy, 1795702285000002)
    w.follower.missing_grace = 3600.0
    w.drain()
    w.stop()  # final: the writer is done, a missing LOG is missing
    assert w.stats.skipped["log_missing"] == 2
    assert w.stats.skipped_total == 2


def test_a_line_written_to_a_just_renamed_log_is_read(real_log, db_copy):
    """An old logger may flush a last line into the file after RocksDB renamed it: the
    renamed file stays open until it settles (settle made long here), so the line arrives."""
    rec = Recorder()
    w = otel_blob.watch(db_copy, rec, from_start=True, loop=None)
    w.follower.settle = 3600.0
    w.drain()
    old = roll(db_copy, 1795702285000001)
    new_log(db_copy, real_log, 990031, tag=3)
    w.drain()
    w.drain()
    with open(old, "ab") as f:
        f.write(creation_line(real_log, 990032) + b"\n")
    w.drain()
    w.stop()
    assert [e.file_number for e in rec.created][-2:] == [990031, 990032]
    assert w.stats.skipped_total == 0


def test_rolled_files_are_closed_once_read_and_settled(real_log, db_copy):
    """A LOG rolled 200 times: each renamed file, once read to its end on two polls and
    settled, is closed (no descriptor left on a LOG.old.* file) -- and with a settle time
    that never passes, at most max_retired_open fully read ones stay open. Every event of
    every file arrives exactly once."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to count descriptors")
    rec = Recorder()
    w = otel_blob.watch(db_copy, rec, from_start=True, loop=None)
    w.follower.settle = 0.0
    w.drain()
    real = len(rec.created)
    numbers = []
    for i in range(100):
        numbers.append(991000 + i)
        roll_to_new_log(db_copy, real_log, 1795702286000000 + i, numbers[-1], tag=100 + i)
        w.drain()
    w.drain()
    w.drain()
    assert open_rolled_fds(db_copy) == 0
    w.follower.settle = 3600.0
    w.follower.max_retired_open = 5
    for i in range(100, 200):
        numbers.append(991000 + i)
        roll_to_new_log(db_copy, real_log, 1795702286000000 + i, numbers[-1], tag=100 + i)
        if i % 10 == 0:
            w.drain()
    w.drain()
    w.drain()
    assert open_rolled_fds(db_copy) <= 5
    w.stop()
    assert open_rolled_fds(db_copy) == 0
    assert [e.file_number for e in rec.created[real:]] == numbers
    assert w.stats.skipped_total == 0, w.stats.skipped


def test_rolled_files_deleted_by_rocksdb_free_their_inodes_safely(real_log, db_copy):
    """Rolled files deleted after they were read (keep_log_file_num) free their inodes;
    the file system hands them to new LOG files. A new file on a reused inode is read
    (its first line differs), not mistaken for the finished one."""
    rec = Recorder()
    w = otel_blob.watch(db_copy, rec, from_start=True, loop=None)
    w.follower.settle = 0.0
    w.drain()
    real = len(rec.created)
    numbers = []
    for i in range(60):
        numbers.append(992000 + i)
        old = roll_to_new_log(db_copy, real_log, 1795702287000000 + i, numbers[-1], tag=300 + i)
        w.drain()
        w.drain()
        os.unlink(old)  # trimmed: its inode is free for the next LOG
    w.stop()
    assert [e.file_number for e in rec.created[real:]] == numbers
    assert w.stats.skipped_total == 0, w.stats.skipped

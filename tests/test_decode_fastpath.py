"""feed_lines' batch scan (_BATCH_RE): RocksDB's exact blob lines go from the regex
straight to Info values, everything else through parse_line's path. Both must give
exactly what parse_line + feed gives, line by line, around every edge of the exact
shapes (the blob_only prefilter's window, non-ASCII, escapes, number forms) and of
the batch (plain-text lines between events, batch boundaries, several marks).
"""

from __future__ import annotations

from typing import Any

import pytest

from otel_blob.decode.rules import BATCH_EVENT_RE as _BATCH_RE
from otel_blob.decode import (
    BlobFileCreationInfo,
    BlobFileDeletionInfo,
    LineSkippedInfo,
    LogDecoder,
    parse_line,
)

PREFIX = b"2026/11/26-14:23:52.052726 140636688737984 "
T = 1795703032052722


def event(payload: bytes) -> bytes:
    return PREFIX + b"EVENT_LOG_v1 " + payload


def creation(number: int = 10, cf: bytes = b"default", job: int = 2, status: bytes = b"OK",
             micros: bytes | None = None) -> bytes:
    return event(b'{"time_micros": %s, "cf_name": "%s", "job": %d, "event": "blob_file_creation", '
                 b'"file_number": %d, "total_blob_count": 62, "total_blob_bytes": 65968, "file_checksum": "", '
                 b'"file_checksum_func_name": "Unknown", "status": "%s"}'
                 % (micros or b"%d" % T, cf, job, number, status))


def deletion(number: int = 10, job: int = 11, status: bytes | None = None, number_text: bytes | None = None) -> bytes:
    tail = b"" if status is None else b', "status": "%s"' % status
    return event(b'{"time_micros": %d, "job": %d, "event": "blob_file_deletion", "file_number": %s%s}'
                 % (T + number, job, number_text or b"%d" % number, tail))


SESSION = PREFIX + b"DB Session ID:  CN2K9U8BJ56CTTJF3UYO"
SESSION2 = PREFIX + b"DB Session ID:  SECONDSESSION0000000"
DB_PATH = PREFIX + b"[db/db_impl/db_impl_open.cc:1] SST files in /db dir, Total Num: 0, files: "
FLUSH_TEXT = PREFIX + b"[db/flush_job.cc:901] [hot] [JOB 2] Flushing memtable with next log file: 8"
FLUSH_STARTED = event(b'{"time_micros": 1795703032050000, "job": 2, "event": "flush_started", "num_memtables": 1, '
                      b'"flush_reason": "Manual Flush"}')
FLUSH_FINISHED = event(b'{"time_micros": 1795703032060000, "job": 2, "event": "flush_finished", "lsm_state": [1, 0]}')
TABLE = event(b'{"time_micros": 1795703032055000, "cf_name": "default", "job": 2, "event": "table_file_creation", '
              b'"file_number": 9, "file_size": 1000}')


def line_by_line(lines: list[bytes], blob_only: bool, **kw: Any) -> tuple[list[Any], LogDecoder]:
    d = LogDecoder("/db", blob_only=blob_only, **kw)
    out = [i for line in lines if (p := parse_line(line, d.wanted)) for i in d.feed(p)]
    return out, d


def check(lines: list[bytes], **kw: Any) -> list[Any]:
    """Both paths, both modes, the batch cut at every line: the same Info values and state."""
    for blob_only in (False, True):
        want, slow = line_by_line(lines, blob_only, **kw)
        for cut in range(len(lines) + 1):
            fast = LogDecoder("/db", blob_only=blob_only, **kw)
            got = fast.feed_lines(lines[:cut]) + fast.feed_lines(lines[cut:])
            assert repr(got) == repr(want) and got == want, (blob_only, cut)
            assert fast.state() == slow.state()
    return line_by_line(lines, False, **kw)[0]


def test_real_shapes_take_the_fast_path():
    for line in (creation(), deletion(), deletion(status=b"IO error: No such file or directory")):
        (groups,) = _BATCH_RE.findall(line)
        assert groups[0] and not groups[-1], line  # the blob groups, not the payload fallback
    (groups,) = _BATCH_RE.findall(FLUSH_STARTED)
    assert not groups[0] and groups[-1].startswith(b'{"time_micros"')


def test_a_mixed_batch_with_plain_text_lines_between_events():
    lines = [
        SESSION, DB_PATH, b"noise", FLUSH_TEXT, FLUSH_STARTED, creation(10, b"hot"), TABLE, creation(11, b"hot"),
        FLUSH_FINISHED, deletion(10), deletion(11, status=b"IO error: gone"), deletion(12), b"",
        SESSION2, creation(14, job=2), deletion(11), deletion(14, status=b""), creation(13, status=b"Corruption: x"),
        deletion(13), creation(14, job=2), deletion(14),
    ]
    out = check(lines, file_size=len, blob_dir=lambda cf: f"/blobs/{cf}")
    blob = [i for i in out if isinstance(i, (BlobFileCreationInfo, BlobFileDeletionInfo))]
    assert [type(i).__name__[8] + str(i.file_number) for i in blob] == \
        ["C10", "C11", "D10", "D11", "D12", "C14", "D11", "D14", "C13", "D13"]
    # A file number is one file in a session: a creation or deletion seen again is a counted repeat.
    assert [i.detail.split(" was")[0] for i in out if isinstance(i, LineSkippedInfo)] == \
        ["blob_file_creation of file 14", "blob_file_deletion of file 14"]
    assert blob[0].reason == "flush" and blob[0].file_path == "/blobs/hot/000010.blob"
    assert blob[2].cf_name == "hot" and blob[2].file_size == len("/blobs/hot/000010.blob")
    assert blob[5].session_id == "SECONDSESSION0000000" and blob[5].reason == "unknown"  # jobs forgotten
    assert blob[6].status == "OK" and blob[6].cf_name == "hot"  # the failed deletion kept it alive


@pytest.mark.parametrize("n", [0, 1, 49, 50, 51, 52, 53, 54, 55, 60, 120])
def test_cf_name_lengths_around_the_prefilter_window(n):
    # The event name must stay within blob_only's 160-byte window for the fast path to take
    # a line: with 18-digit time and job, a cf name of 53 bytes still fits, 54 does not.
    big = 10**17 + 1
    check([creation(10, b"c" * n), creation(11, b"c" * n, job=big, micros=b"%d" % big), deletion(10)])


@pytest.mark.parametrize("cf", ["d\u00e9faut", "\u30c7\u30d5\u30a9\u30eb\u30c8"])
def test_non_ascii_cf_name(cf):
    check([creation(10, cf.encode()), deletion(10)])


@pytest.mark.parametrize("raw", [b"d\xe9faut", b"\xed\xa0\x80", b"\xff"])
def test_invalid_utf8(raw):
    check([creation(10, raw), deletion(10, status=b"IO error " + raw), creation(11, status=raw)])


@pytest.mark.parametrize("status", [rb"IO error: \"quoted\"", rb"a\\b", rb"\u00e9", b"tab\there", b"\x7f"])
def test_strings_json_must_unescape(status):
    check([creation(10, status=status), deletion(10, status=status), deletion(11, status=status)])


@pytest.mark.parametrize("text", [b"0", b"007", b"-1", b"1.0", b"1e3", b"999999999999999999",
                                  b"1000000000000000000", b"9223372036854775808", b"true", b'"12"'])
def test_file_number_forms(text):
    check([creation(5), deletion(5, number_text=text), creation(6, micros=text)])


def test_shapes_rocksdb_does_not_write_go_the_json_path():
    lines = [
        creation(10).replace(b', "status": "OK"}', b"}"),  # creation without status
        creation(11).replace(b'"status": "OK"', b'"status": "OK", "extra": 1'),
        deletion(10).replace(b'"job"', b'"cf_name": "default", "job"'),  # deletion with a cf
        deletion(11).replace(b"}", b', "total_blob_count": 1}'),
        deletion(12).replace(b'"job": 11', b'"job":11'),
        deletion(13) + b"\r",
        deletion(14) + b" ",
        creation(15)[:-1],  # cut short
        deletion(16).replace(b"deletion", b"deletions"),
    ]
    check(lines)


def test_several_marks_and_marks_in_plain_text_lines():
    lines = [
        deletion(10) + b" EVENT_LOG_v1 " + deletion(11)[len(PREFIX) + 13:],
        PREFIX + b"EVENT_LOG_v1 EVENT_LOG_v1 " + deletion(12)[len(PREFIX) + 13:],
        FLUSH_TEXT + b" EVENT_LOG_v1 " + creation(13)[len(PREFIX) + 13:],  # an event line, not a job line
        SESSION + b" " + deletion(14),
        PREFIX + b"EVENT_LOG_v1 ",
        b"EVENT_LOG_v1 " + creation(15)[len(PREFIX) + 13:],
        creation(16),
    ]
    check(lines)


def test_a_callers_prefilter_sees_every_event_line():
    seen: list[bytes] = []

    def wanted(payload: bytes) -> bool:
        seen.append(payload)
        return b"deletion" in payload

    lines = [creation(10), FLUSH_STARTED, deletion(10), b"noise", deletion(11)]
    d = LogDecoder("/db")
    d.wanted = wanted
    out = d.feed_lines(lines)
    assert len(seen) == 4 and [type(i) for i in out] == [BlobFileDeletionInfo] * 2


def test_file_size_and_blob_dir_see_each_creation():
    paths: list[str] = []
    dirs: list[Any] = []

    def blob_dir(cf: str | None) -> str:
        dirs.append(cf)
        return f"/b/{cf}"

    d = LogDecoder("/db", file_size=lambda p: paths.append(p) or 7, blob_dir=blob_dir)
    out = d.feed_lines([creation(10, b"a"), creation(1234567, b"b"), deletion(10), deletion(99)])
    assert paths == ["/b/a/000010.blob", "/b/b/1234567.blob"]
    assert [i.file_path for i in out] == paths + ["/b/a/000010.blob", "/b/None/000099.blob"]
    assert set(dirs) == {"a", "b", None}

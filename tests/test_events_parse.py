"""parse_line and LogDecoder: pure, total, and faithful to RocksDB's lines."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from otel_blob.decode import BlobFileCreationInfo, FlushJobInfo, LogDecoder, SessionInfo, parse_line

# Real lines, as RocksDB 9.8.4 (rocksdict 0.3.29) wrote them.
SESSION = b"2026/11/26-14:11:25.698669 140189204855680 DB Session ID:  CN2K9U8BJ56CTTJF3UYO"
DBPATH = b"2026/11/26-14:11:25.698695 140189204855680 SST files in /tmp/pdb dir, Total Num: 0, files: "
JOBTEXT = b"2026/11/26-14:11:25.705787 140189171181248 [db/flush_job.cc:901] [default] [JOB 2] Flushing memtable with next log file: 8"
FLUSH_STARTED = (b'2026/11/26-14:11:25.705811 140189171181248 EVENT_LOG_v1 {"time_micros": 1795702285705807, "job": 2, '
                 b'"event": "flush_started", "num_memtables": 1, "num_entries": 200, "num_deletes": 0, '
                 b'"total_data_size": 202890, "memory_usage": 206632, "num_range_deletes": 0, "flush_reason": "Manual Flush"}')
CREATION = (b'2026/11/26-14:11:25.707298 140189171181248 EVENT_LOG_v1 {"time_micros": 1795702285707294, "cf_name": "default", '
            b'"job": 2, "event": "blob_file_creation", "file_number": 10, "total_blob_count": 64, "total_blob_bytes": 66294, '
            b'"file_checksum": "", "file_checksum_func_name": "Unknown", "status": "OK"}')
FLUSH_FINISHED = (b'2026/11/26-14:11:25.709331 140189171181248 (Original Log Time 2026/11/26-14:11:25.709279) EVENT_LOG_v1 '
                  b'{"time_micros": 1795702285709276, "job": 2, "event": "flush_finished", "output_compression": "Snappy", '
                  b'"lsm_state": [1, 0, 0, 0, 0, 0, 0], "blob_file_head": 10, "blob_file_tail": 13, "immutable_memtables": 0}')
DELETION = b'2026/11/26-14:11:25.716280 140189171181248 EVENT_LOG_v1 {"time_micros": 1795702285716279, "job": 4, "event": "blob_file_deletion", "file_number": 10}'
REAL = [SESSION, DBPATH, JOBTEXT, FLUSH_STARTED, CREATION, FLUSH_FINISHED, DELETION]


def decode(lines, **kw):
    d = LogDecoder("/tmp/pdb", **kw)
    out = []
    for line in lines:
        p = parse_line(line, d.wanted)
        if p is not None:
            out.extend(d.feed(p))
    return d, out


def test_real_lines_decode_to_typed_events():
    d, out = decode(REAL, file_size=lambda p: 66410)
    session, begin, created, finished, deleted = out
    assert isinstance(session, SessionInfo) and session.session_id == "CN2K9U8BJ56CTTJF3UYO" and not session.ended
    assert isinstance(begin, FlushJobInfo) and begin.cf_name == "default" and begin.reason == "Manual Flush"
    assert isinstance(created, BlobFileCreationInfo)
    assert (created.job_id, created.file_number, created.reason, created.file_path) == (2, 10, "flush", "/tmp/pdb/000010.blob")
    assert (created.total_blob_count, created.total_blob_bytes, created.file_size) == (64, 66294, 66410)
    assert created.session_id == "CN2K9U8BJ56CTTJF3UYO" and created.time_micros == 1795702285707294
    assert finished.finished and finished.start_micros == 1795702285705807
    assert finished.details["blob_file_head"] == 10 and finished.details["lsm_state"] == [1, 0, 0, 0, 0, 0, 0]
    assert (deleted.file_number, deleted.cf_name, deleted.file_size, deleted.created_micros) == (10, "default", 66410, 1795702285707294)


def test_blob_only_skips_other_json_but_keeps_reasons():
    d, out = decode(REAL, blob_only=True)
    assert [type(e).__name__ for e in out] == ["SessionInfo", "BlobFileCreationInfo", "BlobFileDeletionInfo"]
    assert out[1].reason == "flush"


def test_new_session_restarts_job_ids():
    other = SESSION.replace(b"CN2K9U8BJ56CTTJF3UYO", b"ZZZZZZZZZZZZZZZZZZZZ")
    d, out = decode([SESSION, JOBTEXT, FLUSH_STARTED, other, CREATION])
    # job 2 of the new session never started: its reason is unknown, not "flush"
    assert out[-1].reason == "unknown" and out[-1].session_id == "ZZZZZZZZZZZZZZZZZZZZ"


def test_rolled_file_header_with_same_session_keeps_jobs():
    d, out = decode([SESSION, JOBTEXT, FLUSH_STARTED, SESSION, CREATION])
    assert out[-1].reason == "flush"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_parse_line_never_raises_on_any_bytes(data):
    d = LogDecoder("/db")
    p = parse_line(b"x EVENT_LOG_v1 " + data)
    if p is not None:
        d.feed(p)
    parse_line(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([CREATION, DELETION, FLUSH_STARTED, FLUSH_FINISHED]), st.integers(0, 400), st.binary(max_size=8))
def test_mutated_real_lines_never_raise(line, cut, junk):
    d = LogDecoder("/db")
    for variant in (line[:cut], line[:cut] + junk + line[cut:], bytes(b ^ 0x20 if i == cut else b for i, b in enumerate(line))):
        p = parse_line(variant, d.wanted)
        if p is not None:
            d.feed(p)

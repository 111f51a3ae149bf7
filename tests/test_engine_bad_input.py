"""Bad input: each case is a counted, logged skip or a clear error -- never an
exception in the host program, never a lost later event.

The LOG lines are appended to the LOG of a real (closed) rocksdict database, so
the real events around them must still be delivered.
"""

from __future__ import annotations

import json
import logging
import os

import pytest
import rocksdict

import otel_blob
from dbutil import Recorder, blob_options, quiesce, write_round

PREFIX = b"2026/11/26-14:11:25.707298 140189171181248 EVENT_LOG_v1 "


def event(**fields) -> bytes:
    return PREFIX + json.dumps(fields).encode() + b"\n"


def creation(number, **over) -> bytes:
    f = {"time_micros": 1795702285707294, "cf_name": "default", "job": 2, "event": "blob_file_creation",
         "file_number": number, "total_blob_count": 64, "total_blob_bytes": 66294, "file_checksum": "",
         "file_checksum_func_name": "Unknown", "status": "OK"}
    f.update(over)
    return event(**f)


@pytest.fixture
def real_db(tmp_path):
    """A closed blob DB whose LOG holds real events; returns (path, number of real blob creations)."""
    path = str(tmp_path / "db")
    db = rocksdict.Rdict(path, blob_options(gc=False))
    write_round(db)
    db.flush()
    quiesce(db)
    db.close()
    real = open(os.path.join(path, "LOG"), "rb").read().count(b'"blob_file_creation"')
    assert real > 0
    return path, real


def append(path: str, data: bytes) -> None:
    with open(os.path.join(path, "LOG"), "ab") as f:
        f.write(data)


def replay(path: str) -> tuple[Recorder, otel_blob.Watch]:
    rec = Recorder()
    w = otel_blob.watch(path, rec, from_start=True, loop=None)
    w.stop()
    return rec, w


def test_invalid_file_number_is_skipped_and_counted(real_db):
    path, real = real_db
    append(path, creation(-1) + creation("12") + creation(None) + creation(True) + creation(1.5)
           + event(time_micros=1, job=3, event="blob_file_deletion", file_number=[1]) + creation(900001))
    rec, w = replay(path)
    assert w.stats.skipped["invalid_file_number"] == 6
    assert len(rec.created) == real + 1 and rec.created[-1].file_number == 900001
    assert len([s for s in rec.skipped if s.reason == "invalid_file_number"]) == 6


def test_faulty_secondary_fields_leave_them_unknown(real_db):
    path, real = real_db
    append(path, creation(900002, total_blob_count="many", total_blob_bytes=-5, file_checksum=7, job="x",
                          time_micros=None, cf_name=["a"]))
    rec, w = replay(path)
    e = rec.created[-1]
    assert e.file_number == 900002
    assert (e.total_blob_count, e.total_blob_bytes, e.file_checksum, e.job_id, e.time_micros) == (None,) * 5
    assert w.stats.skipped_total == 0


def test_partial_last_line_waits_for_its_newline(real_db):
    path, real = real_db
    line = creation(900003)
    append(path, line[:40])
    rec = Recorder()
    w = otel_blob.watch(path, rec, from_start=True, loop=None)
    w.drain()
    assert len(rec.created) == real  # the half line is not an event yet
    append(path, line[40:])
    w.drain()
    assert rec.created[-1].file_number == 900003
    w.stop()
    assert w.stats.skipped_total == 0


def test_json_cut_short_is_salvaged_or_counted(real_db):
    path, real = real_db
    finished = event(time_micros=5, job=2, event="compaction_finished", output_level=1, lsm_state=[1, 2, 3])
    cut_finished = finished[: finished.index(b"lsm_state") + 8] + b"\n"
    cut_blob = creation(900004)[:60] + b"\n"  # cut before file_number: unusable
    append(path, cut_finished + cut_blob + creation(900005))
    rec, w = replay(path)
    comp = [c for c in rec.of(otel_blob.CompactionJobInfo) if c.job_id == 2 and c.finished]
    assert comp and comp[-1].truncated and comp[-1].details["output_level"] == 1
    assert w.stats.skipped_total == 1
    assert rec.created[-1].file_number == 900005


def test_non_utf8_bytes_do_not_stop_the_stream(real_db):
    path, real = real_db
    append(path, creation(900006, cf_name="caf\udce9").replace(b"\\udce9", b"\xe9\xff")
           + b"\xff\xfe garbage \x00\x01 line\n" + creation(900007))
    rec, w = replay(path)
    assert [e.file_number for e in rec.created[-2:]] == [900006, 900007]
    assert "caf" in rec.created[-2].cf_name


def test_unknown_event_types_are_ignored(real_db):
    path, real = real_db
    append(path, event(time_micros=1, job=9, event="wal_file_thing", x=1) + event(foo=1) + b"EVENT_LOG_v1 [1,2]\n"
           + creation(900008))
    rec, w = replay(path)
    assert rec.created[-1].file_number == 900008
    assert w.stats.skipped["malformed_line"] == 2  # the event without "event" and the non-object


def test_huge_and_deeply_nested_lines(real_db):
    path, real = real_db
    deep = PREFIX + b'{"event": "blob_file_creation", "x": ' + b"[" * 100000 + b"]" * 100000 + b"}\n"
    huge = PREFIX + b'{"event": "x", "pad": "' + b"a" * (3 << 20) + b'"}\n'
    append(path, deep + huge + creation(900009))
    rec, w = replay(path)
    assert rec.created[-1].file_number == 900009
    assert w.stats.skipped["line_too_long"] == 1
    assert w.stats.skipped_total == 2


def test_failed_deletions_are_delivered_with_their_status(real_db):
    path, real = real_db
    first = open(os.path.join(path, "LOG"), "rb").read().split(b'"file_number": ')[1].split(b",")[0]
    number = int(first)
    append(path, event(time_micros=7, job=1, event="blob_file_deletion", file_number=number)
           + event(time_micros=8, job=1, event="blob_file_deletion", file_number=number,
                   status="IO error: No such file or directory: While unlink() file: x.blob"))
    rec, w = replay(path)
    ok = [d for d in rec.deleted if d.ok]
    failed = [d for d in rec.deleted if not d.ok]
    assert [d.file_number for d in ok] == [number]
    assert [d.file_number for d in failed] == [number] and failed[0].status.startswith("IO error")
    assert w.stats.blob_files_deleted == 1


def test_listener_that_raises_does_not_stop_others(real_db, caplog):
    path, real = real_db

    class Boom(otel_blob.EventListener):
        def on_blob_file_created(self, info):
            raise RuntimeError("listener bug")

    rec = Recorder()
    with caplog.at_level(logging.ERROR, logger="otel_blob"):
        w = otel_blob.watch(path, [Boom(), rec], from_start=True, loop=None)
        w.stop()
    assert len(rec.created) == real
    assert "listener bug" in caplog.text


def test_missing_db_directory_is_a_clear_error(tmp_path):
    with pytest.raises(otel_blob.WatchError, match=str(tmp_path / "nope")):
        otel_blob.watch(str(tmp_path / "nope"), Recorder())


def test_missing_log_waits_and_then_follows(tmp_path):
    path = str(tmp_path / "db")
    os.mkdir(path)
    rec = Recorder()
    w = otel_blob.watch(path, rec, from_start=True, loop=None)
    assert w.stats.skipped["log_missing"] == 1
    db = rocksdict.Rdict(path, blob_options(gc=False))
    write_round(db)
    db.flush()
    quiesce(db)
    db.close()
    w.stop()
    assert rec.created, "the LOG created after the watch started was not followed"


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory", "unreadable"])
def test_log_that_is_not_a_readable_file(tmp_path, kind):
    path = str(tmp_path / "db")
    os.mkdir(path)
    log = os.path.join(path, "LOG")
    if kind == "symlink":
        target = tmp_path / "elsewhere"
        target.write_bytes(creation(1))
        os.symlink(target, log)
    elif kind == "fifo":
        os.mkfifo(log)
    elif kind == "directory":
        os.mkdir(log)
    else:
        with open(log, "wb") as f:
            f.write(creation(1))
        os.chmod(log, 0)
        if os.access(log, os.R_OK):
            # root reads anything: take read permission away for real with a bind of nothing
            pytest.skip("running as a user that ignores file permissions") if os.geteuid() != 0 else None
    rec = Recorder()
    w = otel_blob.watch(path, rec, from_start=True, loop=None)
    w.stop()
    reasons = set(w.stats.skipped)
    if kind == "unreadable" and os.geteuid() == 0:
        # root bypasses permission bits: the file is read, which is right for root.
        assert rec.created and not reasons
        return
    assert reasons in ({"not_a_file"}, {"log_unreadable"}), reasons
    assert not rec.created
    assert log in rec.skipped[0].detail


def test_deleted_db_directory_while_watching(tmp_path):
    path = str(tmp_path / "db")
    db = rocksdict.Rdict(path, blob_options(gc=False))
    rec = Recorder()
    w = otel_blob.watch(db, rec, loop=None)
    write_round(db)
    db.flush()
    quiesce(db)
    db.close()
    w.drain()
    before = len(rec.created)
    for name in os.listdir(path):
        os.unlink(os.path.join(path, name))
    os.rmdir(path)
    w.drain()  # must not raise
    w.stop()
    assert before > 0 and len(rec.created) == before
    assert w.stats.skipped["log_missing"] >= 1

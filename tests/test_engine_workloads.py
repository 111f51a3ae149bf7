"""The event engine on real rocksdict databases, against the file system's ground truth.

Ground truth (tests/ground_truth.py): inotify reports every ``*.blob`` file that
appears in or disappears from the DB directory while the test runs; ``stat`` at
the end gives the sizes of those still there. The engine must deliver exactly
one creation per file that appeared and exactly one successful deletion per file
that disappeared, with the same numbers and sizes, and nothing twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import rocksdict

import otel_blob
from dbutil import BlobDirWatch, Recorder, assert_matches_truth, blob_options, quiesce, write_round
from otel_blob.source.layout import flattened_log_name


def run_workload(path: str, opts: rocksdict.Options, rounds: int = 4, compact: bool = True, **watch_kw) -> tuple[Recorder, otel_blob.Watch]:
    rec = Recorder()
    db = rocksdict.Rdict(path, opts)
    w = otel_blob.watch(db, rec, **watch_kw)
    for _ in range(rounds):
        write_round(db)
        db.flush()
    if compact:
        db.compact_range(None, None)
    quiesce(db)
    db.close()
    w.stop()
    return rec, w


def test_flush_creates_blob_files(tmp_path):
    path = str(tmp_path / "db")
    os.mkdir(path)
    with BlobDirWatch(path) as gt:
        rec, w = run_workload(path, blob_options(gc=False), rounds=2, compact=False)
        truth = gt.collect()
    assert truth.created, "the workload made no blob files: the test proves nothing"
    assert_matches_truth(rec, truth, path)
    assert {e.reason for e in rec.created} == {"flush"}
    assert all(e.cf_name == "default" and e.total_blob_count and e.total_blob_bytes for e in rec.created)
    assert all(e.session_id and e.job_id and e.time_micros for e in rec.created)
    flushes = rec.of(otel_blob.FlushJobInfo)
    assert {f.reason for f in flushes} == {"Manual Flush"}
    assert w.stats.skipped_total == 0


def test_compaction_and_blob_gc(tmp_path):
    path = str(tmp_path / "db")
    os.mkdir(path)
    with BlobDirWatch(path) as gt:
        rec, _ = run_workload(path, blob_options(gc=True), rounds=4)
        truth = gt.collect()
    assert truth.deleted, "no blob file was deleted: GC did not run"
    assert_matches_truth(rec, truth, path)
    reasons = {e.reason for e in rec.created}
    assert {"flush", "compaction"} <= reasons
    compactions = rec.of(otel_blob.CompactionJobInfo)
    assert {c.reason for c in compactions} & {"ManualCompaction", "ForcedBlobGC", "LevelL0FilesNum"}
    # Blob GC relocated live blobs: files made by compactions while the flush's went away.
    by_job = {(e.session_id, e.job_id) for e in rec.created if e.reason == "compaction"}
    assert by_job and {c.job_id for c in compactions if c.finished} >= {j for _, j in by_job}
    # Each deletion knows the size and column family its creation told.
    for d in rec.deleted:
        assert d.cf_name == "default" and d.created_micros is not None


def test_several_column_families(tmp_path):
    path = str(tmp_path / "db")
    os.mkdir(path)
    opts = blob_options()
    with BlobDirWatch(path) as gt:
        rec = Recorder()
        db = rocksdict.Rdict(path, opts)
        w = otel_blob.watch(db, rec)
        cf1 = db.create_column_family("cf1", blob_options())
        for _ in range(3):
            write_round(db)
            write_round(cf1, prefix=b"c")
            db.flush()
            cf1.flush()
        db.compact_range(None, None)
        cf1.compact_range(None, None)
        quiesce(db)
        del cf1
        db.close()
        w.stop()
        truth = gt.collect()
    assert_matches_truth(rec, truth, path)
    cfs = {e.cf_name for e in rec.created}
    assert cfs == {"default", "cf1"}
    cf_of = {e.file_number: e.cf_name for e in rec.created}
    assert all(d.cf_name == cf_of[d.file_number] for d in rec.deleted)
    assert {c.cf_name for c in rec.of(otel_blob.FlushJobInfo)} == {"default", "cf1"}


def test_db_log_dir_layout(tmp_path):
    path = str(tmp_path / "sub" / "db")
    logs = str(tmp_path / "logs")
    os.makedirs(path)
    os.mkdir(logs)
    with BlobDirWatch(path) as gt:
        rec, w = run_workload(path, blob_options(log_dir=logs), rounds=3)
        truth = gt.collect()
    assert w.log_path == os.path.join(logs, flattened_log_name(path))
    assert os.path.exists(w.log_path)
    assert not os.path.exists(os.path.join(path, "LOG"))
    assert_matches_truth(rec, truth, path)


class SlowListener(Recorder):
    """Holds the watcher up so it is behind when RocksDB renames the LOG."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate

    def on_blob_file_created(self, info):
        self.gate.wait()
        self._add(info)


def test_rotation_by_max_log_file_size_while_behind(tmp_path):
    path = str(tmp_path / "db")
    os.mkdir(path)
    gate = threading.Event()
    rec = SlowListener(gate)
    with BlobDirWatch(path) as gt:
        db = rocksdict.Rdict(path, blob_options(max_log_file_size=20 << 10))
        w = otel_blob.watch(db, rec)
        for _ in range(6):
            write_round(db)
            db.flush()
        db.compact_range(None, None)
        quiesce(db)
        rolled = [n for n in os.listdir(path) if n.startswith("LOG.old.")]
        gate.set()  # the watcher may now catch up, through the renamed files
        db.close()
        w.stop()
        truth = gt.collect()
    assert len(rolled) >= 3, f"the LOG rolled only {len(rolled)} times"
    assert_matches_truth(rec, truth, path)


def test_rotation_by_log_file_time_to_roll(tmp_path):
    path = str(tmp_path / "db")
    os.mkdir(path)
    opts = blob_options(gc=False)
    opts.set_log_file_time_to_roll(1)
    with BlobDirWatch(path) as gt:
        rec = Recorder()
        db = rocksdict.Rdict(path, opts)
        w = otel_blob.watch(db, rec)
        for _ in range(3):
            # RocksDB checks the file's age once every 100 log lines: the workload
            # spans the age limit and then logs enough lines for a check.
            threading.Event().wait(1.1)
            for _ in range(6):
                write_round(db, 60)
                db.flush()
        quiesce(db)
        db.close()
        w.stop()
        truth = gt.collect()
        rolled = [n for n in os.listdir(path) if n.startswith("LOG.old.")]
    assert len(rolled) >= 2, f"the LOG rolled {len(rolled)} times"
    assert_matches_truth(rec, truth, path)


def test_close_and_reopen_new_log_job_ids_restart(tmp_path):
    """A path watch follows the DB across reopens: new LOG, new session, job ids from 1."""
    path = str(tmp_path / "db")
    os.mkdir(path)
    opts = blob_options()
    rocksdict.Rdict(path, opts).close()
    rec = Recorder()
    with BlobDirWatch(path) as gt:
        w = otel_blob.watch(path, rec, from_start=False)
        for _ in range(3):
            db = rocksdict.Rdict(path, opts)
            for _ in range(2):
                write_round(db)
                db.flush()
            quiesce(db)
            db.close()
        w.stop()
        truth = gt.collect()
    assert_matches_truth(rec, truth, path)
    sessions = {e.session_id for e in rec.created}
    assert len(sessions) == 3
    # The same job id in two sessions is two jobs.
    jobs = {(e.session_id, e.job_id) for e in rec.created}
    assert len({j for _, j in jobs}) < len(jobs)


def test_watch_does_not_keep_the_rdict_open(tmp_path):
    path = str(tmp_path / "db")
    opts = blob_options()
    db = rocksdict.Rdict(path, opts)
    w = otel_blob.watch(db, Recorder())
    write_round(db)
    db.close()
    # If the watch held a handle, RocksDB's LOCK would still be taken.
    db2 = rocksdict.Rdict(path, opts)
    assert db2[b"k00000"] is not None
    db2.close()
    w.stop()
    assert w.stopped


CRASHER = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, sys.argv[2])
    from dbutil import blob_options, write_round
    import rocksdict
    db = rocksdict.Rdict(sys.argv[1], blob_options(gc=False))
    write_round(db, 300)
    os._exit(9)  # die without flush: the values live only in the WAL
    """
)


def test_crash_recovery_reports_reason_recovery(tmp_path):
    path = str(tmp_path / "db")
    os.mkdir(path)
    here = os.path.dirname(__file__)
    proc = subprocess.run([sys.executable, "-c", CRASHER, path, here], capture_output=True)
    assert proc.returncode == 9, proc.stderr
    assert not [n for n in os.listdir(path) if n.endswith(".blob")]
    with BlobDirWatch(path) as gt:
        rec = Recorder()
        db = rocksdict.Rdict(path, blob_options(gc=False))
        w = otel_blob.watch(db, rec)  # an Rdict just opened: read from its LOG's start
        quiesce(db)
        db.close()
        w.stop()
        truth = gt.collect()
    assert truth.created
    assert_matches_truth(rec, truth, path)
    assert {e.reason for e in rec.created} == {"recovery"}
    recovery = rec.of(otel_blob.RecoveryJobInfo)
    assert [r.finished for r in recovery] == [False, True]


def test_session_watch_started_late_reads_its_session_only(tmp_path):
    """A session watch started after its DB was closed and reopened many times (a helper
    behind its application) reads its session's LOG and stops there -- not the LOGs of
    every later session (read once per session, that is quadratic: the helper fell
    further behind the more it was behind)."""
    from otel_blob.source.identity import identity_of
    from otel_blob.watching.db_watch import Watch
    from otel_blob.watching.session_start import session_position

    path = str(tmp_path / "db")
    opts = blob_options()
    db = rocksdict.Rdict(path, opts)
    log = os.path.join(path, "LOG")
    anchor = identity_of(log)
    write_round(db)
    db.flush()
    quiesce(db)
    db.close()
    with open(log, "rb") as f:
        own_lines = f.read().count(b"\n")
    for _ in range(30):
        rocksdict.Rdict(path, opts).close()
    rec = Recorder()
    position, found = session_position(log, anchor)
    assert found.first_on_disk and len(found.files) == 1
    w = Watch(path, log, rec, start=position, end_with_session=True)
    w.poll()
    assert w.ended and w.stopped
    assert rec.created and {e.session_id for e in rec.created} == {found.session_id}
    # Its own LOG and at most the next one (whose header ends the session for the decoder).
    assert own_lines <= w.stats.lines < 3 * own_lines

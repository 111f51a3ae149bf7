"""LogDecoder's memory bounds: the live blob file table and the job table stay
bounded whatever the LOG, the oldest forgotten first and counted; what is
forgotten only costs a deletion its size, cf and lifetime; checkpoints (state /
restore) round-trip and still read the format written before the bounds.

Behaviour only (no timing). The lines are RocksDB's own: the exact shapes
RocksDB 9.8.4 (rocksdict 0.3.29) writes, and the LOG of a real blob workload.
"""

from __future__ import annotations

import json
import os
import random
import tracemalloc

import rocksdict
from dbutil import blob_options, quiesce, write_round

from otel_blob.decode import BlobFileCreationInfo, BlobFileDeletionInfo, LogDecoder
from otel_blob.decode.tables import LiveBlobFiles as _LiveBlobFiles

DB = "/tmp/pdb"
T0 = 1795702285707294  # RocksDB time_micros of the real lines in test_events_parse.py
SESSION = b"2026/11/26-14:11:25.698669 140189204855680 DB Session ID:  CN2K9U8BJ56CTTJF3UYO"


def creation(number: int, micros: int | None = None, cf: str = "default", job: int = 2) -> bytes:
    micros = T0 + number if micros is None else micros
    return (b'2026/11/26-14:11:25.707298 140189171181248 EVENT_LOG_v1 {"time_micros": %d, "cf_name": "%s", '
            b'"job": %d, "event": "blob_file_creation", "file_number": %d, "total_blob_count": 64, '
            b'"total_blob_bytes": 66294, "file_checksum": "", "file_checksum_func_name": "Unknown", "status": "OK"}'
            % (micros, cf.encode(), job, number))


def deletion(number: int, job: int = 4, failed: bool = False) -> bytes:
    status = (b', "status": "IO error: No such file or directory: while unlink() file: /tmp/pdb/%06d.blob: '
              b'No such file or directory"' % number) if failed else b""
    return (b'2026/11/26-14:11:25.716280 140189171181248 EVENT_LOG_v1 {"time_micros": %d, "job": %d, '
            b'"event": "blob_file_deletion", "file_number": %d%s}' % (T0 + 10**6 + number, job, number, status))


def job_lines(job: int) -> list[bytes]:
    return [
        b"2026/11/26-14:11:25.705787 140189171181248 [db/flush_job.cc:901] [default] [JOB %d] "
        b"Flushing memtable with next log file: 8" % job,
        b'2026/11/26-14:11:25.705811 140189171181248 EVENT_LOG_v1 {"time_micros": 1795702285705807, "job": %d, '
        b'"event": "flush_started", "num_memtables": 1, "num_entries": 200, "num_deletes": 0, '
        b'"total_data_size": 202890, "memory_usage": 206632, "num_range_deletes": 0, "flush_reason": "Manual Flush"}'
        % job,
    ]


def size_of(path: str) -> int:
    """A stat() stand-in: the size follows from the file number (so a test can check it)."""
    return int(os.path.basename(path)[:-5]) * 10 + 7


def decoder(**kw) -> LogDecoder:
    d = LogDecoder(DB, file_size=size_of, **kw)
    d.feed_lines([SESSION])
    return d


def deletions(infos: list) -> dict[int, BlobFileDeletionInfo]:
    return {i.file_number: i for i in infos if isinstance(i, BlobFileDeletionInfo)}


# -- the live blob file table ----------------------------------------------------


def test_creations_beyond_the_cap_evict_the_oldest_first_and_count_them():
    d = decoder(max_live_blob_files=4)
    out = d.feed_lines([creation(n) for n in range(10, 20)])
    assert [i.file_number for i in out] == list(range(10, 20))  # every creation still delivered
    assert list(d.live_blob_files) == [16, 17, 18, 19]
    assert d.evicted == 6 and len(d.live_blob_files) == 4


def test_deletion_of_an_evicted_file_is_delivered_without_size_cf_lifetime():
    d = decoder(max_live_blob_files=4)
    d.feed_lines([creation(n, cf="cf1") for n in range(10, 20)])
    gone, kept = d.feed_lines([deletion(12), deletion(18)])
    # Evicted: as for a file created before the watch started.
    assert isinstance(gone, BlobFileDeletionInfo) and gone.ok
    assert (gone.file_number, gone.file_size, gone.cf_name, gone.created_micros) == (12, None, None, None)
    assert gone.file_path == f"{DB}/000012.blob"
    # Kept: everything the creation told.
    assert (kept.file_number, kept.file_size, kept.cf_name, kept.created_micros) == (18, 187, "cf1", T0 + 18)
    assert list(d.live_blob_files) == [16, 17, 19] and d.evicted == 6


def test_a_failed_deletion_keeps_the_file_and_the_retry_gets_its_size():
    d = decoder(max_live_blob_files=4)
    d.feed_lines([creation(n) for n in range(10, 14)])
    failed, retried = d.feed_lines([deletion(11, failed=True), deletion(11)])
    assert not failed.ok and failed.file_size == 117
    assert retried.ok and retried.file_size == 117 and 11 not in d.live_blob_files


def test_out_of_order_creations_evict_the_lowest_number():
    # Concurrent jobs log their blob files out of number order: oldest = lowest number.
    d = decoder(max_live_blob_files=3)
    d.feed_lines([creation(n) for n in (20, 22, 21, 19, 23)])
    assert list(d.live_blob_files) == [21, 22, 23] and d.evicted == 2


def test_blob_dir_of_a_kept_files_cf_and_default_dir_for_an_evicted_one():
    d = LogDecoder(DB, blob_dir=lambda cf: f"/blobs/{cf}" if cf else DB, max_live_blob_files=1)
    d.feed_lines([SESSION, creation(30, cf="hot"), creation(31, cf="hot")])
    gone, kept = d.feed_lines([deletion(30), deletion(31)])
    assert gone.file_path == f"{DB}/000030.blob" and kept.file_path == "/blobs/hot/000031.blob"


def test_files_found_at_start_beyond_the_cap_keep_the_newest():
    d = LogDecoder(DB, known_blob_files={n: n * 100 for n in (7, 3, 9, 5, 1)}, max_live_blob_files=3)
    assert dict(d.live_blob_files) == {5: (500, None, None), 7: (700, None, None), 9: (900, None, None)}
    assert d.evicted == 2


def test_the_table_against_a_model_through_both_tiers():
    """Random creations (mostly in order), deletions (some failed) and re-creations,
    decoded from real lines with the cap far below the files created: every deletion
    gets exactly what a plain dict evicting its lowest number would give."""
    rnd = random.Random(7)
    cap = 300  # the newest cap // 8 = 37 in the dict tier, the rest in the arrays
    d = decoder(max_live_blob_files=cap)
    model: dict[int, tuple] = {}
    # Every creation and OK deletion of the session (fewer than RECENT_NUMBERS here): a repeat is skipped.
    created: set[int] = set()
    deleted: set[int] = set()
    evicted = repeats = 0
    nxt = 100
    for _ in range(40):
        lines = []
        for _ in range(100):
            r = rnd.random()
            if r < 0.7 or not model:
                n = nxt + rnd.choice((0, 0, 0, 1, 2))  # sometimes one of the next numbers first
                nxt = max(nxt, n) + 1
                if rnd.random() < 0.03:
                    n = rnd.randrange(100, nxt)  # a number logged again (or very late)
                cf = rnd.choice(("default", "default", "cf1"))
                lines.append(creation(n, cf=cf))
                if n in created or n in deleted:
                    repeats += 1  # the same file twice: counted, nothing changes
                    continue
                created.add(n)
                model[n] = (size_of(f"/x/{n:06d}.blob"), cf, T0 + n)
                while len(model) > cap:
                    del model[min(model)]
                    evicted += 1
            else:
                n = rnd.choice(list(model)) if rnd.random() < 0.9 else rnd.randrange(100, nxt + 5)
                failed = rnd.random() < 0.1
                lines.append(deletion(n, failed=failed))
                info = d.feed_lines(lines)[-1]
                lines = []
                if not failed and n in deleted:
                    assert info.reason == "repeated_event"
                    repeats += 1
                    continue
                want = model.get(n) if failed else model.pop(n, None)
                if not failed:
                    deleted.add(n)
                assert (info.file_size, info.cf_name, info.created_micros) == (want or (None, None, None))
                assert info.ok is not failed
        d.feed_lines(lines)
        assert len(d.live_blob_files) == len(model) <= cap and d.evicted == evicted
        assert list(d.live_blob_files) == sorted(model)
    assert evicted > 1000 and repeats > 10


def test_real_blob_workload_with_a_tiny_cap(tmp_path):
    """A real rocksdict blob workload's LOG decoded with and without a bound: the same
    events; deletions of evicted files lose only size, cf and lifetime."""
    path = str(tmp_path / "db")
    db = rocksdict.Rdict(path, blob_options())
    for _ in range(12):
        write_round(db, 200)
        db.flush()
    quiesce(db)
    db.close()
    with open(os.path.join(path, "LOG"), "rb") as f:
        lines = f.read().split(b"\n")
    free = LogDecoder(path, file_size=size_of)
    a, peak = [], 0
    for line in lines:
        a += free.feed_lines([line])
        peak = max(peak, len(free.live_blob_files))
    # RocksDB logs a few dozen creations, then GC's deletions, and again: a cap of 2/3
    # of the most files ever alive evicts some before their deletion and keeps others.
    CAP = peak * 2 // 3
    capped = LogDecoder(path, file_size=size_of, max_live_blob_files=CAP)
    b = capped.feed_lines(lines)
    assert [type(i) for i in a] == [type(i) for i in b]
    created = [i for i in b if isinstance(i, BlobFileCreationInfo)]
    assert len(created) > 10
    lost = kept = 0
    for x, y in zip(a, b):
        if isinstance(x, BlobFileDeletionInfo):
            assert (x.file_number, x.status, x.time_micros, x.session_id) == (y.file_number, y.status, y.time_micros,
                                                                                y.session_id)
            if (y.file_size, y.cf_name, y.created_micros) != (x.file_size, x.cf_name, x.created_micros):
                assert (y.file_size, y.cf_name, y.created_micros) == (None, None, None)
                assert x.file_size == size_of(x.file_path)
                lost += 1
            elif x.ok:
                assert y.file_size == size_of(y.file_path) and y.cf_name == "default" and y.created_micros
                kept += 1
        else:
            assert x == y
    assert capped.evicted > 0 and 0 < lost <= capped.evicted and kept > 0 and free.evicted == 0
    assert len(capped.live_blob_files) <= CAP


def test_a_full_table_stays_small():
    """Memory, not time: 100,000 files (the default cap) in a few MB, not the ~28 MB
    of a dict of lists; beyond the cap it does not grow."""
    tracemalloc.start()
    try:
        t = _LiveBlobFiles(LogDecoder.MAX_LIVE_BLOB_FILES)
        base = tracemalloc.get_traced_memory()[0]
        for n in range(150_000):
            t.add(10_000_000 + n, int(str(66_000 + n % 997)), "".join(("def", "ault")), int(str(T0 + n)))
            if n == 99_999:
                full = tracemalloc.get_traced_memory()[0] - base
        after = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(t) == 100_000 and t.evicted == 50_000
    assert full < 8_000_000 and after < 8_000_000, (full, after)


# -- the job table ---------------------------------------------------------------------


def test_job_table_stays_within_max_jobs_oldest_forgotten():
    d = decoder(max_jobs=8)
    for job in range(1, 101):
        d.feed_lines(job_lines(job))
        assert len(d.state()["jobs"]) <= 8
    old, new = d.feed_lines([creation(500, job=92), creation(501, job=93)])
    assert (old.reason, new.reason) == ("unknown", "flush")  # job 92 forgotten, 93 kept


def test_job_table_default_bound():
    d = decoder()
    lines = [line for job in range(1, LogDecoder.MAX_JOBS + 201) for line in job_lines(job)]
    d.feed_lines(lines)
    assert len(d.state()["jobs"]) == LogDecoder.MAX_JOBS


# -- checkpoints -----------------------------------------------------------------------


def test_state_round_trips_through_json():
    d = decoder(max_live_blob_files=5)
    d.feed_lines(job_lines(3) + [creation(n, job=3, cf=("default", "cf1")[n % 2]) for n in range(40, 52)])
    state = json.loads(json.dumps(d.state()))
    assert state["evicted"] == 7 and [row[0] for row in state["live_blob_files"]] == [47, 48, 49, 50, 51]
    r = LogDecoder(DB, file_size=size_of, max_live_blob_files=5)
    r.restore(state)
    assert r.state() == state and r.evicted == 7 and r.session_id == "CN2K9U8BJ56CTTJF3UYO"
    more = [creation(52, job=3), deletion(44), deletion(49)]
    assert r.feed_lines(more) == d.feed_lines(more)
    assert r.state() == d.state()


def test_restore_reads_the_format_written_before_the_bounds():
    # LogDecoder.state() as the unbounded version wrote it: dict order, no "evicted".
    old = {
        "session_id": "CN2K9U8BJ56CTTJF3UYO",
        "jobs": [[2, "flush", "default", "Manual Flush", 1795702285705807], [3, "compaction", "cf1", "LevelL0FilesNum",
                                                                           1795702285705900]],
        "live_blob_files": [[12, 66410, "default", 1795702285707294], [10, None, None, None],
                            [11, 65968, "cf1", 1795702285707300]],
    }
    d = LogDecoder(DB)
    d.restore(old)
    assert d.evicted == 0 and list(d.live_blob_files) == [10, 11, 12]
    created, a, b = d.feed_lines([creation(13, job=3), deletion(12), deletion(10)])
    assert (created.reason, created.cf_name) == ("compaction", "default")
    assert (a.file_size, a.cf_name, a.created_micros) == (66410, "default", 1795702285707294)
    assert (b.file_size, b.cf_name, b.created_micros) == (None, None, None) and b.file_number == 10
    assert d.state()["live_blob_files"] == [[11, 65968, "cf1", 1795702285707300], [13, None, "default", T0 + 13]]


def test_restore_of_an_old_state_beyond_the_bounds_keeps_the_newest():
    old = {
        "session_id": "S",
        "jobs": [[j, "flush", "default", "Manual Flush", None] for j in range(1, 21)],
        "live_blob_files": [[n, n * 10, "default", T0 + n] for n in (9, 2, 7, 4, 8, 1, 6, 3, 5)],
    }
    d = LogDecoder(DB, max_live_blob_files=4, max_jobs=5)
    d.restore(old)
    assert list(d.live_blob_files) == [6, 7, 8, 9] and d.evicted == 5
    assert [j[0] for j in d.state()["jobs"]] == [16, 17, 18, 19, 20]


def test_a_watch_reports_its_decoders_evictions(tmp_path, monkeypatch):
    import otel_blob
    from dbutil import Recorder

    path = str(tmp_path / "db")
    db = rocksdict.Rdict(path, blob_options(gc=False))
    for _ in range(3):
        write_round(db)
        db.flush()
    quiesce(db)
    db.close()
    monkeypatch.setattr(LogDecoder, "MAX_LIVE_BLOB_FILES", 2)
    w = otel_blob.watch(path, Recorder(), from_start=True, loop=None)
    w.stop()
    assert w.stats.blob_files_created > 2
    # (the files found in the directory at the start count against the cap too)
    assert w.stats.blob_files_evicted == w.decoder.evicted >= w.stats.blob_files_created - 2
    assert w.stats.as_dict()["blob_files_evicted"] == w.decoder.evicted

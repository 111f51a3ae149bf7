"""A non-Python RocksDB writer watched end to end: Debian's ``db_bench`` (rocksdb-tools, RocksDB 7.8).

``otel-blob watch`` follows the directory while two db_bench runs (two opens: a
new LOG and a new session each) fill, overwrite and compact with blob files and
blob GC; the OTLP receiver gets the records; inotify is the ground truth.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import Counter

import pytest

from ground_truth import BlobDirWatch
from test_cli import CREATED, DELETED, Watcher, blob_records, clean_env

DB_BENCH = shutil.which("db_bench") or ("/usr/bin/db_bench" if os.path.exists("/usr/bin/db_bench") else None)

BLOB_FLAGS = [
    "--enable_blob_files=true", "--min_blob_size=256", "--blob_file_size=65536",
    "--enable_blob_garbage_collection=true", "--blob_garbage_collection_age_cutoff=1.0",
    "--blob_garbage_collection_force_threshold=0.5",
    "--write_buffer_size=262144", "--compression_type=none", "--value_size=1024", "--num=3000",
    "--stats_interval_seconds=0", "--histogram=0", "--threads=1",
]


@pytest.fixture
def db_bench():
    if DB_BENCH is None:
        if os.environ.get("CI"):
            pytest.fail("db_bench not found, and CI is set: install the Debian package rocksdb-tools")
        pytest.skip("db_bench not found (Debian package rocksdb-tools); not in CI, so skipped")
    return DB_BENCH


def _logged_creations(path: str) -> Counter:
    """How many times each blob file number was logged as created, in all LOG files of the DB."""
    out: Counter = Counter()
    for name in os.listdir(path):
        if name == "LOG" or name.startswith("LOG.old."):
            with open(os.path.join(path, name), "rb") as f:
                for line in f:
                    if b'"blob_file_creation"' in line and b'"status": "OK"' in line:
                        m = re.search(rb'"file_number": (\d+)', line)
                        if m:
                            out[int(m.group(1))] += 1
    return out


def test_db_bench_every_blob_file_exactly_once(tmp_path, otlp_receiver, db_bench):
    path = str(tmp_path / "db")
    # db_bench --use_existing_db=0 destroys (and re-creates) the directory, which would
    # blind inotify: create the DB first (no blob files), then only reuse it.
    p = subprocess.run([db_bench, f"--db={path}", "--benchmarks=fillseq", "--num=1", "--use_existing_db=0"],
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.grpc_endpoint, OTEL_BLOB_POLL_INTERVAL="0.01")
    with BlobDirWatch(path) as gt:
        w = Watcher(path, env=env)
        w.wait_err("watching .* from the end")
        runs = [
            ["--benchmarks=overwrite,overwrite"],
            ["--benchmarks=overwrite,compact"],  # reopen: new LOG, new session
        ]
        for extra in runs:
            p = subprocess.run([db_bench, f"--db={path}", *BLOB_FLAGS, *extra, "--use_existing_db=1"],
                               capture_output=True, timeout=120)
            assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
        rc = w.stop()
        truth = gt.collect()
    assert rc == 0, w.stderr
    assert "Traceback" not in w.stderr

    recs = blob_records(otlp_receiver)
    ok = [r for r in recs if r["attributes"].get("rocksdb.status") == "OK"]
    created = Counter(r["attributes"]["rocksdb.blob_file.number"] for r in ok if r["event_name"] == CREATED)
    deleted = Counter(r["attributes"]["rocksdb.blob_file.number"] for r in ok if r["event_name"] == DELETED)
    assert truth.created and truth.deleted, "db_bench made or deleted no blob file: the test proves nothing"

    # RocksDB reuses the number of a blob file whose job was cancelled at close (the
    # number never reached the MANIFEST): one number can name two files, in two
    # sessions. So the comparison is per number *and* multiplicity.
    logged = _logged_creations(path)
    assert created == logged, "each creation line must be exported exactly once"
    assert deleted == Counter(truth.deleted), "each deletion the kernel saw must be exported exactly once"
    # A job cancelled at close leaves a blob file deleted without a creation line.
    unlogged = Counter(truth.created) - logged
    assert Counter(truth.created) - unlogged == logged, "a logged creation the kernel did not see"
    for n in unlogged:
        assert n in truth.deleted, f"blob file {n} never logged as created is still on disk"
    sessions = {r["attributes"]["rocksdb.db.session_id"] for r in ok}
    assert len(sessions) == 2
    assert {r["attributes"]["rocksdb.blob_file.reason"] for r in ok if r["event_name"] == CREATED} >= {
        "flush", "compaction"}
    # Every creation and deletion of a job belongs to that job's trace.
    assert all(r["trace_id"] != "0" * 32 for r in ok if r["attributes"].get("rocksdb.job.id"))
    print(json.dumps({"created": sum(created.values()), "deleted": sum(deleted.values()),
                      "deleted_without_creation": sum(unlogged.values()),
                      "numbers_reused": sorted(n for n, c in logged.items() if c > 1)}))

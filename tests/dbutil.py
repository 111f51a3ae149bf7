"""Real rocksdict databases with blob files, workloads, and an event recorder."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from typing import Any

import rocksdict

import otel_blob
from ground_truth import BlobDirWatch, BlobFileTruth

VALUE = 1024  # bytes per value: all values go to blob files (min_blob_size below)


def blob_options(
    *, blob_file_size: int = 64 << 10, gc: bool = True, log_dir: str | None = None,
    max_log_file_size: int = 0, keep_log_file_num: int = 1000,
) -> rocksdict.Options:
    o = rocksdict.Options(raw_mode=True)
    o.create_if_missing(True)
    o.create_missing_column_families(True)
    o.set_enable_blob_files(True)
    o.set_min_blob_size(256)
    o.set_blob_file_size(blob_file_size)
    if gc:
        o.set_enable_blob_gc(True)
        o.set_blob_gc_age_cutoff(1.0)
        o.set_blob_gc_force_threshold(0.5)
    if log_dir:
        o.set_db_log_dir(log_dir)
    if max_log_file_size:
        o.set_max_log_file_size(max_log_file_size)
    o.set_keep_log_file_num(keep_log_file_num)
    return o


def write_round(db: Any, n: int = 120, prefix: bytes = b"k") -> None:
    for i in range(n):
        db[prefix + b"%05d" % i] = os.urandom(VALUE)


def quiesce(db: rocksdict.Rdict, timeout: float = 30.0) -> None:
    """Wait until RocksDB has no flush or compaction running or pending.

    Closing a DB cancels running compactions, whose half-written blob files are
    then deleted without ever being logged as created; tests that compare with
    the ground truth close a quiet DB.
    """
    deadline = time.monotonic() + timeout
    props = ("rocksdb.num-running-compactions", "rocksdb.num-running-flushes",
             "rocksdb.compaction-pending", "rocksdb.mem-table-flush-pending")
    while time.monotonic() < deadline:
        if all((db.property_int_value(p) or 0) == 0 for p in props):
            return
        time.sleep(0.01)  # polling RocksDB's own state: there is no event to wait on
    raise TimeoutError("RocksDB did not quiesce")


class Recorder(otel_blob.EventListener):
    """Keeps every event, thread-safely."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.lock = threading.Lock()

    def _add(self, info: Any) -> None:
        with self.lock:
            self.events.append(info)

    on_blob_file_created = on_blob_file_deleted = _add
    on_flush_begin = on_flush_completed = on_compaction_begin = on_compaction_completed = _add
    on_recovery_begin = on_recovery_completed = _add
    on_table_file_created = on_table_file_deleted = on_line_skipped = _add

    def of(self, cls: type) -> list[Any]:
        with self.lock:
            return [e for e in self.events if type(e) is cls]

    @property
    def created(self) -> list[otel_blob.BlobFileCreationInfo]:
        return self.of(otel_blob.BlobFileCreationInfo)

    @property
    def deleted(self) -> list[otel_blob.BlobFileDeletionInfo]:
        return self.of(otel_blob.BlobFileDeletionInfo)

    @property
    def skipped(self) -> list[otel_blob.LineSkippedInfo]:
        return self.of(otel_blob.LineSkippedInfo)


def churn_and_close(db: rocksdict.Rdict, rounds: int = 4, n: int = 120, prefix: bytes = b"k") -> None:
    """``rounds`` flushes of ``n`` blob values, a full compaction (blob files created and
    deleted), then ``db.close()`` once RocksDB is quiet (see :func:`quiesce`)."""
    for _ in range(rounds):
        write_round(db, n, prefix)
        db.flush()
    db.compact_range(None, None)
    quiesce(db)
    db.close()


def blob_history(path: str, rounds: int = 4) -> list[bytes]:
    """A closed DB at ``path`` after ``rounds`` flushes and a full compaction of blob
    files (quiesced first), and its LOG's lines without line ends."""
    churn_and_close(rocksdict.Rdict(path, blob_options()), rounds)
    with open(os.path.join(path, "LOG"), "rb") as f:
        return [line.rstrip(b"\n") for line in f]


def blob_event_lines(db_path: str) -> int:
    """Blob file event lines in every LOG file of ``db_path`` (a plain scan, no otel_blob code)."""
    n = 0
    for name in os.listdir(db_path):
        if name == "LOG" or name.startswith("LOG.old."):
            with open(os.path.join(db_path, name), "rb") as f:
                n += sum(1 for line in f if b'"event": "blob_file_' in line)
    return n


def assert_matches_truth(rec: Recorder, truth: BlobFileTruth, directory: str) -> None:
    """Every blob file that appeared has exactly one creation event; every one that
    disappeared exactly one (successful) deletion; sizes agree with the disk."""
    created = Counter(e.file_number for e in rec.created)
    deleted = Counter(e.file_number for e in rec.deleted if e.ok)
    dup_c = {n: c for n, c in created.items() if c > 1}
    dup_d = {n: c for n, c in deleted.items() if c > 1}
    assert not dup_c, f"creations delivered twice: {dup_c}"
    assert not dup_d, f"deletions delivered twice: {dup_d}"
    assert set(created) == set(truth.created), (
        f"missing creations {sorted(set(truth.created) - set(created))}, "
        f"extra {sorted(set(created) - set(truth.created))}"
    )
    assert set(deleted) == set(truth.deleted), (
        f"missing deletions {sorted(set(truth.deleted) - set(deleted))}, "
        f"extra {sorted(set(deleted) - set(truth.deleted))}"
    )
    present = truth.present(directory)
    by_number = {e.file_number: e for e in rec.created}
    for n, size in present.items():
        if n in by_number:
            assert by_number[n].file_size == size, f"blob {n}: event size {by_number[n].file_size} != {size}"
            assert by_number[n].file_path == os.path.join(directory, "%06d.blob" % n)
    for e in rec.deleted:
        if e.ok and e.file_size is not None and e.file_number in by_number:
            assert e.file_size == by_number[e.file_number].file_size


__all__ = ["BlobDirWatch", "Recorder", "assert_matches_truth", "blob_options", "quiesce", "write_round"]

"""The blob-heavy rocksdict write workload every benchmark uses.

Small blob files (64 KiB by default), a small write buffer so flushes are
frequent, overwrites over a bounded key space so blob GC (force threshold 0.5)
relocates and deletes files: the LOG gets the flush / compaction / GC / blob
file events of a busy blob DB. Stdlib + rocksdict only (no otel_blob import), so
it can run as the "plain Python" baseline.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

VALUE = 1024


def blob_options(
    *, blob_file_size: int = 64 << 10, write_buffer_size: int = 1 << 20, gc: bool = True
) -> Any:
    import rocksdict

    o = rocksdict.Options(raw_mode=True)
    o.create_if_missing(True)
    o.set_enable_blob_files(True)
    o.set_min_blob_size(256)
    o.set_blob_file_size(blob_file_size)
    o.set_write_buffer_size(write_buffer_size)
    if gc:
        o.set_enable_blob_gc(True)
        o.set_blob_gc_age_cutoff(1.0)
        # 0.0 makes RocksDB compact forever; 0.5 is what GC-heavy users run.
        o.set_blob_gc_force_threshold(0.5)
    return o


class Writer:
    """Writes 1 KiB values over a bounded key space (overwrites feed blob GC).

    ``step(n)`` does n puts and returns; values come from a pre-made pool so the
    workload's own CPU is RocksDB's, not os.urandom's.
    """

    def __init__(self, db: Any, keys: int = 50_000, seed: int = 1) -> None:
        self.db = db
        self.keys = keys
        rnd = random.Random(seed)
        pool = rnd.randbytes(VALUE * 64)
        self.values = [pool[i * 37 % (len(pool) - VALUE):][:VALUE] for i in range(997)]
        self.i = 0

    def step(self, n: int) -> None:
        db, values, keys = self.db, self.values, self.keys
        i = self.i
        for j in range(i, i + n):
            db[b"k%07d" % (j * 7919 % keys)] = values[j % 997]
        self.i = i + n


def run_for(db: Any, seconds: float, rate: float | None = None, batch: int = 200) -> int:
    """Write for ``seconds`` (at most ``rate`` puts/s if given); returns the number of puts."""
    w = Writer(db)
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        if rate:
            due = t0 + w.i / rate
            if due > now:
                time.sleep(min(due - now, end - now))
                continue
        w.step(batch)
    return w.i


def seed_session(path: str, seconds: float, *, blob_file_size: int = 64 << 10, rate: float | None = None) -> int:
    """Open (or reopen) the DB at ``path``, write for ``seconds``, flush, close."""
    import rocksdict

    os.makedirs(path, exist_ok=True)
    db = rocksdict.Rdict(path, blob_options(blob_file_size=blob_file_size))
    try:
        n = run_for(db, seconds, rate)
        db.flush()
    finally:
        db.close()
    return n

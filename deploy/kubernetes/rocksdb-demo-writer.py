"""The demo database of deploy/kubernetes: a blob-enabled RocksDB (rocksdict) that keeps writing.

    python rocksdb-demo-writer.py DB_DIR        # until SIGTERM/SIGINT, then closes the DB, exit 0

1 KiB values go to blob files (min_blob_size 256). Random keys of a fixed key space are overwritten,
so compactions with blob garbage collection relocate live values and delete old blob files:
the sidecar sees creations and deletions, and the data stays at about WRITER_KEYS KiB.
Rate and key space come from the environment (the StatefulSet in rocksdb-demo.yaml sets them).
It is a workload, not a benchmark: it sleeps to keep its rate.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time

import rocksdict

KEYS = int(os.environ.get("WRITER_KEYS", "20000"))
PUTS_PER_SECOND = float(os.environ.get("WRITER_PUTS_PER_SECOND", "1000"))
VALUE_BYTES = 1024


def options() -> rocksdict.Options:
    o = rocksdict.Options(raw_mode=True)
    o.create_if_missing(True)
    o.set_write_buffer_size(512 << 10)  # a flush, and so new blob files, every 512 KiB written
    o.set_enable_blob_files(True)
    o.set_min_blob_size(256)
    o.set_blob_file_size(256 << 10)
    o.set_enable_blob_gc(True)
    o.set_blob_gc_age_cutoff(1.0)  # every blob file is a GC candidate...
    o.set_blob_gc_force_threshold(0.5)  # ...and one half garbage forces its compaction
    return o


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    path = sys.argv[1]
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    db = rocksdict.Rdict(path, options())
    print(f"writing to {path}: {PUTS_PER_SECOND:g} puts/s of {VALUE_BYTES} B over {KEYS} keys", flush=True)
    start, n = time.monotonic(), 0
    while not stopping:
        db[b"key%08d" % random.randrange(KEYS)] = os.urandom(VALUE_BYTES)  # overlapping flushes: real compactions
        n += 1
        if n % 100 == 0:
            ahead = n / PUTS_PER_SECOND - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    db.close()  # RocksDB logs its last events (and deletions) while closing; the sidecar reads them
    print(f"closed {path} after {n} puts", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

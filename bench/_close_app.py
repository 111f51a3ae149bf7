"""The application bench/close_exit.py times: plain Python, or under ``opentelemetry-instrument``.

Stdlib + rocksdict (+ whatever opentelemetry-instrument loads): it never imports
otel_blob, so every variant runs the same code. One JSON line on stdout at the end,
then the script returns and the interpreter exits (the driver times that exit)::

    python -m bench._close_app close  --db DIR [--closes K] [--puts N] [--flush]
    python -m bench._close_app cycles --db DIR [--cycles N] [--puts 20]

* ``close``: K times: open a blob DB, N puts of 1 KiB values (a 256 KiB write buffer:
  RocksDB flushes by itself, blob files are made), with ``--flush`` also
  ``Rdict.flush()`` (an application call the instrumentation records as a span: the
  helper's in process mode, the application's in thread mode), wait until RocksDB is idle, then time ``close()``. Also the first
  open-to-close of the process (the instrumentation's start-up falls into it).
* ``cycles``: N times open / ``--puts`` puts / close of one blob DB; ms per cycle.

The JSON line: ``close_s`` (list) or ``cycle_ms``, ``first_open_to_close_s``,
``helpers`` (pids of this process's ``otel_blob.helper`` children) and ``exit_begin``
(``time.monotonic()`` -- CLOCK_MONOTONIC, comparable across processes -- as the
script ends).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from bench import workload
from bench._worker import quiesce


def helper_pids() -> list[int]:
    out = []
    me = os.getpid()
    for tid in os.listdir(f"/proc/{me}/task"):
        try:
            with open(f"/proc/{me}/task/{tid}/children") as f:
                kids = f.read().split()
        except OSError:
            continue
        for k in kids:
            try:
                with open(f"/proc/{k}/cmdline", "rb") as f:
                    if b"otel_blob.helper" in f.read():
                        out.append(int(k))
            except OSError:
                pass
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("close", "cycles"))
    ap.add_argument("--db", required=True)
    ap.add_argument("--closes", type=int, default=5)
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--puts", type=int, default=None)
    ap.add_argument("--flush", action="store_true")
    a = ap.parse_args(argv)

    import rocksdict

    result: dict = {}
    if a.what == "close":
        puts = 600 if a.puts is None else a.puts
        opts = workload.blob_options(write_buffer_size=256 << 10)
        closes = []
        t_first = time.perf_counter()
        for i in range(a.closes):
            db = rocksdict.Rdict(a.db, opts)
            w = workload.Writer(db, keys=5_000, seed=i)
            w.step(puts)
            if a.flush:
                db.flush()
            quiesce(db)
            t0 = time.perf_counter()
            db.close()
            closes.append(time.perf_counter() - t0)
            if i == 0:
                result["first_open_to_close_s"] = time.perf_counter() - t_first
            del db
        result["close_s"] = closes
    else:
        puts = 20 if a.puts is None else a.puts
        opts = workload.blob_options()
        w_values = workload.Writer(None, keys=1_000).values
        t0 = time.perf_counter()
        for i in range(a.cycles):
            db = rocksdict.Rdict(a.db, opts)
            for j in range(puts):
                db[b"k%05d" % ((i * puts + j) % 1_000)] = w_values[j % len(w_values)]
            db.close()
            if i == 0:
                result["first_open_to_close_s"] = time.perf_counter() - t0
        result["cycle_ms"] = (time.perf_counter() - t0) * 1000 / a.cycles
    result["helpers"] = helper_pids()
    result["exit_begin"] = time.monotonic()
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

"""A long-lived benchmark worker: one open blob-heavy rocksdict DB, driven over stdin.

Started by bench/overhead.py and bench/lag.py, either as plain Python or under
``opentelemetry-instrument`` (then ``rocksdict.Rdict`` is instrumented or not,
as the environment says)::

    [opentelemetry-instrument] python -m bench._worker --db DIR --reply-fd N [--blob-file-size B ...]

Commands: one JSON object per line on stdin; one JSON reply per command on the
file descriptor ``--reply-fd`` (not stdout: whatever the SDK or a helper process
prints cannot be mistaken for a reply). The first reply, ``{"ready": ...}``,
comes once the DB is open.

* ``{"cmd": "slice", "seconds": s, "settle": t}`` -- write (CPU-bound, unthrottled)
  for ``s`` seconds, wait until RocksDB has no flush/compaction running or
  pending (so every slice leaves the DB in the same state class and no
  background work spills into another worker's slice), then settle: sleep
  ``t`` and force-flush the OTel SDK providers if there are any (untimed; the
  export of the slice's last records happens in this worker's own turn).
  Reply: ops, write/quiesce/settle seconds, and cumulative CPU snapshots
  (bench/_procstat.py) taken before the writes (``cpu0``) and after the settle (``cpu``).
* ``{"cmd": "quiet", "flushes": n, "interval": s, "puts": k}`` -- n times: k
  puts, ``Rdict.flush()``, sleep s.
* ``{"cmd": "busy", "seconds": s}`` -- unthrottled writes for s seconds, then quiesce.
* ``{"cmd": "cpu"}`` -- a CPU snapshot.
* ``{"cmd": "quit"}`` -- ``Rdict.close()`` (the instrumentation drains), reply, exit.

Stdlib + rocksdict (+ whatever opentelemetry-instrument loads): the worker
itself never imports otel_blob.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from bench import _procstat, workload

QUIESCE_PROPS = (
    "rocksdb.num-running-compactions",
    "rocksdb.num-running-flushes",
    "rocksdb.compaction-pending",
    "rocksdb.mem-table-flush-pending",
)


def quiesce(db: Any, timeout: float = 60.0) -> float:
    """Wait until RocksDB has no flush or compaction running or pending; seconds waited."""
    t0 = time.perf_counter()
    deadline = t0 + timeout
    while time.perf_counter() < deadline:
        if all((db.property_int_value(p) or 0) == 0 for p in QUIESCE_PROPS):
            break
        time.sleep(0.002)  # RocksDB's own state: there is no event to wait on
    return time.perf_counter() - t0


def force_flush(timeout_ms: int = 5000) -> None:
    """Export what the SDK providers hold (no-op without an SDK: plain Python, API only)."""
    try:
        from opentelemetry import trace
        from opentelemetry._logs import get_logger_provider
    except ImportError:
        return
    for p in (get_logger_provider(), trace.get_tracer_provider()):
        ff = getattr(p, "force_flush", None)
        if ff is not None:
            try:
                ff(timeout_ms)
            except Exception:
                pass


def instrumented() -> bool:
    import rocksdict

    return hasattr(rocksdict.Rdict.__init__, "__wrapped__")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--reply-fd", type=int, required=True)
    ap.add_argument("--blob-file-size", type=int, default=64 << 10)
    ap.add_argument("--write-buffer-size", type=int, default=1 << 20)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=100)
    a = ap.parse_args(argv)

    os.set_inheritable(a.reply_fd, False)  # a helper process must not hold our reply pipe open
    out = os.fdopen(a.reply_fd, "w", buffering=1)

    def reply(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    import rocksdict

    acct = _procstat.Accountant()
    os.makedirs(a.db, exist_ok=True)
    opts = workload.blob_options(blob_file_size=a.blob_file_size, write_buffer_size=a.write_buffer_size)
    opts.set_max_log_file_size(1 << 40)  # the LOG never rolls during a run (the lag reader follows one file)
    t0 = time.time_ns()
    db = rocksdict.Rdict(a.db, opts)
    w = workload.Writer(db, keys=a.keys)
    reply({"ready": True, "pid": os.getpid(), "open_ns": [t0, time.time_ns()], "instrumented": instrumented(),
           "cpu": acct.snapshot()})

    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        c = cmd["cmd"]
        if c == "slice":
            seconds, batch = float(cmd["seconds"]), a.batch
            cpu0 = acct.snapshot()
            i0 = w.i
            t0 = time.perf_counter()
            end = t0 + seconds
            while time.perf_counter() < end:
                w.step(batch)
            t1 = time.perf_counter()
            q = quiesce(db)
            t2 = time.perf_counter()
            time.sleep(float(cmd.get("settle", 0.05)))
            force_flush()
            t3 = time.perf_counter()
            reply({"ops": w.i - i0, "write_s": t1 - t0, "quiesce_s": q, "active_s": t2 - t0,
                   "settle_s": t3 - t2, "cpu0": cpu0, "cpu": acct.snapshot()})
        elif c == "quiet":
            ts = time.time_ns()
            for _ in range(int(cmd["flushes"])):
                w.step(int(cmd.get("puts", 150)))
                db.flush()
                time.sleep(float(cmd["interval"]))
            reply({"t_start_ns": ts, "t_end_ns": time.time_ns(), "ops": w.i, "cpu": acct.snapshot()})
        elif c == "busy":
            ts = time.time_ns()
            i0 = w.i
            end = time.perf_counter() + float(cmd["seconds"])
            while time.perf_counter() < end:
                w.step(a.batch)
            te = time.time_ns()
            q = quiesce(db)
            reply({"t_start_ns": ts, "t_writes_end_ns": te, "t_end_ns": time.time_ns(), "quiesce_s": q,
                   "ops": w.i - i0, "cpu": acct.snapshot()})
        elif c == "cpu":
            reply({"cpu": acct.snapshot()})
        elif c == "quit":
            t0 = time.perf_counter()
            db.close()
            reply({"closed": True, "close_s": time.perf_counter() - t0, "cpu": acct.snapshot()})
            break
        else:
            reply({"error": f"unknown command {c!r}"})
    out.close()


if __name__ == "__main__":
    main()

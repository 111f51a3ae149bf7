"""``otel-blob demo`` (also ``python -m otel_blob.demo``): the blob file lifecycle in a few seconds.

Creates a temporary blob-enabled rocksdict database, writes and overwrites
values in a few write/flush rounds (flushes create blob files), compacts
(blob GC relocates the live values into new files and deletes the old ones),
waits until RocksDB is quiet, closes it, and prints one line per blob file
event and a summary. Nothing goes over the network unless an OTLP endpoint is
configured (``--otlp URL`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``): then the
telemetry is exported too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Any

__all__ = ["run_demo"]

VALUE = 1024  # bytes per value: all go to blob files (min_blob_size 256)
KEYS = 120


def _options(rocksdict: Any) -> Any:
    o = rocksdict.Options(raw_mode=True)
    o.create_if_missing(True)
    o.set_enable_blob_files(True)
    o.set_min_blob_size(256)
    o.set_blob_file_size(64 << 10)
    o.set_enable_blob_gc(True)
    o.set_blob_gc_age_cutoff(1.0)
    # 0.5, not 0.0: a force threshold of 0 makes RocksDB compact forever.
    o.set_blob_gc_force_threshold(0.5)
    return o


def _quiesce(db: Any, timeout: float = 30.0) -> None:
    """Wait until RocksDB runs no flush or compaction (closing would cancel one)."""
    props = ("rocksdb.num-running-compactions", "rocksdb.num-running-flushes",
             "rocksdb.compaction-pending", "rocksdb.mem-table-flush-pending")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all((db.property_int_value(p) or 0) == 0 for p in props):
            return
        time.sleep(0.01)  # RocksDB's own state: there is no event to wait on


def run_demo(args: argparse.Namespace, environ: dict[str, str]) -> int:
    from ..export.pipeline import ExportPipeline, PipelineOptions, otlp_configured
    from .console import LinePrinter, say
    from .errors import EXIT_DROPPED, EXIT_OK, RuntimeFailure, UsageError

    try:
        import rocksdict
    except ImportError:
        raise RuntimeFailure("the demo needs rocksdict: pip install 'otel_blob[instruments]'") from None
    import otel_blob

    if args.rounds < 1 or args.rounds > 100:
        raise UsageError(f"--rounds {args.rounds}: expected 1 to 100")
    exporting = otlp_configured(args.otlp, environ)
    telemetry = None
    if exporting:
        telemetry = ExportPipeline(PipelineOptions(otlp=args.otlp), environ, default_exporter="otlp")
    if args.keep:
        if os.path.exists(args.keep):
            raise UsageError(f"--keep {args.keep}: already exists")
        path, tmp = os.path.abspath(args.keep), None
    else:
        tmp = tempfile.mkdtemp(prefix="otel-blob-demo-")
        path = os.path.join(tmp, "db")
    printer = LinePrinter(sys.stdout)
    listeners = [printer] + ([telemetry.listener] if telemetry and telemetry.listener else [])
    out = sys.stdout
    out.write(f"otel-blob demo: blob-enabled RocksDB at {path}\n"
              f"  min_blob_size=256, blob_file_size=64 KiB, blob GC on (age cutoff 1.0, force threshold 0.5)\n"
              f"  {args.rounds} rounds of {KEYS} x {VALUE} B values (the same keys: each round makes the "
              f"last one garbage), then a full compaction\n\n")
    out.flush()
    started = time.monotonic()
    try:
        db = rocksdict.Rdict(path, _options(rocksdict))
        w = otel_blob.watch(db, listeners)
        try:
            for r in range(args.rounds):
                for i in range(KEYS):
                    db[b"key%05d" % i] = os.urandom(VALUE)
                db.flush()
                w.drain()  # read the flush's events while its files exist (their sizes)
            db.compact_range(None, None)
            w.drain()
            _quiesce(db)
        finally:
            db.close()
            w.stop()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if telemetry is not None:
            telemetry.shutdown()
    out.write("\n" + printer.summary() + "\n")
    out.write(f"  took {time.monotonic() - started:.2f} s"
              + (f"; exported to {args.otlp or environ.get('OTEL_EXPORTER_OTLP_ENDPOINT') or 'OTLP'}"
                 if telemetry and telemetry.exporting else "; nothing exported (no OTLP endpoint configured)")
              + "\n")
    if w.stats.skipped_total:
        say(f"{w.stats.skipped_total} LOG lines skipped: {dict(w.stats.skipped)}")
    dropped = telemetry.dropped() if telemetry is not None else 0
    if dropped:  # as watch and replay say it: the exit status too
        say(f"{dropped} telemetry items could not be delivered: {telemetry.dropped_by_reason()}")  # type: ignore[union-attr]
        return EXIT_DROPPED
    return EXIT_OK


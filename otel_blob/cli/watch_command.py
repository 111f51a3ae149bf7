"""``otel-blob watch``: follow running databases until SIGINT/SIGTERM.

Each DB_DIR is a :class:`DbSlot`: it waits for the directory and its LOG to
exist, then runs a :class:`~otel_blob.watching.db_watch.Watch` on the shared
:class:`~otel_blob.watching.loop.WatchLoop` (the same engine as ``otel_blob.watch()``
and the helper process). The main thread only looks at the directories, saves
the checkpoint and waits for a signal. The checkpoint holds each watch's
position once the exporters delivered everything before it
(:class:`~otel_blob.watching.positions.Positions`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Any

from ..export.pipeline import ExportPipeline, PipelineOptions
from ..source.layout import WatchError, info_log_path, is_rocksdb_dir
from ..watching.checkpoint import CheckpointError, CheckpointFile
from ..watching.db_watch import Watch
from ..watching.listener import EventListener, tee
from ..watching.loop import WatchLoop
from ..watching.positions import Positions
from .console import LinePrinter, say
from .errors import EXIT_DROPPED, EXIT_OK, EXIT_RUNTIME, RuntimeFailure, UsageError, loss_summary, say_destination
from .signals import StopRequest

__all__ = ["DbSlot", "cmd_watch", "compose"]

_log = logging.getLogger("otel_blob.cli")

_DB_MARKERS = ("CURRENT", "IDENTITY", "LOG", "LOCK")


def check_db_arg(path: str, log_dir: str | None) -> None:
    """Usage errors for a DB_DIR given on the command line (a missing one is waited for)."""
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path):
        raise UsageError(f"{path}: not a directory (expected a RocksDB database directory)")
    try:
        names = os.listdir(path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read directory: {exc.strerror or exc}") from None
    if not names or is_rocksdb_dir(path):
        return
    if any(n in _DB_MARKERS or n.startswith(("OPTIONS-", "MANIFEST-", "LOG.old.")) for n in names):
        return
    if log_dir is not None and os.path.exists(info_log_path(path, log_dir)):
        return
    raise UsageError(f"{path}: not a RocksDB database directory (no CURRENT, IDENTITY or LOG file)")


def compose(args: argparse.Namespace, pipeline: ExportPipeline, several_dbs: bool) -> tuple[Any, EventListener]:
    """The console printer (or None) and the one listener the events go to."""
    listeners: list[EventListener] = []
    printer = None
    if args.console:
        printer = LinePrinter(sys.stdout, show_db=several_dbs)
        listeners.append(printer)
    if pipeline.listener is not None:
        listeners.append(pipeline.listener)
    return printer, tee(listeners)


class DbSlot:
    """One DB_DIR: waiting for it, or watching it."""

    def __init__(self, db_path: str, args: argparse.Namespace, listener: EventListener, loop: WatchLoop,
                 positions: Positions, entry: dict[str, Any] | None, ckpt_path: str | None) -> None:
        self.db_path = os.path.abspath(db_path)
        self.args = args
        self.listener = listener
        self.loop = loop
        self.positions = positions
        self.entry = entry  # where to resume (from the checkpoint file), until a watch starts
        self.ckpt_path = ckpt_path
        self.watch: Watch | None = None
        self.stats: list[Any] = []  # of every watch this slot ran
        # Since when (wall µs) the database or its LOG was missing: every LOG file
        # RocksDB made since then is read from its start.
        self.waited_since: int | None = None
        self._said: str | None = None
        self.missing_exit = False

    def _once(self, key: str, msg: str) -> None:
        if self._said != key:
            self._said = key
            say(msg)

    def _mark_waiting(self) -> None:
        if self.waited_since is None:
            self.waited_since = time.time_ns() // 1000 - 1000  # 1 ms slack for the clock

    def check(self) -> None:
        """Start watching once the database and its LOG exist; notice a directory that disappears."""
        if self.watch is None:
            if not os.path.isdir(self.db_path):
                self._mark_waiting()
                self._once("nodir", f"{self.db_path}: waiting for the database directory to exist")
                return
            self._start()
        elif not os.path.isdir(self.db_path):
            self._lost()

    def _start(self) -> None:
        log_path = info_log_path(self.db_path, self.args.log_dir)
        if not os.path.exists(log_path):
            self._mark_waiting()
            self._once("nolog", f"{self.db_path}: waiting for its LOG ({log_path})")
            return
        start: Any
        if self.entry is not None:
            start, how = self.entry, "from checkpoint"
        elif self.waited_since is not None:
            # Created while we waited: its LOG (and any LOG.old.* made since) from the start.
            start = {"path": log_path, "wall_us": self.waited_since, "files": []}
            how = "from the start of its LOG"
        elif self.args.from_start:
            start, how = "session", "from the start of its session"
        else:
            start, how = "end", "from the end of its LOG"
        try:
            w = Watch(self.db_path, log_path, self.listener, start=start, stat_files=self.args.stat_files,
                      poll_interval=self.args.poll_interval, on_checkpoint=self.positions.callback(self.db_path),
                      checkpoint_every=self.args.checkpoint_interval / 2)
        except ValueError as exc:  # a checkpoint entry of the wrong shape
            where = self.ckpt_path or "the checkpoint"
            raise UsageError(f"checkpoint {where} is corrupt: {exc} (delete it to start afresh)") from None
        except (WatchError, OSError) as exc:
            self._once("err", f"{self.db_path}: cannot watch: {exc}")
            return
        self.loop.add(w)
        self.watch = w
        self.stats.append(w.stats)
        self.entry = None
        self.waited_since = None
        self._said = None
        say(f"watching {self.db_path} (LOG {log_path}, {how})")

    def _lost(self) -> None:
        # The writer is gone with its directory: deliver what is left, partial lines too.
        assert self.watch is not None
        self.watch.stop(final=True)
        self.watch = None
        self.positions.forget(self.db_path)  # a directory created again is a new database: from its start
        self._mark_waiting()
        if self.args.exit_on_missing:
            say(f"{self.db_path}: database directory disappeared; exiting (--exit-on-missing)")
            self.missing_exit = True
        else:
            self._said = "nodir"
            say(f"{self.db_path}: database directory disappeared; waiting for it to come back")

    def stop(self) -> None:
        if self.watch is not None:
            # The server is still writing: a partial last line waits for the next run.
            self.watch.stop(final=False)


CHECK_EVERY = 0.25  # s between two looks at the database directories


def cmd_watch(args: argparse.Namespace, environ: dict[str, str]) -> int:
    dbs: list[str] = []
    for d in args.db_dirs:
        check_db_arg(d, args.log_dir)
        a = os.path.abspath(d)
        if args.exit_on_missing and not os.path.isdir(a):
            raise RuntimeFailure(f"{d}: no such database directory (--exit-on-missing: not waiting for it)")
        if a not in dbs:
            dbs.append(a)
    if args.log_dir is not None and os.path.exists(args.log_dir) and not os.path.isdir(args.log_dir):
        raise UsageError(f"--log-dir {args.log_dir}: not a directory")
    ckpt = None
    if args.checkpoint:
        try:
            ckpt = CheckpointFile(args.checkpoint)
        except CheckpointError as exc:
            raise UsageError(str(exc)) from None
    try:
        options = PipelineOptions(args.severity, args.events, args.file_paths, args.otlp, args.console)
        pipeline = ExportPipeline(options, environ, default_exporter="otlp", shutdown_timeout=args.shutdown_timeout)
    except BaseException:
        if ckpt is not None:
            ckpt.close()
        raise
    printer, listener = compose(args, pipeline, several_dbs=len(dbs) > 1)
    positions = Positions(pipeline.marks, pipeline.delivered)
    loop = WatchLoop()
    slots = [DbSlot(d, args, listener, loop, positions, ckpt.entry(d) if ckpt else None,
                    ckpt.path if ckpt else None) for d in dbs]

    def save_checkpoint() -> None:
        if ckpt is None:
            return
        changed = positions.confirm()
        if not changed:
            return
        for db_path, entry in changed.items():
            ckpt.set(db_path, entry)
        try:
            ckpt.save()
        except CheckpointError as exc:
            raise RuntimeFailure(str(exc)) from None

    code = EXIT_OK
    next_save = 0.0
    said = False
    with StopRequest() as stop:
        try:
            while not stop.event.is_set():
                for s in slots:
                    s.check()
                if not said:  # after the first look: a refused checkpoint entry is the only line
                    said = True
                    say_destination(args, pipeline)
                if any(s.missing_exit for s in slots):
                    code = EXIT_RUNTIME
                    break
                now = time.monotonic()
                if now >= next_save:
                    next_save = now + args.checkpoint_interval
                    save_checkpoint()
                stop.event.wait(min(CHECK_EVERY, args.checkpoint_interval))
            for s in slots:
                s.stop()
        finally:
            pipeline.shutdown()
            try:
                save_checkpoint()
            finally:
                if ckpt is not None:
                    ckpt.close()
    if printer is not None:
        sys.stdout.write(printer.summary() + "\n")
    lost = loss_summary(pipeline, [st for s in slots for st in s.stats])
    if lost:
        say(f"{'stopped by ' + stop.name + '; ' if stop.name else ''}{lost}"
            + ("; the checkpoint keeps the last delivered position: a restart reads the rest from the LOG"
               if ckpt is not None else ""))
        return code or EXIT_DROPPED
    if stop.name:
        say(f"stopped by {stop.name}; every event delivered and flushed")
    return code

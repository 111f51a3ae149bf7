"""``otel-blob replay``: the events of existing LOG files, exported as a live watch would have.

The files are grouped by LOG (``LOG`` and its ``LOG.old.*``) and replayed oldest
first through :func:`~otel_blob.watching.replay.replay` -- the watch, decoder and
listeners of a live watch. Trace and span ids derive from the DB session and job
ids, bodies and timestamps from the LOG: the same LOG exported twice yields
identical records.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import stat
import sys
import time
from typing import Sequence

from ..decode.rules import parse_line
from ..export.pipeline import ExportPipeline, PipelineOptions
from ..source.layout import log_files, split_log_name
from ..watching.replay import replay
from .console import PROG, say
from .errors import EXIT_DROPPED, EXIT_OK, RuntimeFailure, UsageError, loss_summary, say_destination
from .signals import StopRequest
from .watch_command import compose

__all__ = ["cmd_replay"]

_log = logging.getLogger("otel_blob.cli")

_LOG_HEAD_RE = re.compile(rb"^\d{4}/\d{2}/\d{2}-\d{2}:\d{2}:\d{2}\.\d+ ")


def _log_files_of_dir(d: str) -> list[str]:
    try:
        files = log_files(d)
    except PermissionError:
        raise RuntimeFailure(f"{d}: cannot read directory: permission denied") from None  # as for a file
    except OSError as exc:
        raise RuntimeFailure(f"{d}: cannot read directory: {exc.strerror or exc}") from None
    if not files:
        raise UsageError(f"{d}: no LOG or LOG.old.* file in this directory")
    return files


def _group_logs(paths: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(group key, files oldest first) in order of first mention; a group is one LOG name."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for p in paths:
        d, name = os.path.split(os.path.abspath(p))
        base, order = split_log_name(name)
        files = groups.setdefault(os.path.join(d, base), [])
        if all(path != os.path.abspath(p) for _, path in files):
            files.append((order, os.path.abspath(p)))
    return [(k, [p for _, p in sorted(v)]) for k, v in groups.items()]


def _check_log_file(path: str) -> int:
    """Size of a readable RocksDB LOG file; UsageError/RuntimeFailure otherwise."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as exc:
        raise RuntimeFailure(f"{path}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{path}: is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{path}: not a regular file")
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory") from None
    except PermissionError:
        raise RuntimeFailure(f"{path}: cannot read: permission denied") from None
    except OSError as exc:
        raise RuntimeFailure(f"{path}: cannot read: {exc.strerror or exc}") from None
    if head and not _LOG_HEAD_RE.match(head):
        raise UsageError(f"{path}: not a RocksDB info LOG (its first line has no RocksDB timestamp)")
    return size


def _db_name_of(files: list[str], key: str) -> str:
    """The DB path the LOG header names (``SST files in <path> dir``), else a guess from the file name."""
    for path in files:
        try:
            with open(path, "rb") as f:
                for i, line in enumerate(f):
                    parsed = parse_line(line.rstrip(b"\n"))
                    if parsed is not None and parsed.kind == "db_path":
                        name = parsed.value
                        if os.path.isabs(name):
                            return os.path.normpath(name)
                        break
                    if i > 5000 or b"EVENT_LOG_v1" in line:
                        break
        except OSError:
            continue
    d, base = os.path.split(key)
    if base == "LOG":
        return d
    _log.warning("%s: the LOG does not name its database; reporting %s (use --db)", key, key)
    return key


class _Progress:
    """A stdlib progress bar on stderr (only where it can be redrawn)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = max(total, 1)
        self.enabled = enabled
        self.done = 0
        self._last = 0.0

    def update(self, label: str, nbytes: int, force: bool = False) -> None:
        self.done += nbytes
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        frac = min(self.done / self.total, 1.0)
        width = 30
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        sys.stderr.write(f"\r{PROG}: [{bar}] {frac:6.1%} {self.done / 1e6:,.1f}/{self.total / 1e6:,.1f} MB "
                         f"{os.path.basename(label)[-40:]}\x1b[K")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def cmd_replay(args: argparse.Namespace, environ: dict[str, str]) -> int:
    paths: list[str] = []
    for p in args.logs:
        if os.path.isdir(p):
            paths.extend(_log_files_of_dir(p))
        else:
            paths.append(p)
    groups = _group_logs(paths)
    sizes = {p: _check_log_file(p) for _, files in groups for p in files}
    # No lag histogram: the events are history, observed minus event time is their age.
    options = PipelineOptions(args.severity, args.events, args.file_paths, args.otlp, args.console, lag_metric=False)
    pipeline = ExportPipeline(options, environ, default_exporter="otlp", shutdown_timeout=args.shutdown_timeout)
    printer, listener = compose(args, pipeline, several_dbs=len(groups) > 1)
    say_destination(args, pipeline)
    show = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    progress = _Progress(sum(sizes.values()), show)
    total_events = 0
    all_stats = []
    with StopRequest() as stop:
        try:
            for key, files in groups:
                if stop.event.is_set():
                    break
                db_name = os.path.abspath(args.db_name) if args.db_name else _db_name_of(files, key)
                stats = replay(db_name, key, files, listener, should_stop=stop.event.is_set,
                               on_read=progress.update)
                total_events += stats.events
                all_stats.append(stats)
            progress.update("", 0, force=True)
        finally:
            progress.close()
            pipeline.shutdown()
    if printer is not None:
        sys.stdout.write(printer.summary() + "\n")
    if args.verbose:
        say(f"replayed {len(sizes)} LOG files, {total_events} events")
    lost = loss_summary(pipeline, all_stats)
    if stop.signum is not None:
        say(f"stopped by {stop.name} before the end: "
            f"{len(all_stats)} of {len(groups)} LOGs begun{'; ' + lost if lost else ''}")
        return 128 + stop.signum
    if lost:
        say(lost)
        return EXIT_DROPPED
    return EXIT_OK

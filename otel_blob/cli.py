"""``otel-blob``: blob file telemetry for RocksDB servers that are not Python.

Commands::

    otel-blob watch DB_DIR [DB_DIR ...]   follow running databases, export their blob file telemetry
    otel-blob replay LOG [LOG ...]        export the events of existing LOG / LOG.old.* files
    otel-blob demo                        a temporary blob-enabled database, its blob file lifecycle

Exporters follow OpenTelemetry's environment variables (``OTEL_EXPORTER_OTLP_*``,
``OTEL_{TRACES,LOGS,METRICS}_EXPORTER``, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``); every flag has an ``OTEL_BLOB_*`` variable (the flag
wins). Exit codes: 0 done (also after SIGINT/SIGTERM), 1 a runtime failure (a
file that cannot be read, a database directory that disappeared with
``--exit-on-missing``), 2 bad usage (flag, value, path).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import signal
import stat
import sys
import threading
import time
from collections import Counter
from typing import Any, Callable, Iterator, Sequence, TextIO

from .checkpoint import CheckpointError, CheckpointFile
from .events import (
    BatchInfo,
    CompactionJobInfo,
    FlushJobInfo,
    LogDecoder,
    RecoveryJobInfo,
    WatchInfo,
    parse_line,
)
from .follower import check_checkpoint
from .layout import WatchError, info_log_path, is_rocksdb_dir
from .listener import EventListener, TeeListener, accepting, deliver, tee
from .pipeline import Telemetry, UsageError, otlp_configured

__all__ = ["main"]

PROG = "otel-blob"
_log = logging.getLogger("otel_blob.cli")


class RuntimeFailure(Exception):
    """Something failed while running: one line on stderr, exit 1."""


# ---------------------------------------------------------------------------
# Flags and their environment variables
# ---------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse_bool(raw: str) -> bool:
    v = raw.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError("expected true or false")


def _seconds(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            v = float(raw)
        except ValueError:
            raise ValueError(f"expected seconds from {lo:g} to {hi:g}") from None
        if not lo <= v <= hi or v != v:
            raise ValueError(f"expected seconds from {lo:g} to {hi:g}")
        return v

    return parse


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        v = raw.strip().lower()
        if v not in allowed:
            raise ValueError("expected one of " + ", ".join(allowed))
        return v

    return parse


def _url(raw: str) -> str:
    v = raw.strip()
    if not re.match(r"^https?://[^/\s]+", v):
        raise ValueError("expected a URL such as http://localhost:4317")
    return v


def _typed(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type=`` whose error message is the parser's own."""

    def conv(raw: str) -> Any:
        try:
            return parse(raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{raw!r}: {exc}") from None

    return conv


# option dest -> (environment variable, parser); read only when the flag is not given.
_ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "checkpoint": ("OTEL_BLOB_CHECKPOINT", str),
    "checkpoint_interval": ("OTEL_BLOB_CHECKPOINT_INTERVAL", _seconds(0.01, 60)),
    "log_dir": ("OTEL_BLOB_LOG_DIR", str),
    "from_start": ("OTEL_BLOB_FROM_START", _parse_bool),
    "poll_interval": ("OTEL_BLOB_POLL_INTERVAL", _seconds(0.001, 10)),
    "exit_on_missing": ("OTEL_BLOB_EXIT_ON_MISSING", _parse_bool),
    "console": ("OTEL_BLOB_CONSOLE", _parse_bool),
    "severity": ("OTEL_BLOB_SEVERITY", _choice("info", "debug")),
    "events": ("OTEL_BLOB_EVENTS", _choice("blob", "all")),
    "file_paths": ("OTEL_BLOB_FILE_PATHS", _choice("full", "hash", "none")),
    "stat_files": ("OTEL_BLOB_STAT_FILES", _parse_bool),
    "progress": ("OTEL_BLOB_PROGRESS", _choice("auto", "always", "never")),
}

_DEFAULTS: dict[str, Any] = {
    "checkpoint": None,
    "checkpoint_interval": 0.5,
    "log_dir": None,
    "from_start": False,
    "poll_interval": 0.05,
    "exit_on_missing": False,
    "console": False,
    "severity": "info",
    "events": "blob",
    "file_paths": "full",
    "stat_files": False,
    "progress": "auto",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, no usage block: the operator's log stays readable.
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _add_telemetry_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("telemetry")
    g.add_argument("--otlp", metavar="URL", type=_typed(_url),
                   help="OTLP endpoint (default: OTEL_EXPORTER_OTLP_ENDPOINT; protocol: OTEL_EXPORTER_OTLP_PROTOCOL, "
                        "grpc or http/protobuf)")
    g.add_argument("--console", action="store_const", const=True, default=None,
                   help="print one line per blob file event instead of exporting [OTEL_BLOB_CONSOLE]")
    g.add_argument("--severity", type=_typed(_choice("info", "debug")),
                   help="severity of blob file log records: info (default) or debug [OTEL_BLOB_SEVERITY]")
    g.add_argument("--events", type=_typed(_choice("blob", "all")),
                   help="blob (default): blob file events and their jobs; all: also table files and every job "
                        "[OTEL_BLOB_EVENTS]")
    g.add_argument("--file-paths", type=_typed(_choice("full", "hash", "none")),
                   help="full (default), hash or none: how file and DB paths are recorded [OTEL_BLOB_FILE_PATHS]")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more messages on stderr")


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="OpenTelemetry for RocksDB blob files, from the database's info LOG.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    w = sub.add_parser("watch", help="follow running databases and export their blob file telemetry",
                       description="Follow the info LOG of each database and export its blob file telemetry "
                                   "until SIGINT/SIGTERM.")
    w.add_argument("db_dirs", nargs="+", metavar="DB_DIR")
    w.add_argument("--log-dir", metavar="DIR", help="RocksDB's db_log_dir, when the LOG is not in DB_DIR "
                   "(default: read from the database's OPTIONS file) [OTEL_BLOB_LOG_DIR]")
    w.add_argument("--from-start", action="store_const", const=True, default=None,
                   help="read the current LOG from its start, not its end (a checkpoint wins) [OTEL_BLOB_FROM_START]")
    w.add_argument("--checkpoint", metavar="FILE", help="persist how far each LOG was delivered; resume from it "
                   "[OTEL_BLOB_CHECKPOINT]")
    w.add_argument("--checkpoint-interval", metavar="SECONDS", type=_typed(_seconds(0.01, 60)),
                   help="at most one checkpoint (and exporter flush) per interval, default 0.5 "
                        "[OTEL_BLOB_CHECKPOINT_INTERVAL]")
    w.add_argument("--poll-interval", metavar="SECONDS", type=_typed(_seconds(0.001, 10)),
                   help="seconds between two reads of the LOGs, default 0.05 [OTEL_BLOB_POLL_INTERVAL]")
    w.add_argument("--exit-on-missing", action="store_const", const=True, default=None,
                   help="exit (status 1) when a database directory disappears, instead of waiting for it "
                        "[OTEL_BLOB_EXIT_ON_MISSING]")
    w.add_argument("--stat-blob-files", dest="stat_files", action="store_const", const=True, default=None,
                   help="record blob files' sizes on disk (stat when the event is read); makes re-exports differ "
                        "when a file was deleted meanwhile [OTEL_BLOB_STAT_FILES]")
    _add_telemetry_flags(w)

    r = sub.add_parser("replay", help="export the events of existing LOG files with their original timestamps",
                       description="Export the events of existing LOG / LOG.old.* files (or of every LOG file of "
                                   "a DB directory) exactly as a live watch would have.")
    r.add_argument("logs", nargs="+", metavar="LOG")
    r.add_argument("--db", metavar="PATH", dest="db_name",
                   help="the database path to report (default: from the LOG header)")
    r.add_argument("--progress", type=_typed(_choice("auto", "always", "never")),
                   help="progress bar on stderr: auto (on a terminal, default), always, never [OTEL_BLOB_PROGRESS]")
    _add_telemetry_flags(r)

    d = sub.add_parser("demo", help="a temporary blob-enabled database and its blob file lifecycle",
                       description="Create a temporary blob-enabled rocksdict database, run a short workload "
                                   "and show every blob file created and deleted. Exports to OTLP too when an "
                                   "endpoint is configured (--otlp or OTEL_EXPORTER_OTLP_ENDPOINT).")
    d.add_argument("--otlp", metavar="URL", type=_typed(_url), help="also export to this OTLP endpoint")
    d.add_argument("--rounds", type=int, default=4, metavar="N", help="write/flush rounds (default 4)")
    d.add_argument("--keep", metavar="DIR", help="create the database in DIR (must not exist) and keep it")
    d.add_argument("-v", "--verbose", action="count", default=0)
    return p


def _resolve_env(args: argparse.Namespace, environ: dict[str, str]) -> None:
    """Fill flags not given from their OTEL_BLOB_* variable, then the default."""
    for dest, default in _DEFAULTS.items():
        if not hasattr(args, dest) or getattr(args, dest) is not None:
            continue
        var, parse = _ENV[dest]
        raw = environ.get(var)
        if raw is not None and raw.strip() != "":
            try:
                value = parse(raw)
            except ValueError as exc:
                raise UsageError(f"bad value {var}={raw!r}: {exc}") from None
            setattr(args, dest, value)
        else:
            setattr(args, dest, default)


# ---------------------------------------------------------------------------
# The line printer (--console and the demo) and its summary
# ---------------------------------------------------------------------------


def _n(value: Any) -> str:
    return "?" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


class LinePrinter(EventListener):
    """One readable line per blob file event, plus totals for :meth:`summary`.

    ``+ created  000012.blob  cf=default job=4 reason=flush  blobs=64 bytes=66,294 size=66,410``
    """

    def __init__(self, out: TextIO, *, show_db: bool = False) -> None:
        self.out = out
        self.show_db = show_db
        self.lock = threading.Lock()
        self.jobs: dict[tuple[str, str | None, int | None], str] = {}
        self.created: Counter[str] = Counter()
        self.deleted: Counter[str] = Counter()
        self.failed = 0
        self.blob_bytes = 0
        self.size_created = 0
        self.size_deleted = 0
        self.job_kinds: Counter[str] = Counter()
        self.blob_jobs: set[tuple[str, str | None, int | None]] = set()
        self.live: dict[tuple[str, int], int | None] = {}

    def _write(self, text: str) -> None:
        with self.lock:
            try:
                self.out.write(text + "\n")
                self.out.flush()
            except (BrokenPipeError, ValueError):
                pass

    def _prefix(self, info: Any) -> str:
        return f"[{info.db_name}] " if self.show_db else ""

    def _job_begin(self, info: Any) -> None:
        kind = type(info).__name__.replace("JobInfo", "").lower()
        label = kind if not info.reason or kind == "flush" else f"{kind}:{info.reason}"
        with self.lock:
            key = (info.db_name, info.session_id, info.job_id)
            if key not in self.jobs:
                self.job_kinds[kind] += 1
            self.jobs[key] = label

    on_flush_begin = on_compaction_begin = on_recovery_begin = _job_begin

    def _label(self, info: Any, fallback: str) -> str:
        return self.jobs.get((info.db_name, info.session_id, info.job_id), fallback)

    def on_blob_file_created(self, info: Any) -> None:
        reason = info.reason
        if reason == "compaction":
            reason = self._label(info, reason)
        with self.lock:
            self.created[reason] += 1
            self.blob_bytes += info.total_blob_bytes or 0
            self.size_created += info.file_size or 0
            self.blob_jobs.add((info.db_name, info.session_id, info.job_id))
            self.live[(info.db_name, info.file_number)] = info.file_size
        status = "" if info.ok else f"  status={info.status}"
        self._write(
            f"{self._prefix(info)}+ created  {os.path.basename(info.file_path)}  cf={_n(info.cf_name)} "
            f"job={_n(info.job_id)} reason={reason}  blobs={_n(info.total_blob_count)} "
            f"bytes={_n(info.total_blob_bytes)} size={_n(info.file_size)}{status}"
        )

    def on_blob_file_deleted(self, info: Any) -> None:
        if info.job_id == 0:
            reason = "purge"
        else:
            reason = self._label(info, "unknown")
        name = os.path.basename(info.file_path)
        if not info.ok:
            with self.lock:
                self.failed += 1
            self._write(f"{self._prefix(info)}! delete failed  {name}  job={_n(info.job_id)}  status={info.status}")
            return
        with self.lock:
            self.deleted[reason] += 1
            size = info.file_size
            if size is None:
                size = self.live.get((info.db_name, info.file_number))
            self.size_deleted += size or 0
            self.live.pop((info.db_name, info.file_number), None)
            self.blob_jobs.add((info.db_name, info.session_id, info.job_id))
        never = "" if info.created_micros is not None else "  (creation not seen)"
        self._write(
            f"{self._prefix(info)}- deleted  {name}  cf={_n(info.cf_name)} job={_n(info.job_id)} "
            f"reason={reason}  size={_n(info.file_size)}{never}"
        )

    def summary(self) -> str:
        with self.lock:
            nc, nd = sum(self.created.values()), sum(self.deleted.values())

            def by(c: Counter[str]) -> str:
                return ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))) or "-"

            jobs = ", ".join(f"{v} {k}{'es' if k == 'flush' and v != 1 else '' if v == 1 else 's'}"
                             for k, v in sorted(self.job_kinds.items())) or "none seen"
            lines = [
                f"Summary: {nc} blob files created, {nd} deleted"
                + (f", {self.failed} failed deletions" if self.failed else ""),
                f"  created by reason:  {by(self.created)}",
                f"  deleted by reason:  {by(self.deleted)}",
                f"  bytes:              {self.blob_bytes:,} blob bytes written, "
                f"{self.size_created:,} bytes of files created, {self.size_deleted:,} bytes of files deleted",
                f"  jobs:               {jobs}; {len(self.blob_jobs)} touched blob files",
            ]
        return "\n".join(lines)


# ---------------------------------------------------------------------------
# watch
# ---------------------------------------------------------------------------

_DB_MARKERS = ("CURRENT", "IDENTITY", "LOG", "LOCK")


def _say(msg: str) -> None:
    try:
        sys.stderr.write(f"{PROG}: {msg}\n")
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass


def _check_db_arg(path: str, log_dir: str | None) -> None:
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


_JOB_TYPES = {"FlushJobInfo": FlushJobInfo, "CompactionJobInfo": CompactionJobInfo, "RecoveryJobInfo": RecoveryJobInfo}
OPEN_JOBS_MAX = 256


class _SlotListener(TeeListener):
    """What one DB's watch calls: forwards to the shared listener(s) and remembers
    the jobs that started and did not finish yet (saved with the checkpoint, so a
    restarted watcher puts the blob events after the checkpoint into their spans).

    ``sizeless``: the blob files found at start are reported without sizes (sizes
    come from the LOG only, so a re-export yields identical records).
    """

    def __init__(self, listener: EventListener, sizeless: bool) -> None:
        super().__init__(listener)
        self.sizeless = sizeless
        self.open_jobs: dict[tuple[str | None, int | None], Any] = {}

    def _begin(self, info: Any) -> None:
        jobs = self.open_jobs
        jobs[(info.session_id, info.job_id)] = info
        if len(jobs) > OPEN_JOBS_MAX:
            del jobs[next(iter(jobs))]
        self._fan(info)

    def _end(self, info: Any) -> None:
        self.open_jobs.pop((info.session_id, info.job_id), None)
        self._fan(info)

    on_flush_begin = on_compaction_begin = on_recovery_begin = _begin
    on_flush_completed = on_compaction_completed = on_recovery_completed = _end

    def on_watch_started(self, info: WatchInfo) -> None:
        if self.sizeless:
            info = WatchInfo(info.db_name, info.log_path, info.stopped, dict.fromkeys(info.existing_blob_files))
        self._fan(info)

    def state(self) -> list[dict[str, Any]]:
        return [{"type": type(i).__name__, **dataclasses.asdict(i)} for i in self.open_jobs.values()]

    def restore(self, state: list[dict[str, Any]] | None, db_name: str) -> None:
        """Deliver the begin events of the jobs open at the checkpoint again."""
        for item in state or []:
            item = dict(item)
            cls = _JOB_TYPES.get(item.pop("type", ""))
            if cls is None:
                continue
            try:
                info = cls(**{**item, "db_name": db_name})
            except TypeError:
                continue
            self._begin(info)


class DbSlot:
    """One DB_DIR: waiting for it, or watching it."""

    CHECK_EVERY = 0.25  # seconds between two looks at a missing directory / LOG

    def __init__(self, db_path: str, args: argparse.Namespace, listener: EventListener,
                 ckpt: CheckpointFile | None) -> None:
        self.db_path = os.path.abspath(db_path)
        self.args = args
        self.listener = listener
        self.ckpt = ckpt
        self.watch: Any = None
        self.slot_listener: _SlotListener | None = None
        self.entry: dict[str, Any] | None = ckpt.entry(self.db_path) if ckpt else None
        self.dirty = False
        # Since when (wall µs) the database or its LOG was missing: every LOG file
        # RocksDB made since then is read from its start.
        self.waited_since: int | None = None
        self._next_check = 0.0
        self._said: str | None = None
        self.missing_exit = False

    def _once(self, key: str, msg: str) -> None:
        if self._said != key:
            self._said = key
            _say(msg)

    def _mark_waiting(self) -> None:
        if self.waited_since is None:
            self.waited_since = time.time_ns() // 1000 - 1000  # 1 ms slack for the clock

    def _on_checkpoint(self, follower_ckpt: dict[str, Any]) -> None:
        # Called by the watch right after it delivered every event of the lines up
        # to this position: the decoder's state belongs to exactly this position.
        entry = dict(follower_ckpt)
        entry["decoder"] = self.watch.decoder.state() if self.watch is not None else None
        entry["open_jobs"] = self.slot_listener.state() if self.slot_listener is not None else []
        self.entry = entry
        self.dirty = True

    def _start(self) -> bool:
        from .watcher import start_watch

        log_path = info_log_path(self.db_path, self.args.log_dir)
        if not os.path.exists(log_path):
            self._mark_waiting()
            self._once("nolog", f"{self.db_path}: waiting for its LOG ({log_path})")
            return False
        if self.entry is not None:
            start: Any = self.entry
            how = "from checkpoint"
        elif self.waited_since is not None:
            # Created while we waited: its LOG (and any LOG.old.* made since) from the start.
            start = {"path": log_path, "wall_us": self.waited_since, "files": []}
            how = "from the start of its LOG"
        elif self.args.from_start:
            start, how = "start", "from the start of its LOG"
        else:
            start, how = "end", "from the end of its LOG"
        if isinstance(start, dict) and self.ckpt is not None:
            try:
                check_checkpoint(start)
            except ValueError as exc:
                raise UsageError(f"checkpoint {self.ckpt.path} is corrupt: {exc} (delete it to start afresh)") from None
        sl = _SlotListener(self.listener, sizeless=not self.args.stat_files)
        try:
            w = start_watch(self.db_path, log_path, sl, loop=None, start=start, stat_files=self.args.stat_files,
                            poll_interval=self.args.poll_interval, on_checkpoint=self._on_checkpoint)
        except (WatchError, OSError) as exc:
            self._once("err", f"{self.db_path}: cannot watch: {exc}")
            return False
        if isinstance(start, dict):
            try:
                w.decoder.restore(start.get("decoder"))
                sl.restore(start.get("open_jobs"), self.db_path)
            except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
                w.stop(final=False)
                where = self.ckpt.path if self.ckpt is not None else "the checkpoint"
                raise UsageError(f"checkpoint {where} is corrupt: bad decoder state for {self.db_path} "
                                 f"({type(exc).__name__}) (delete it to start afresh)") from None
        self.watch = w
        self.slot_listener = sl
        self.waited_since = None
        self._said = None
        _say(f"watching {self.db_path} (LOG {log_path}, {how})")
        return True

    def step(self, now: float) -> None:
        if self.watch is None:
            if now < self._next_check:
                return
            self._next_check = now + self.CHECK_EVERY
            if not os.path.isdir(self.db_path):
                self._mark_waiting()
                self._once("nodir", f"{self.db_path}: waiting for the database directory to exist")
                return
            self._start()
            if self.watch is None:
                return
        self.watch.poll()
        if now >= self._next_check:
            self._next_check = now + self.CHECK_EVERY
            if not os.path.isdir(self.db_path):
                self._lost()

    def _lost(self) -> None:
        # The writer is gone with its directory: deliver what is left, partial lines too.
        self.watch.stop(final=True)
        self.watch = None
        self.slot_listener = None
        self.entry = None  # a directory created again is a new database: read it from its start
        self.dirty = True
        self._mark_waiting()
        if self.args.exit_on_missing:
            _say(f"{self.db_path}: database directory disappeared; exiting (--exit-on-missing)")
            self.missing_exit = True
        else:
            self._said = "nodir"
            _say(f"{self.db_path}: database directory disappeared; waiting for it to come back")

    def stop(self) -> None:
        if self.watch is not None:
            # The server is still writing: a partial last line waits for the next run.
            self.watch.stop(final=False)



def _compose(args: argparse.Namespace, telemetry: Any, several_dbs: bool) -> tuple[Any, EventListener]:
    """The console printer (or None) and the one listener the events go to."""
    listeners: list[EventListener] = []
    printer = None
    if args.console:
        printer = LinePrinter(sys.stdout, show_db=several_dbs)
        listeners.append(printer)
    if telemetry.listener is not None:
        listeners.append(telemetry.listener)
    return printer, tee(listeners)

def cmd_watch(args: argparse.Namespace, environ: dict[str, str]) -> int:
    dbs: list[str] = []
    for d in args.db_dirs:
        _check_db_arg(d, args.log_dir)
        a = os.path.abspath(d)
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
    telemetry = Telemetry(args, environ, default_exporter="otlp")
    printer, listener = _compose(args, telemetry, several_dbs=len(dbs) > 1)
    slots = [DbSlot(d, args, listener, ckpt) for d in dbs]

    stop = threading.Event()
    got: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        got.append(signum)
        stop.set()
        # A second signal while draining ends the process the default way.
        signal.signal(signum, signal.SIG_DFL)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    last_save = 0.0
    code = 0

    def save_checkpoint(flush_ms: int = 2000) -> None:
        nonlocal last_save
        last_save = time.monotonic()
        if ckpt is None or not any(s.dirty for s in slots):
            return
        # Only what the exporters accepted is recorded as delivered.
        # (While the Collector is away this fails and the checkpoint stays where the
        # last delivered event was: a restart re-reads the rest from the LOG.)
        if not telemetry.flush(flush_ms):
            _log.warning("exporters did not take every record in time; checkpoint not advanced")
            return
        for s in slots:
            if s.dirty:
                ckpt.set(s.db_path, s.entry)
                s.dirty = False
        try:
            ckpt.save()
        except CheckpointError as exc:
            raise RuntimeFailure(str(exc)) from None

    try:
        while not stop.is_set():
            now = time.monotonic()
            for s in slots:
                s.step(now)
            if any(s.missing_exit for s in slots):
                code = 1
                break
            if now - last_save >= args.checkpoint_interval:
                save_checkpoint()
            stop.wait(args.poll_interval)
        for s in slots:
            s.stop()
        save_checkpoint(int(telemetry.shutdown_timeout * 1000))
    finally:
        telemetry.shutdown()
        if ckpt is not None:
            ckpt.close()
        for s, h in old.items():
            try:
                signal.signal(s, h)
            except (ValueError, TypeError):  # pragma: no cover
                pass
    if printer is not None:
        sys.stdout.write(printer.summary() + "\n")
    if got:
        _say(f"stopped by {signal.Signals(got[0]).name}; every event delivered and flushed")
    return code


# ---------------------------------------------------------------------------
# replay
# ---------------------------------------------------------------------------

_OLD_RE = re.compile(r"^(?P<base>.+)\.old\.(?P<micros>\d+)$")
_LOG_HEAD_RE = re.compile(rb"^\d{4}/\d{2}/\d{2}-\d{2}:\d{2}:\d{2}\.\d+ ")


def _log_files_of_dir(d: str) -> list[str]:
    names = os.listdir(d)
    logs = [n for n in names if n == "LOG" or n.startswith("LOG.old.")]
    if not logs:
        raise UsageError(f"{d}: no LOG or LOG.old.* file in this directory")
    return [os.path.join(d, n) for n in logs]


def _group_logs(paths: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(group key, files oldest first) in order of first mention; a group is one LOG name."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for p in paths:
        d, name = os.path.split(os.path.abspath(p))
        m = _OLD_RE.match(name)
        base, order = (m.group("base"), int(m.group("micros"))) if m else (name, 1 << 64)
        key = os.path.join(d, base)
        files = groups.setdefault(key, [])
        if all(path != p for _, path in files):
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

    def update(self, nbytes: int, label: str, force: bool = False) -> None:
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
                         f"{label[-40:]}\x1b[K")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


REPLAY_CHUNK = 512 << 10  # bytes per read: ~2,000 lines, one BatchInfo (what a busy watch poll delivers)


def _line_batches(f: Any, chunk: int = REPLAY_CHUNK) -> Iterator[tuple[list[bytes], int]]:
    """The lines of ``f`` in batches (without their line ends), and the bytes each batch read.

    A last line without a newline is a line too (replay reads finished files), as
    ``for line in f`` would give it.
    """
    tail = b""
    nbytes = 0
    while True:
        data = f.read(chunk)
        if not data:
            break
        nbytes += len(data)
        lines = (tail + data).split(b"\n")
        tail = lines.pop()
        if lines:
            if b"\r" in data:
                lines = [line.rstrip(b"\r") for line in lines]
            yield lines, nbytes
            nbytes = 0
    if tail or nbytes:
        yield ([tail] if tail else []), nbytes


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
    telemetry = Telemetry(args, environ, default_exporter="otlp", lag_metric=False)
    printer, listener = _compose(args, telemetry, several_dbs=len(groups) > 1)
    show = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    progress = _Progress(sum(sizes.values()), show)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()
        signal.signal(signum, signal.SIG_DFL)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    total_events = 0
    try:
        for key, files in groups:
            db_name = os.path.abspath(args.db_name) if args.db_name else _db_name_of(files, key)
            decoder = LogDecoder(db_name)  # history: no stat of files that may be long gone
            deliver(listener, WatchInfo(db_name, key, False, {}))
            for path in files:
                if stop.is_set():
                    break
                try:
                    f = open(path, "rb")
                except OSError as exc:
                    raise RuntimeFailure(f"{path}: cannot read: {exc.strerror or exc}") from None
                with f:
                    for lines, nbytes in _line_batches(f):
                        # One batch decode per chunk (the watcher's path: joined and scanned in C).
                        infos = decoder.feed_lines(lines)
                        for info in infos:
                            deliver(listener, info)
                        deliver(listener, BatchInfo(db_name, len(lines), len(infos)))
                        total_events += len(infos)
                        progress.update(nbytes, os.path.basename(path))
                        # Backpressure: read on only when the export queues have room,
                        # so a replay never drops, however slow the Collector.
                        accepting(listener, None)
                        if stop.is_set():
                            break
            deliver(listener, WatchInfo(db_name, key, True))
        progress.update(0, "", force=True)
    finally:
        progress.close()
        telemetry.shutdown()
        for s, h in old.items():
            signal.signal(s, h)
    if printer is not None:
        sys.stdout.write(printer.summary() + "\n")
    if args.verbose:
        _say(f"replayed {len(sizes)} LOG files, {total_events} events")
    return 0


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    environ = dict(os.environ)
    try:
        parser = _build_parser()
        args = parser.parse_args(argv)
        if not args.command:
            raise UsageError(f"a command is required: watch, replay or demo (see '{PROG} --help')")
        _resolve_env(args, environ)
        _setup_logging(getattr(args, "verbose", 0))
        if args.command == "watch":
            return cmd_watch(args, environ)
        if args.command == "replay":
            return cmd_replay(args, environ)
        from .demo import run_demo

        return run_demo(args, environ)
    except UsageError as exc:
        _say(f"error: {exc}")
        return 2
    except RuntimeFailure as exc:
        _say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

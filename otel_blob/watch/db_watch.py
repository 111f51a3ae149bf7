"""A Watch: one DB's LOG source -> decoder -> listener, on the caller's thread.

``poll()`` does one round of work; the shared :class:`~otel_blob.watch.loop.WatchLoop`
calls it when the LOG changes. ``drain()`` / ``stop()`` run on the caller's thread
and are how tests, the CLI and the instrumentation wait for events -- never a sleep.

Nothing here raises into the host program once a watch is running: listener
errors, malformed lines and file problems are counted in :attr:`Watch.stats`,
logged (rate-limited) and reported to listeners as :class:`LineSkippedInfo`.

The position of a watch (:meth:`Watch.checkpoint`) is the LOG position (the
follower's), the decoder's state at exactly that position (session, jobs, live
blob files) and the jobs begun and not finished there; a watch started from it
(``start=checkpoint``) delivers those jobs' begin events again, so a listener
puts the later blob events of a job into the job's span.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable

from ..decode.decoder import LogDecoder
from ..decode.info import BatchInfo, CompactionJobInfo, FlushJobInfo, JobInfo, LineSkippedInfo, RecoveryJobInfo, WatchInfo
from ..decode.rules import parse_line
from ..settings import DEFAULT_POLL_INTERVAL
from ..source.follower import LogFollower
from ..source.layout import WatchError, blob_files, file_size
from ..source.reader import LogProblem
from .listener import EventListener, accepting, deliver
from .stats import RateLimitedWarning, WatchStats

if TYPE_CHECKING:
    from .loop import WatchLoop

__all__ = ["DEFAULT_POLL_INTERVAL", "Watch"]

_log = logging.getLogger("otel_blob")

OPEN_JOBS_MAX = 256  # begun, unfinished jobs a checkpoint keeps (RocksDB runs a handful at once)
_JOB_TYPES = {cls.__name__: cls for cls in (FlushJobInfo, CompactionJobInfo, RecoveryJobInfo)}


class Watch:
    """Follows one DB's info LOG and delivers its events to one listener.

    Build it with :func:`otel_blob.watch` (or :func:`~otel_blob.watch.api.start_watch`).

    ``start``: ``"end"``, ``"start"`` (of the live LOG file) or a checkpoint from
    :meth:`checkpoint`. ``source``: what to read instead of following ``log_path``
    (a :class:`~otel_blob.source.files.LogFiles` for a replay). ``stat_files``: record
    blob file sizes from the disk (False: from the LOG only, so a re-export gives
    identical events). ``scan_dir``: list the blob files present at start (their
    deletions then carry a size). ``drain_wait``: how long ``drain()``/``stop()``
    wait in all for a listener's room (None: as long as it takes).
    ``on_checkpoint(position)`` is called right after every event of the lines up
    to ``position`` was delivered -- at most once every ``checkpoint_every`` seconds
    (a position costs a copy of the decoder's tables), and once more when the watch stops.
    """

    def __init__(
        self,
        db_path: str,
        log_path: str,
        listener: EventListener,
        *,
        start: str | dict[str, Any] = "end",
        blob_only: bool = False,
        blob_dir: Callable[[str | None], str] | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
        checkpoint_every: float = 0.0,
        stat_files: bool = True,
        scan_dir: bool = True,
        drain_wait: float | None = 10.0,
        source: Any = None,
    ) -> None:
        self.db_path = os.path.abspath(db_path)
        self.log_path = log_path
        self.listener = listener
        self.poll_interval = poll_interval
        self.drain_wait = drain_wait
        self.stats = WatchStats()
        self._on_checkpoint = on_checkpoint
        self._checkpoint_every = checkpoint_every
        self._next_checkpoint = 0.0
        self._warn = RateLimitedWarning()
        self._lock = threading.RLock()
        self._stopped = False
        self._loop: WatchLoop | None = None
        existing = blob_files(self.db_path) if scan_dir else {}
        if not stat_files:
            # Sizes only from the LOG: re-reading it (resume, replay) gives identical events.
            existing = dict.fromkeys(existing)
        self.decoder = LogDecoder(
            self.db_path, blob_dir=blob_dir, file_size=file_size if stat_files else None,
            blob_only=blob_only, known_blob_files=existing,
        )
        # Begun, unfinished jobs: what a checkpoint keeps so a resumed watch can begin them again.
        self._open_jobs: OrderedDict[tuple[str | None, int | None], JobInfo] = OrderedDict()
        self.follower = source if source is not None else LogFollower(log_path, start)
        # Starting mid-file: the header still tells the session id.
        if start == "end":
            for line in self.follower.head():
                parsed = parse_line(line)
                if parsed is not None and parsed.kind == "session":
                    self.decoder.feed(parsed)
        self._report_problems()
        self._deliver(WatchInfo(self.db_path, log_path, False, dict(existing)))
        if isinstance(start, dict):
            self._restore(start)

    # -- the work -------------------------------------------------------------

    def poll(self, final: bool = False) -> int:
        """Read what the LOG has now and deliver its events; returns how many."""
        with self._lock:
            if self._stopped:
                return 0
            return self._poll(final)

    def step(self, wait: float | None = 0.0) -> int:
        """One read of the source and the delivery of its events, after waiting up to
        ``wait`` seconds (None: as long as it takes) for the listener's room."""
        with self._lock:
            if self._stopped:
                return 0
            if not accepting(self.listener, wait):
                self.stats.paused += 1
                if wait == 0:
                    return 0
            return self._round(False)

    def _poll(self, final: bool, wait: float | None = 0.0) -> int:
        """Read until the source is not behind; ``wait``: how long in all to wait for the
        listener's room (0: not at all -- leave the LOG unread; None: as long as it takes)."""
        delivered = 0
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not accepting(self.listener, left if wait != 0 else 0.0):
                # Backpressure: the exporter is behind. The LOG keeps the lines; the
                # next poll reads them. (A drain waits, then reads anyway: drops
                # past that point are counted by the exporter side.)
                self.stats.paused += 1
                if wait == 0:
                    return delivered
            delivered += self._round(final)
            if not self.follower.behind:
                return delivered

    def _round(self, final: bool) -> int:
        """One read of the source and the delivery of what it held."""
        lines = self.follower.poll(final)
        self.stats.polls += 1
        n = 0
        if lines:
            n = self._process(lines)
            self._report_problems()
            self._deliver(BatchInfo(self.db_path, len(lines), n))
            if self._on_checkpoint is not None and time.monotonic() >= self._next_checkpoint:
                # Only now that every event of these lines was delivered.
                self._next_checkpoint = time.monotonic() + self._checkpoint_every
                self._on_checkpoint(self.checkpoint())
        else:
            self._report_problems()
        return n

    def _process(self, lines: list[bytes]) -> int:
        self.stats.lines += len(lines)
        infos = self.decoder.feed_lines(lines)  # the batch decode: most lines never reach Python code
        self.stats.blob_files_evicted = self.decoder.evicted
        for info in infos:
            self._deliver(info)
        return len(infos)

    def _deliver(self, info: Any) -> None:
        stats = self.stats
        if isinstance(info, LineSkippedInfo):
            info.log_path = info.log_path or self.follower.following
            stats.skipped[info.reason] += 1
            self._warn(info.reason, "skipped a LOG line of %s (%s): %s", self.db_path, info.reason, info.detail)
        elif not isinstance(info, (BatchInfo, WatchInfo)):
            stats.events += 1
            callback = info.callback
            if callback == "on_blob_file_created":
                stats.blob_files_created += 1
            elif callback == "on_blob_file_deleted" and info.ok:
                stats.blob_files_deleted += 1
            elif isinstance(info, JobInfo):
                self._track_job(info)
        if not deliver(self.listener, info):
            stats.listener_errors += 1

    def _track_job(self, info: JobInfo) -> None:
        key = (info.session_id, info.job_id)
        if info.finished:
            self._open_jobs.pop(key, None)
            return
        self._open_jobs[key] = info
        if len(self._open_jobs) > OPEN_JOBS_MAX:
            self._open_jobs.popitem(last=False)

    def _report_problems(self) -> None:
        problems: list[LogProblem] = self.follower.problems
        if not problems:
            return
        self.follower.problems = []
        for p in problems:
            self._deliver(LineSkippedInfo(self.db_path, p.reason, f"{p.path}: {p.detail}", p.path))

    # -- position -------------------------------------------------------------

    def checkpoint(self) -> dict[str, Any]:
        """Where this watch is: JSON-able, for ``start=`` of a new watch (see the module docstring)."""
        with self._lock:
            entry = dict(self.follower.checkpoint())
            entry["decoder"] = self.decoder.state()
            entry["open_jobs"] = [{"type": type(i).__name__, **dataclasses.asdict(i)} for i in self._open_jobs.values()]
            return entry

    def _restore(self, entry: dict[str, Any]) -> None:
        """Take back the decoder state and begin the open jobs of a checkpoint again.

        Raises ValueError naming what is wrong (a corrupt checkpoint is refused, not half-used)."""
        try:
            self.decoder.restore(entry.get("decoder"))
            for item in entry.get("open_jobs") or []:
                item = dict(item)
                cls = _JOB_TYPES.get(item.pop("type", ""))
                if cls is None:
                    continue
                try:
                    info = cls(**{**item, "db_name": self.db_path})
                except TypeError:
                    continue
                self._deliver(info)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            self._close(position=False)
            raise ValueError(f"bad decoder state for {self.db_path} ({type(exc).__name__})") from None

    # -- lifecycle --------------------------------------------------------------

    def drain(self) -> int:
        """Deliver everything the LOG holds now (to its current end); returns how many events.

        If the listener applies backpressure, waits up to ``drain_wait`` seconds in all for room.
        """
        with self._lock:
            if self._stopped:
                return 0
            return self._poll(False, self.drain_wait)

    def stop(self, final: bool = True) -> int:
        """Drain the LOG to its end, deliver every remaining event, stop watching.

        ``final`` (default): the writer is done -- hand out a partial last line
        too. Safe to call twice, from any thread, with the DB open or closed.
        """
        with self._lock:
            if self._stopped:
                return 0
            try:
                n = self._poll(final, self.drain_wait)
            finally:
                self._close()
        return n

    def _close(self, position: bool = True) -> None:
        if position and self._on_checkpoint is not None:
            self._on_checkpoint(self.checkpoint())
        self._stopped = True
        if self._loop is not None:
            self._loop.remove(self)
        self._deliver(WatchInfo(self.db_path, self.log_path, True))
        self.follower.close()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Watch {self.log_path} events={self.stats.events}{' stopped' if self._stopped else ''}>"


def check_db_dir(db_path: str) -> None:
    """Raise :class:`WatchError` unless ``db_path`` is a directory."""
    if not os.path.isdir(db_path):
        raise WatchError(f"{db_path}: no such database directory")

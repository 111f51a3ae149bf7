"""The one background loop: LOG follower -> decoder -> listeners.

A :class:`Watch` follows one DB's LOG. All watches of a process are polled by a
single daemon thread (:class:`WatchLoop`), so eight databases cost one thread,
not eight. ``Watch.drain()`` / ``Watch.stop()`` run on the caller's thread and
are how tests and the instrumentation wait for events -- never a sleep.

Nothing here raises into the host program once a watch is running: listener
errors, malformed lines and file problems are counted in :attr:`Watch.stats`,
logged (rate-limited) and reported to listeners as :class:`LineSkippedInfo`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from typing import Any, Callable

from .events import BatchInfo, LineSkippedInfo, LogDecoder, WatchInfo, parse_line
from .follower import LogFollower, LogProblem
from .layout import WatchError, blob_files, file_size
from .listener import EventListener, accepting, deliver
from .notify import KEPT, LogNotifier, make_notifier

__all__ = ["Watch", "WatchLoop", "WatchStats"]

_log = logging.getLogger("otel_blob")


class WatchStats:
    """Counters of one watch (read them any time; they only grow)."""

    def __init__(self) -> None:
        self.lines = 0
        self.events = 0
        self.blob_files_created = 0
        self.blob_files_deleted = 0
        self.listener_errors = 0
        self.polls = 0
        self.paused = 0  # polls that left the LOG unread because the listener had no room
        self.blob_files_evicted = 0  # live blob files the decoder forgot to stay bounded (LogDecoder.evicted)
        self.skipped: Counter[str] = Counter()  # reason -> count

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "events": self.events,
            "blob_files_created": self.blob_files_created,
            "blob_files_deleted": self.blob_files_deleted,
            "listener_errors": self.listener_errors,
            "paused": self.paused,
            "blob_files_evicted": self.blob_files_evicted,
            "skipped": dict(self.skipped),
        }


class _RateLimitedWarning:
    """Logs the first few occurrences of each kind, then one in every 1,000."""

    def __init__(self, first: int = 5) -> None:
        self.first = first
        self.seen: Counter[str] = Counter()

    def __call__(self, kind: str, msg: str, *args: Any) -> None:
        n = self.seen[kind] = self.seen[kind] + 1
        if n <= self.first or n % 1000 == 0:
            _log.warning(msg + (" (occurrence %d)" % n if n > self.first else ""), *args)


class Watch:
    """Follows one DB's info LOG and delivers its events to one listener.

    Build it with :func:`otel_blob.watch`. ``poll()`` does one round of work on
    the caller's thread; the shared :class:`WatchLoop` calls it periodically.
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
        poll_interval: float = 0.01,
        on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
        stat_files: bool = True,
        drain_wait: float = 10.0,
    ) -> None:
        self.db_path = os.path.abspath(db_path)
        self.log_path = log_path
        self.listener = listener
        self.poll_interval = poll_interval
        self.drain_wait = drain_wait
        self.stats = WatchStats()
        self._on_checkpoint = on_checkpoint
        self._warn = _RateLimitedWarning()
        self._lock = threading.RLock()
        self._stopped = False
        self._loop: WatchLoop | None = None
        existing = blob_files(self.db_path)
        if not stat_files:
            # Sizes only from the LOG: re-reading it (resume, replay) gives identical events.
            existing = dict.fromkeys(existing)
        self.decoder = LogDecoder(
            self.db_path, blob_dir=blob_dir, file_size=file_size if stat_files else None,
            blob_only=blob_only, known_blob_files=existing,
        )
        self.follower = LogFollower(log_path, start)
        # Starting mid-file: the header still tells the session id.
        if start == "end":
            for line in self.follower.head():
                parsed = parse_line(line)
                if parsed is not None and parsed.kind == "session":
                    self.decoder.feed(parsed)
        self._report_problems()
        self._deliver(WatchInfo(self.db_path, log_path, False, dict(existing)))

    # -- the work -------------------------------------------------------------

    def poll(self, final: bool = False) -> int:
        """Read what the LOG has now and deliver its events; returns how many."""
        with self._lock:
            if self._stopped:
                return 0
            return self._poll(final)

    def _poll(self, final: bool, wait: float = 0.0) -> int:
        """One round of reading; ``wait``: how long in all a drain may wait for the listener's room."""
        delivered = 0
        deadline = time.monotonic() + wait
        while True:
            if not accepting(self.listener, max(0.0, deadline - time.monotonic()) if wait else 0.0):
                # Backpressure: the exporter is behind. The LOG keeps the lines; the
                # next poll reads them. (A drain waits, then reads anyway: drops
                # past that point are counted by the exporter side.)
                self.stats.paused += 1
                if not wait:
                    return delivered
            lines = self.follower.poll(final)
            self.stats.polls += 1
            if lines:
                n = self._process(lines)
                delivered += n
                self._report_problems()
                self._deliver(BatchInfo(self.db_path, len(lines), n))
            else:
                self._report_problems()
            if self._on_checkpoint is not None and lines:
                # Only now that every event of these lines was delivered.
                self._on_checkpoint(self.follower.checkpoint())
            if not self.follower.behind:
                return delivered

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
            self._warn(info.reason, "otel_blob: skipped a LOG line of %s (%s): %s", self.db_path, info.reason, info.detail)
        elif not isinstance(info, (BatchInfo, WatchInfo)):
            stats.events += 1
            callback = info.callback
            if callback == "on_blob_file_created":
                stats.blob_files_created += 1
            elif callback == "on_blob_file_deleted" and info.ok:
                stats.blob_files_deleted += 1
        if not deliver(self.listener, info):
            stats.listener_errors += 1

    def _report_problems(self) -> None:
        problems: list[LogProblem] = self.follower.problems
        if not problems:
            return
        self.follower.problems = []
        for p in problems:
            self._deliver(LineSkippedInfo(self.db_path, p.reason, f"{p.path}: {p.detail}", p.path))

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
                self._stopped = True
                if self._loop is not None:
                    self._loop.remove(self)
                self._deliver(WatchInfo(self.db_path, self.log_path, True))
                self.follower.close()
        return n

    @property
    def stopped(self) -> bool:
        return self._stopped

    def checkpoint(self) -> dict[str, Any]:
        with self._lock:
            return self.follower.checkpoint()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Watch {self.log_path} events={self.stats.events}{' stopped' if self._stopped else ''}>"


class WatchLoop:
    """One daemon thread serving every registered watch.

    Between rounds it sleeps until a watched LOG changes (inotify, see
    :mod:`otel_blob.notify`) -- at most ``NOTIFY_FALLBACK`` s -- whenever every
    watch is simply following its live LOG to the end; otherwise (no inotify, a
    rotation in progress, a renamed file still open, a backlog, backpressure) it
    polls every ``poll_interval``.
    """

    NOTIFY_FALLBACK = 0.5  # s: the longest sleep on a notifier (a safety net, not the rhythm)

    def __init__(self, notify: bool = True) -> None:
        self._watches: list[Watch] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._use_notify = notify
        self._notifier: LogNotifier | None = None

    def add(self, watch: Watch) -> None:
        with self._lock:
            self._watches.append(watch)
            watch._loop = self
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="otel_blob-watcher", daemon=True)
                self._thread.start()
        self._wake_up()

    def _wake_up(self) -> None:
        self._wake.set()
        notifier = self._notifier
        if notifier is not None:
            notifier.wake()

    def remove(self, watch: Watch) -> None:
        with self._lock:
            if watch in self._watches:
                self._watches.remove(watch)

    def watches(self) -> list[Watch]:
        with self._lock:
            return list(self._watches)

    def _run(self) -> None:
        notifier = make_notifier() if self._use_notify else None
        self._notifier = notifier
        try:
            while True:
                with self._lock:
                    watches = list(self._watches)
                    if not watches:
                        self._thread = None
                        return
                interval = min(w.poll_interval for w in watches)
                quiet = self._round(watches, notifier)
                if notifier is None:
                    self._wake.wait(interval)
                    self._wake.clear()
                else:
                    notifier.wait(max(interval, self.NOTIFY_FALLBACK) if quiet else interval)
        finally:
            self._notifier = None
            if notifier is not None:
                notifier.close()

    def _round(self, watches: list[Watch], notifier: LogNotifier | None) -> bool:
        """Poll every watch once; True if the notifier covers what each can do next."""
        quiet = notifier is not None
        for w in watches:
            # A watch being drained or stopped by another thread: skip this round.
            if not w._lock.acquire(blocking=False):
                quiet = False
                continue
            try:
                if w._stopped:
                    continue
                paused = w.stats.paused
                w._poll(False)
                if notifier is not None:
                    ino = w.follower.live_inode if w.stats.paused == paused else None
                    # ADDED: a write between the read above and now may have no event: read again soon.
                    if notifier.watch(w.log_path, ino) != KEPT:
                        quiet = False
            except Exception:  # never let one watch kill the loop
                _log.exception("otel_blob: polling %s failed", w.log_path)
                quiet = False
            finally:
                w._lock.release()
        if notifier is not None:
            live = {w.log_path for w in watches}
            for path in notifier.paths():
                if path not in live:
                    notifier.forget(path)
        return quiet

    def stop_all(self) -> None:
        for w in self.watches():
            w.stop()

    def _after_fork_in_child(self) -> None:
        # The child has no watcher thread and must not export its parent's events
        # twice: it forgets the parent's watches (it may watch its own).
        self._watches = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        self._notifier = None  # the parent's (its descriptors die with the child)
        self._pid = os.getpid()


default_loop = WatchLoop()
os.register_at_fork(after_in_child=default_loop._after_fork_in_child)


def start_watch(
    db_path: str,
    log_path: str,
    listener: EventListener,
    *,
    loop: WatchLoop | None = default_loop,
    **kwargs: Any,
) -> Watch:
    """Build a watch and register it with the loop (``loop=None``: poll it yourself)."""
    if not os.path.isdir(db_path):
        raise WatchError(f"{db_path}: no such database directory")
    w = Watch(db_path, log_path, listener, **kwargs)
    if loop is not None:
        loop.add(w)
    return w

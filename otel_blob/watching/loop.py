"""The one background loop: every watch of a process, one daemon thread.

Eight databases cost one thread, not eight. Between rounds the thread sleeps
until a watched LOG changes (inotify, :mod:`otel_blob.source.notify`) whenever
every watch is simply following its live LOG to the end; otherwise (no inotify,
a rotation in progress, a renamed file still open, a backlog, backpressure) it
polls every ``poll_interval``.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable

from ..source.notify import KEPT, LogNotifier, make_notifier, wait_readable
from .db_watch import Watch

__all__ = ["WatchLoop", "default_loop"]

_log = logging.getLogger("otel_blob")


class WatchLoop:
    """One daemon thread serving every registered watch (see the module docstring).

    On a notifier it sleeps at most ``NOTIFY_FALLBACK`` s: a safety net, not the rhythm.
    ``call_soon(fn)`` runs ``fn`` on the loop's thread before its next round (work an
    application thread hands over instead of doing it itself). A loop made with
    ``before_round`` calls it at the start of every round and also wakes when one of
    ``wake_fds`` is readable; it runs until :meth:`stop`, watches or not (the helper
    process: its messages are read between two rounds, never during one).
    """

    NOTIFY_FALLBACK = 0.5  # s: the longest sleep on a notifier (a safety net, not the rhythm)

    def __init__(self, notify: bool = True, *, before_round: Callable[[], None] | None = None,
                 wake_fds: tuple[int, ...] = ()) -> None:
        self._watches: list[Watch] = []
        self._pending: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        # Held while handed-over tasks run: a drain on another thread (the exit) waits for the
        # task the loop's thread has taken and not finished -- a watch being built is not missed.
        self._tasks_lock = threading.Lock()
        self._in_flight = 0  # tasks taken from _pending and not finished (under _lock)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._use_notify = notify
        self._notifier: LogNotifier | None = None
        self._before_round = before_round
        self._wake_fds = wake_fds
        self._persistent = before_round is not None
        self._stopping = False

    def add(self, watch: Watch) -> None:
        with self._lock:
            self._watches.append(watch)
            watch._loop = self
            self._ensure_thread()
        self._wake_up()

    def call_soon(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._pending.append(fn)
            self._ensure_thread()
        self._wake_up()

    def run_pending(self) -> None:
        """Run what was handed over and not run yet, on the calling thread (a drain at exit);
        a task another thread is running is waited for."""
        with self._tasks_lock:
            with self._lock:
                tasks, self._pending = self._pending, []
                self._in_flight += len(tasks)
            for fn in tasks:
                try:
                    fn()
                except Exception:
                    _log.exception("a task of the watcher failed")
                finally:
                    with self._lock:
                        self._in_flight -= 1

    def pending(self) -> int:
        """Tasks handed over and not finished (waiting or running)."""
        with self._lock:
            return len(self._pending) + self._in_flight

    def _ensure_thread(self) -> None:  # under self._lock
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="otel_blob-watcher", daemon=True)
            self._thread.start()

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

    def stop(self) -> None:
        """End the thread after its current round (a persistent loop)."""
        self._stopping = True
        self._wake_up()

    def is_running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        notifier = make_notifier() if self._use_notify else None
        self._notifier = notifier
        try:
            while not self._stopping:
                self.run_pending()
                if self._before_round is not None:
                    self._before_round()
                with self._lock:
                    watches = list(self._watches)
                    if not watches and not self._pending and not self._persistent:
                        self._thread = None
                        return
                interval = min((w.poll_interval for w in watches), default=self.NOTIFY_FALLBACK)
                quiet = self._round(watches, notifier) if watches else True
                if self._stopping or self.pending():
                    continue
                self._sleep(notifier, max(interval, self.NOTIFY_FALLBACK) if quiet else interval)
        finally:
            with self._lock:
                if self._notifier is notifier:  # (a new thread may have started and set its own)
                    self._notifier = None
            if notifier is not None:
                notifier.close()

    def _sleep(self, notifier: LogNotifier | None, timeout: float) -> None:
        if notifier is not None:
            notifier.wait(timeout, self._wake_fds)
        elif self._wake_fds:
            wait_readable(self._wake_fds, min(timeout, 0.05))
        else:
            self._wake.wait(timeout)
            self._wake.clear()

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
                _log.exception("polling %s failed", w.log_path)
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
        self._pending = []
        self._lock = threading.Lock()
        self._tasks_lock = threading.Lock()
        self._in_flight = 0
        self._wake = threading.Event()
        self._thread = None
        self._notifier = None  # the parent's (its descriptors die with the child)


default_loop = WatchLoop()
os.register_at_fork(after_in_child=default_loop._after_fork_in_child)

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

from ..source.notify import KEPT, LogNotifier, make_notifier
from .db_watch import Watch

__all__ = ["WatchLoop", "default_loop"]

_log = logging.getLogger("otel_blob")


class WatchLoop:
    """One daemon thread serving every registered watch (see the module docstring).

    On a notifier it sleeps at most ``NOTIFY_FALLBACK`` s: a safety net, not the rhythm.
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
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        self._notifier = None  # the parent's (its descriptors die with the child)
        self._pid = os.getpid()


default_loop = WatchLoop()
os.register_at_fork(after_in_child=default_loop._after_fork_in_child)

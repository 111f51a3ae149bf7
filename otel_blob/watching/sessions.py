"""The DB sessions a process follows for the instrumentation: one session-bound watch per open.

An ``Rdict`` open starts a DB session and a new LOG; its watch reads that
session from its first LOG file (:mod:`.session_start`) and ends by itself when
RocksDB logs the session's ``Shutdown complete`` -- or when a newer session
replaces it -- however long after ``close()`` that is (another handle may keep
the database open). Nothing waits for it: the watch lives on the loop thread.

The instrumentation's thread mode and the helper process both use
:class:`SessionWatches`; the helper also resumes a session from a position
(:class:`~otel_blob.watching.positions.Positions`) when it takes over.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Hashable

from ..source.identity import FileIdentity
from ..source.layout import WatchError
from .db_watch import Watch
from .listener import EventListener
from .loop import WatchLoop
from .session_start import session_position

__all__ = ["SessionWatches"]

_log = logging.getLogger("otel_blob")


class SessionWatches:
    """Session-bound watches, started on ``loop``'s thread, delivering to ``listener``.

    ``on_checkpoint(key, position)`` receives each watch's positions (the last one
    when it stops carries ``"stopped": True``). ``on_read()`` is called after every read
    of a LOG that returned lines, before they are decoded (see :class:`Watch`).
    """

    def __init__(self, listener: EventListener, loop: WatchLoop, *, poll_interval: float,
                 on_checkpoint: Callable[[Hashable, dict[str, Any]], None] | None = None,
                 checkpoint_every: float = 0.2, on_read: Callable[[], None] | None = None) -> None:
        self.listener = listener
        self.loop = loop
        self.poll_interval = poll_interval
        self._on_checkpoint = on_checkpoint
        self._checkpoint_every = checkpoint_every
        self._on_read = on_read
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a watch stopped
        self._watches: dict[Hashable, Watch] = {}
        self._sessions: dict[str, Watch] = {}  # the DB session each watch follows, by session id

    def open(self, key: Hashable, db_path: str, log_path: str, anchor: FileIdentity | None = None,
             position: dict[str, Any] | None = None) -> None:
        """Follow the session of a database just opened (``anchor``: its live LOG then), or resume
        one from ``position``. The watch is built on the loop's thread: the caller does not wait."""
        self.loop.call_soon(lambda: self._start(key, db_path, log_path, anchor, position))

    def _start(self, key: Hashable, db_path: str, log_path: str, anchor: FileIdentity | None,
               position: dict[str, Any] | None) -> None:
        # The session a resumed watch follows is in its position (the decoder's state): known, a
        # later open of the same session (read-only beside the primary) is not followed twice.
        session = ((position.get("decoder") or {}).get("session_id")
                   if isinstance(position, dict) and isinstance(position.get("decoder"), dict) else None)
        if position is None:
            position, found = session_position(log_path, anchor)
            session = found.session_id
            with self._lock:
                other = self._sessions.get(session) if session is not None else None
                followed = other is not None and not other.stopped
            if followed:
                # Followed already: an open that started no session of its own (read-only or
                # secondary beside this process's primary). Nothing to deliver under this key:
                # say it is done, or whoever waits for it (the helper's application) waits forever.
                if self._on_checkpoint is not None:
                    self._on_checkpoint(key, {"stopped": True})
                return
            if not found.first_on_disk:
                _log.warning("watching %s: %s", db_path, found.describe())
        report = self._on_checkpoint

        def on_checkpoint(position: dict[str, Any]) -> None:
            if report is not None:
                report(key, position)
            if position.get("stopped"):
                with self._changed:
                    self._changed.notify_all()

        try:
            w = Watch(db_path, log_path, self.listener, start=position, end_with_session=True,
                      poll_interval=self.poll_interval, on_checkpoint=on_checkpoint,
                      checkpoint_every=self._checkpoint_every, on_read=self._on_read)
        except (WatchError, OSError, ValueError) as exc:
            _log.warning("cannot watch %s: %s", db_path, exc)
            if report is not None:  # done with it (or whoever waits for it waits forever)
                report(key, {"stopped": True})
            return
        with self._lock:
            self._watches[key] = w
            if session is not None:
                self._sessions[session] = w
        self.loop.add(w)

    def running(self) -> list[Watch]:
        """The watches whose session has not ended (forgets the others)."""
        with self._lock:
            for key in [k for k, w in self._watches.items() if w.stopped]:
                del self._watches[key]
            for session in [s for s, w in self._sessions.items() if w.stopped]:
                del self._sessions[session]
            return list(self._watches.values())

    def idle(self) -> bool:
        """Every session opened so far ended and was delivered (nothing pending)."""
        return not self.loop.pending() and not self.running()

    def wait_change(self, timeout: float) -> None:
        """Sleep until a watch stops, at most ``timeout`` s."""
        with self._changed:
            self._changed.wait(timeout)

    def stop_all(self, final: bool) -> list[Watch]:
        """Deliver what every LOG holds now and stop; returns the watches whose session was
        still open (what RocksDB logs for them from now on is not followed)."""
        self.loop.run_pending()
        still_open = []
        for w in self.running():
            try:
                w.stop(final=final)
            except Exception:
                _log.exception("draining %s failed", w.log_path)
            if w.stats.open_at_stop:
                still_open.append(w)
        with self._lock:
            self._watches.clear()
            self._sessions.clear()
        return still_open

    def forget(self) -> None:
        """In a forked child: the parent's sessions are the parent's."""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._watches = {}
        self._sessions = {}

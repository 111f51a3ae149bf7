"""A Watch: one DB's LOG source -> decoder -> listener, on the caller's thread.

``poll()`` does one round of work; the shared :class:`~otel_blob.watching.loop.WatchLoop`
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
from typing import TYPE_CHECKING, Any, Callable

from ..decode.decoder import LogDecoder
from ..decode.info import (
    BatchInfo,
    CompactionJobInfo,
    FlushJobInfo,
    LineSkippedInfo,
    RecoveryJobInfo,
    SessionInfo,
    WatchInfo,
)
from ..decode.rules import parse_line
from ..settings import DEFAULT_POLL_INTERVAL
from ..source.follower import LogFollower
from ..source.identity import FileIdentity
from ..source.layout import WatchError, blob_files, file_size
from ..source.reader import LogProblem
from .listener import EventListener, accepting, deliver
from .session_start import session_position
from .stats import RateLimitedWarning, WatchStats

if TYPE_CHECKING:
    from .loop import WatchLoop

__all__ = ["DEFAULT_POLL_INTERVAL", "Watch"]

_log = logging.getLogger("otel_blob")

_JOB_TYPES = {cls.__name__: cls for cls in (FlushJobInfo, CompactionJobInfo, RecoveryJobInfo)}
# How a skip is said (db path, reason, detail): a bad line, or a LOG file that cannot be followed --
# the latter with what to do about it.
_SKIP_TEXT = "skipped a LOG line of %s (%s): %s"
_PROBLEM_TEXT = {
    "log_unreadable": "cannot read the LOG of %s (%s): %s -- run as a user that may read it (the database's "
                      "owner or group); it is followed as soon as it can be read",
    "not_a_file": "the LOG of %s is refused (%s): %s -- a symbolic link, directory or device is never followed",
    "log_missing": "no LOG for %s (%s): %s -- waiting for it (a LOG elsewhere: RocksDB's db_log_dir)",
    "file_lost": "LOG lines of %s are lost (%s): %s",
}


class Watch:
    """Follows one DB's info LOG and delivers its events to one listener.

    Build it with :func:`otel_blob.watch` (or :func:`~otel_blob.watching.api.start_watch`).

    ``start``: ``"end"`` (of the live LOG), ``"session"`` (the first LOG file of the
    session of ``anchor``, by default of the live LOG: see :mod:`.session_start`),
    ``"start"`` (of the live LOG file) or a checkpoint from :meth:`checkpoint`.
    ``end_with_session``: the watch belongs to one DB session (the one it starts in)
    and ends by itself when RocksDB logs that session's ``Shutdown complete``, or when a
    newer session replaces it -- the life of a database as RocksDB logs it, not
    the Python call that closed it. ``source``: what to read instead of following ``log_path``
    (a :class:`~otel_blob.source.files.LogFiles` for a replay). ``stat_files``: record
    blob file sizes from the disk (False: from the LOG only, so a re-export gives
    identical events). ``scan_dir``: list the blob files present at start (their
    deletions then carry a size). ``drain_wait``: how long ``drain()``/``stop()``
    wait in all for a listener's room (None: as long as it takes).
    ``on_checkpoint(position)`` is called right after every event of the lines up
    to ``position`` was delivered -- at most once every ``checkpoint_every`` seconds
    (a position costs a copy of the decoder's tables), and once more when the watch stops.
    ``on_read()`` is called after each read that returned lines and before they are
    decoded: whatever was said elsewhere before RocksDB wrote them is known by then (the
    helper process reads its application's messages there -- the context of a
    ``flush()`` the application began before RocksDB logged the job).
    """

    def __init__(
        self,
        db_path: str,
        log_path: str,
        listener: EventListener,
        *,
        start: str | dict[str, Any] = "end",
        anchor: FileIdentity | None = None,
        end_with_session: bool = False,
        blob_only: bool = False,
        blob_dir: Callable[[str | None], str] | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
        checkpoint_every: float = 0.0,
        on_read: Callable[[], None] | None = None,
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
        self._on_read = on_read
        self._checkpoint_every = checkpoint_every
        self._next_checkpoint = 0.0
        self._checkpoint_owed = False  # lines were delivered since the last position given
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
        self._end_with_session = end_with_session
        self.ended = False  # the watch's session ended (end_with_session): it stopped by itself
        if source is not None:
            self.follower = source
        elif start == "session":
            position, found = session_position(log_path, anchor)
            self.follower = LogFollower(log_path, position, file_at_a_time=end_with_session)
            (_log.warning if not found.first_on_disk else _log.debug)("watching %s: %s", self.db_path, found.describe())
        else:
            self.follower = LogFollower(log_path, start, file_at_a_time=end_with_session)
        # Starting mid-file: the header still tells the session id.
        if start == "end":
            for line in self.follower.head():
                parsed = parse_line(line)
                if parsed is not None and parsed.kind == "session":
                    self.decoder.feed(parsed)
            if self.decoder.session_id is not None:
                _log.info("watching %s from the end of its LOG: what session %s logged before is not read "
                          "(start from the session's start to read it)", self.db_path, self.decoder.session_id)
        self._report_problems()
        self._deliver(WatchInfo(self.db_path, log_path, False, dict(existing)))
        if isinstance(start, dict):
            self._restore(start)
        # The session this watch belongs to (end_with_session): known now, or from the first header read.
        self._session = self.decoder.session_id

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
            if self.ended or not self.follower.behind:
                return delivered

    def _round(self, final: bool) -> int:
        """One read of the source and the delivery of what it held (the watch ends here
        when its session did)."""
        n = self._read(final)
        if self.ended and not self._stopped:
            self._close()
        return n

    def _read(self, final: bool) -> int:
        lines = self.follower.poll(final)
        self.stats.polls += 1
        n = 0
        if lines:
            if self._on_read is not None:
                self._on_read()
            n = self._process(lines)
            self._report_problems()
            self._deliver(BatchInfo(self.db_path, len(lines), n))
            self._checkpoint_owed = True
        else:
            self._report_problems()
        # Only now that every event of the lines read so far was delivered. Also after a read
        # that found nothing new: the last lines of a burst, read within ``checkpoint_every`` of
        # the previous position, get theirs once the LOG is quiet -- a resume from the last
        # position (the helper's application after a SIGKILL, the CLI's checkpoint) then
        # repeats nothing delivered before the quiet.
        if self._checkpoint_owed and self._on_checkpoint is not None and time.monotonic() >= self._next_checkpoint:
            self._checkpoint_owed = False
            self._next_checkpoint = time.monotonic() + self._checkpoint_every
            self._on_checkpoint(self.checkpoint())
        return n

    def _process(self, lines: list[bytes]) -> int:
        self.stats.lines += len(lines)
        infos = self.decoder.feed_lines(lines)  # the batch decode: most lines never reach Python code
        self.stats.blob_files_evicted = self.decoder.evicted
        if self._end_with_session:
            infos = self._within_session(infos)
        for info in infos:
            self._deliver(info)
        return len(infos)

    def _within_session(self, infos: list[Any]) -> list[Any]:
        """The events of this watch's session: up to its end (``Shutdown complete``, or the
        header of a newer session, which is the next watch's business)."""
        for i, info in enumerate(infos):
            if type(info) is not SessionInfo:
                continue
            if not info.ended:
                if self._session is None:
                    self._session = info.session_id
                elif info.session_id != self._session:
                    self.ended = True
                    return infos[:i]
            elif info.session_id == self._session:
                self.ended = True
                return infos[:i + 1]
        return infos

    def _deliver(self, info: Any) -> None:
        stats = self.stats
        if isinstance(info, LineSkippedInfo):
            info.log_path = info.log_path or self.follower.following
            stats.skipped[info.reason] += 1
            self._warn(info.reason, _PROBLEM_TEXT.get(info.reason, _SKIP_TEXT), self.db_path, info.reason, info.detail)
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

    # -- position -------------------------------------------------------------

    def checkpoint(self) -> dict[str, Any]:
        """Where this watch is: JSON-able, for ``start=`` of a new watch (see the module docstring)."""
        with self._lock:
            entry = dict(self.follower.checkpoint())
            entry["decoder"] = self.decoder.state()
            entry["open_jobs"] = [{"type": type(i).__name__, **dataclasses.asdict(i)} for i in self.decoder.open_jobs.values()]
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
                self.decoder.open_jobs[(info.session_id, info.job_id)] = info
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

    def stop(self, final: bool = True, timeout: float = 0.0) -> int:
        """Drain the LOG to its end, deliver every remaining event, stop watching.

        ``timeout``: how long to wait, at most, for RocksDB to log the end of the DB
        session being read (``Shutdown complete``). After ``Rdict.close()`` RocksDB may
        go on -- and log blob file events -- until the last other handle (a column
        family, an iterator, a snapshot) is dropped; with ``timeout=0`` (default) the
        watch stops at what the LOG holds now. ``stats.open_at_stop`` says whether the
        session was still open when the watch stopped; giving up after a timeout is
        logged. ``final`` (default): the writer is done -- hand out a partial last
        line too. Safe to call twice, from any thread, with the DB open or closed.
        """
        with self._lock:
            if self._stopped:
                return 0
            try:
                n = self._poll(False, self.drain_wait)
                deadline = time.monotonic() + timeout
                while not self._stopped and self._session_open() and time.monotonic() < deadline:
                    # The LOG is a file another process (or RocksDB's threads) writes: nothing to await.
                    time.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))
                    n += self._poll(False, self.drain_wait)
                if not self._stopped:
                    n += self._poll(final, self.drain_wait)
                self.stats.open_at_stop = self._session_open()
                if timeout > 0 and self.stats.open_at_stop:
                    _log.warning("stopped watching %s after waiting %.1f s: RocksDB still has session %s open "
                                 "(another handle -- a column family, an iterator -- keeps it); what it logs "
                                 "from now on is not delivered", self.db_path, timeout, self.decoder.session_id)
            finally:
                self._close()
        return n

    def _session_open(self) -> bool:
        """The session being read has not logged its end (and is known)."""
        return self.decoder.session_id is not None and not self.decoder.session_closed and not self.ended

    def _close(self, position: bool = True) -> None:
        if self._stopped:
            return
        if position and self._on_checkpoint is not None:
            # The last position: everything this watch will ever deliver is before it.
            self._on_checkpoint({**self.checkpoint(), "stopped": True})
        self._stopped = True
        self.stats.following_at_stop = self.follower.following is not None
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

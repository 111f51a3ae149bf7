"""Follow one RocksDB info LOG across rolls, reopens and deletions. Stdlib only.

RocksDB writes ``<name>`` (``LOG``, or ``<flattened db path>_LOG`` under
``db_log_dir``), renames it to ``<name>.old.<epoch micros>`` when it rolls the
file or reopens the DB, and may delete old files (``keep_log_file_num``). The
follower:

* identifies a file by what it is -- device, inode and its first line (which
  starts with a microsecond timestamp) -- never by its name;
* keeps every file it follows open, so a renamed or even deleted file is still
  read to its end. A file renamed away (*retired*: a newer file is the live
  LOG) is closed once it has been read to its end on two polls without growing
  for ``settle`` seconds (RocksDB's old logger may still flush a last line into
  it just after the rename), or after ``grace`` seconds in any case; at most
  ``max_retired_open`` fully read retired files stay open (the oldest go first),
  so a LOG rolling hundreds of times a second does not pile up descriptors;
* hands out only complete lines (a partial last line waits for its newline; at
  ``final`` it is handed out as is);
* after a rename, reads every file it has not read yet, oldest first, before the
  live one;
* reports what it cannot do (a missing LOG, an unreadable one, a line over the
  size cap, a file deleted before it could be read) as :attr:`problems` instead
  of raising: the caller counts and logs them. A LOG that disappears while
  followed is reported as ``log_missing`` only once it has stayed missing for
  ``missing_grace`` seconds over at least two polls (RocksDB renames ``LOG``
  before it creates the new one: that instant is not a missing LOG), or at a
  ``final`` poll; once per episode.

Its position (:meth:`checkpoint`) is a JSON-able dict; a follower built from one
resumes exactly there, also when the files were renamed meanwhile.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from typing import Any

from .identity import FileIdentity, check_position, identity_of
from .layout import split_log_name
from .reader import LogFile, LogProblem, describe

__all__ = ["LogFollower", "LogProblem"]


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path, follow_symlinks=False)
    except OSError:
        return None


def _dir_key(path: str) -> tuple[int, int] | None:
    st = _lstat(path)
    return (st.st_dev, st.st_ino) if st is not None else None


# RocksDB's last line of a DB session: "[db/db_impl/db_impl.cc:709] Shutdown complete".
_SHUTDOWN_TAIL = re.compile(rb"\] Shutdown complete\s*$")


def _ends_with_shutdown(fd: int) -> bool:
    """Is the last line of the open file RocksDB's ``Shutdown complete``?"""
    try:
        size = os.fstat(fd).st_size
        tail = os.pread(fd, 256, max(0, size - 256))
    except OSError:
        return False
    return bool(_SHUTDOWN_TAIL.search(tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]))


class LogFollower:
    """Follows ``log_path`` (the live name of a RocksDB info LOG).

    ``start`` is ``"start"`` (the live file from its first byte), ``"end"``
    (from its end: only what is written from now on) or a dict from
    :meth:`checkpoint` (one of another shape raises ValueError: see
    :func:`~otel_blob.source.identity.check_position`).

    ``file_at_a_time``: a poll that got lines from one file returns them before it reads
    the next (:attr:`behind` says more may wait). A watch that ends with its DB session
    stops at the session's last file instead of reading the LOGs of every later session
    first (a reader many sessions behind would read them all once per session).
    """

    def __init__(
        self,
        log_path: str,
        start: str | dict[str, Any] = "end",
        *,
        max_line: int = 1 << 20,
        grace: float = 5.0,
        max_batch: int = 8 << 20,
        settle: float = 0.1,
        max_retired_open: int = 64,
        missing_grace: float = 0.2,
        file_at_a_time: bool = False,
    ) -> None:
        self.path = os.path.abspath(log_path)
        self.dir, self.base = os.path.split(self.path)
        self._dir_prefix = os.path.join(self.dir, "")
        self.max_line = max_line
        self.grace = grace
        self.max_batch = max_batch
        self.settle = settle
        self.max_retired_open = max_retired_open
        self.missing_grace = missing_grace
        self.file_at_a_time = file_at_a_time
        self.problems: list[LogProblem] = []
        self.behind = False  # the last poll stopped at max_batch, not at EOF
        self.bytes_read = 0
        # Wall time (µs) before the last look at the directory: a LOG.old.<µs> newer
        # than this may hold lines never read (the checkpoint's "wall_us").
        self._looked_us = time.time_ns() // 1000
        self._current: LogFile | None = None
        self._retired: list[LogFile] = []
        # Files read to the end or older than where we started: never read again.
        self._done: dict[tuple[int, int], FileIdentity] = {}  # by (dev, ino)
        # Files older than where we started, known as done by their stat alone (reading the first
        # line of each of a thousand rolled LOGs at every start would cost more than the start):
        # (dev, ino) -> ctime. A new file that got a deleted one's inode has another ctime.
        self._done_ctime: dict[tuple[int, int], int] = {}
        # Files older than where a resume starts, known as done by their name and inode alone
        # (no stat: a DB that was opened a thousand times has a thousand rolled LOGs). If such a
        # file is ever looked at more closely, something changed: it is read.
        self._done_by_name: set[tuple[int, int]] = set()
        self._missing_reported = False
        # The live LOG missing while following: since when (monotonic), in how many polls, why.
        self._missing_since: float | None = None
        self._missing_polls = 0
        self._listing_error: OSError | None = None
        # (reason, path) of problems opening a file, already reported: once, not at every poll.
        self._open_errors: set[tuple[str, str]] = set()
        # path -> (inode hint, (dev, ino)) of listed files we follow or finished.
        self._names: dict[str, tuple[int, tuple[int, int]]] = {}
        self._unplaced: LogFile | None = None  # the last live file, while no new live file is open
        self._dir_id = _dir_key(self.dir)  # the LOG directory itself: a new one is a new database
        if isinstance(start, dict):
            self._resume(start)
        else:
            if start not in ("start", "end"):
                raise ValueError(f"start must be 'start', 'end' or a checkpoint, not {start!r}")
            self._begin(at_end=start == "end")

    # -- names ------------------------------------------------------------

    def _listing(self) -> list[tuple[int, str, int]]:
        """(order, path, inode hint) of this LOG's files, oldest first; the live name last.

        The hint is the directory entry's inode number (no stat): with the path it
        lets :meth:`_scan` skip the stat of a file it already knows.
        """
        try:
            with os.scandir(self.dir) as it:
                entries = [(e.name, e.inode()) for e in it]
        except OSError as exc:
            self._listing_error = exc  # reported as log_missing once it lasts (see _note_missing)
            return []
        self._listing_error = None
        out = []
        base, into = self.base, self._dir_prefix
        for name, ino in entries:
            if name.startswith(base):  # cheap test first: most entries are SST and blob files
                live, order = split_log_name(name)
                if live == base:
                    out.append((order, into + name, ino))
        out.sort()
        return out

    def _problem(self, reason: str, path: str, detail: str = "") -> None:
        self.problems.append(LogProblem(reason, path, detail))

    def _mark_done(self, ident: FileIdentity) -> None:
        self._done[(ident.dev, ident.ino)] = ident
        self._done_ctime.pop((ident.dev, ident.ino), None)

    def _mark_done_by_stat(self, st: os.stat_result) -> None:
        key = (st.st_dev, st.st_ino)
        self._done[key] = FileIdentity(st.st_dev, st.st_ino)
        self._done_ctime[key] = st.st_ctime_ns

    def _is_done(self, path: str, st: os.stat_result) -> bool | None:
        """Is the file at ``path`` (stat ``st``) one we finished? None: cannot tell yet.

        A finished file is closed, so its inode may have been given to a new file:
        the first lines decide.
        """
        key = (st.st_dev, st.st_ino)
        ident = self._done.get(key)
        if ident is None:
            return False
        if key in self._done_ctime:
            return st.st_ctime_ns == self._done_ctime[key]
        if key in self._done_by_name:
            return False
        if not ident.head:
            return False  # nothing to compare: read it rather than risk skipping a new file
        now = identity_of(path)
        if now is None or not now.head:
            return None  # gone, or a new file whose first line is not written yet: decide later
        return ident.same_file(now)

    # -- start ------------------------------------------------------------

    def _begin(self, at_end: bool) -> None:
        for _order, path, _hint in self._listing():
            if path != self.path:
                st = _lstat(path)
                if st is not None and stat.S_ISREG(st.st_mode):
                    self._mark_done_by_stat(st)
        if self._listing_error is not None:
            self._missing_reported = True
            self._problem("log_missing", self.dir, f"directory {describe(self._listing_error)}")
            return
        opened = self._open(self.path, 0, report_missing=True)
        if opened is None:
            return
        if at_end:
            size = os.fstat(opened.fd).st_size
            opened.offset = opened.pos = size
            # Starting inside a line (the writer is mid-line): skip to its end.
            if size and os.pread(opened.fd, 1, size - 1) != b"\n":
                opened.skipping = True
        self._current = opened

    def _resume(self, ckpt: dict[str, Any]) -> None:
        check_position(ckpt)
        saved = [(FileIdentity.from_json(e), int(e["offset"])) for e in ckpt.get("files", [])]
        since = int(ckpt.get("wall_us", 0))
        found: set[int] = set()
        seen: set[tuple[int, int]] = set()
        saved_inodes = {sid.ino for sid, _off in saved}
        try:
            dir_dev = os.stat(self.dir).st_dev
        except OSError:
            dir_dev = None
        # RocksDB may rename a file between our listing and our look at it (a saved file
        # just renamed to LOG.old.*, a new LOG in its place): list again while a saved
        # file is missing and a pass finds something new. A file found late was renamed:
        # it is older than the live one and, retired, is read before it.
        for _pass in range(5):
            new = False
            for order, path, hint in self._listing():
                if (order <= since and path != self.path and hint and dir_dev is not None
                        and hint not in saved_inodes and (dir_dev, hint) not in seen):
                    # Older than the position and not one of its files: done, by name (see above).
                    key = (dir_dev, hint)
                    seen.add(key)
                    self._done.setdefault(key, FileIdentity(dir_dev, hint))
                    self._done_by_name.add(key)
                    self._names[path] = (hint, key)
                    continue
                st = _lstat(path)
                if st is None:
                    # Listed and gone: renamed meanwhile (RocksDB moves the live LOG to LOG.old.* and
                    # then makes a new LOG -- in between there is no LOG). The next pass finds it.
                    new = True
                    continue
                if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
                    continue
                new = True
                ours = any((sid.dev, sid.ino) == (st.st_dev, st.st_ino) for sid, _off in saved)
                if not ours and path != self.path and order <= since:
                    seen.add((st.st_dev, st.st_ino))
                    self._mark_done_by_stat(st)  # older than the position, not one of its files
                    continue
                # Judged by the open file, not by its name: RocksDB may rename the live LOG between
                # our stat and our open (then the name is the new LOG, and the saved file turns up
                # as LOG.old.* in the next pass -- unless it was marked seen under the name).
                f = self._open(path, 0)
                if f is None:
                    continue
                key = (f.ident.dev, f.ident.ino)
                if key in seen:
                    f.close()
                    continue
                seen.add(key)
                # The first line too: an inode can be reused.
                match = next((i for i, (sid, _off) in enumerate(saved) if i not in found and sid.same_file(f.ident)),
                             None)
                if match is not None:
                    found.add(match)
                    f.offset = f.pos = saved[match][1]
                elif not (path == self.path or order > since):
                    f.close()  # the name now holds an older file (cannot happen with RocksDB's names)
                    self._mark_done(f.ident)
                    continue
                # else: written or renamed after the checkpoint, read from its start
                if path == self.path and self._current is None:
                    self._current = f
                else:
                    f.retired_at = time.monotonic()
                    self._retired.append(f)
            if len(found) == len(saved) or not new:
                break
        for i, (sid, off) in enumerate(saved):
            if i not in found:
                self._problem("file_lost", self.path, f"a LOG file being read at offset {off} was deleted")
        if self._current is None:
            # Say now why the live LOG cannot be followed (missing, a FIFO, unreadable), as a
            # start from the start or the end does; once it can be, it is read from its start.
            if self._listing_error is not None:
                self._missing_reported = True
                self._problem("log_missing", self.dir, f"directory {describe(self._listing_error)}")
            else:
                self._current = self._open(self.path, 0, report_missing=True)

    def _open(self, path: str, offset: int, report_missing: bool = False) -> LogFile | None:
        try:
            return LogFile.open(path, offset)
        except OSError as exc:
            if exc.errno == errno.ENOENT and not report_missing:
                return None
            if exc.errno == errno.ENOENT:
                if not self._missing_reported:
                    self._missing_reported = True
                    self._missing_since = time.monotonic()
                    self._problem("log_missing", path, "does not exist (yet)")
                return None
            reason = "not_a_file" if exc.errno in (errno.ELOOP, errno.EINVAL) else "log_unreadable"
            if (reason, path) not in self._open_errors:  # once, not at every poll
                self._open_errors.add((reason, path))
                self._problem(reason, path, describe(exc))
            return None

    # -- reading ------------------------------------------------------------

    def poll(self, final: bool = False) -> list[bytes]:
        """Complete lines written since the last poll, in file order.

        Reads at most ``max_batch`` bytes; :attr:`behind` then says more is
        waiting. ``final``: the writer is done (the DB closed or crashed): hand
        out partial last lines and close files renamed away -- call it until
        ``behind`` is False.
        """
        looked_us = time.time_ns() // 1000
        lines: list[bytes] = []
        budget = [self.max_batch]
        if self._read_retired(lines, budget, final):
            return lines
        if self._current is not None:
            self._read(self._current, lines, budget, final=False)
        # The checkpoint's wall_us is the time before the last look at the live name: a poll
        # that returned before looking (one file at a time, a full batch) has not seen a file
        # renamed meanwhile, which a resume must then read.
        if budget[0] > 0:
            self._looked_us = looked_us
        if budget[0] > 0 and self._moved_on():
            if self._current is not None:
                self._read(self._current, lines, budget, final)  # what came before the rename
            if self._one_file_done(lines):
                return lines  # the next poll switches (the name still denotes the new file)
            self._switch()
            if self._read_retired(lines, budget, final):
                return lines
            if self._current is not None:
                self._read(self._current, lines, budget, final=False)
        self.behind = budget[0] <= 0
        if not self.behind:
            if final and self._current is not None:
                self._read(self._current, lines, budget, final=True)
            self._expire(lines, final)
            self._note_missing(final)
        return lines

    def _read_retired(self, lines: list[bytes], budget: list[int], final: bool) -> bool:
        """Read the retired files, oldest first; True: stopped after one (``file_at_a_time``)."""
        for f in self._retired:
            self._read(f, lines, budget, final)
            if self._one_file_done(lines):
                return True
        return False

    def _one_file_done(self, lines: list[bytes]) -> bool:
        if self.file_at_a_time and lines:
            self.behind = True
            return True
        return False

    def _moved_on(self) -> bool:
        """Does the live name now denote another file than the one we read?"""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return self._current is not None  # renamed away (or the directory is gone)
        cur = self._current
        if cur is None:
            return True
        return (st.st_dev, st.st_ino) != (cur.ident.dev, cur.ident.ino)

    def _switch(self) -> None:
        """The live name moved on: retire the current file, open all newer ones."""
        now = time.monotonic()
        previous = self._current or self._unplaced
        if self._current is not None:
            self._current.retired_at = now
            self._current.eof_polls = 0
            self._retired.append(self._current)
            self._current = None
        present: set[tuple[int, int]] = set()
        # RocksDB may rename the live file between our listing and our open of the
        # live name: we would open its successor and never list the renamed file.
        # Listing again until a pass opens nothing new catches it (as a retired file,
        # read before the live one).
        for _pass in range(5):
            opened = self._scan(now, present)
            if not opened:
                break
        # Forget finished files that are gone: they cannot come back.
        self._done = {k: v for k, v in self._done.items() if k in present}
        self._done_ctime = {k: v for k, v in self._done_ctime.items() if k in present}
        self._done_by_name &= set(self._done)
        # The directory removed and made again (a database created anew at this path) since
        # the file we last read as the live LOG was in it?
        dir_id = _dir_key(self.dir)
        dir_replaced = dir_id is not None and self._dir_id is not None and dir_id != self._dir_id
        # Where did the file we last read as the live LOG go? Judged once a new
        # live file is open (the name may be between two files right now).
        self._unplaced = previous if self._current is None else None
        if previous is not None and self._current is not None:
            self._check_gap(previous, present, dir_replaced)
        if dir_id is not None and self._unplaced is None:
            self._dir_id = dir_id

    def _note_missing(self, final: bool) -> None:
        """Report a live LOG that stays missing -- not the instant between RocksDB's
        rename of ``LOG`` and its creation of the new one. Once per episode."""
        if self._current is not None:
            self._missing_since, self._missing_polls, self._missing_reported = None, 0, False
            if self._open_errors:  # the live name opened: report its next problem again
                self._open_errors = {e for e in self._open_errors if e[1] != self.path}
                if len(self._open_errors) > 4096:
                    self._open_errors.clear()
            return
        if os.path.lexists(self.path):
            return  # there, but not (yet) followable: reported as what it is
        now = time.monotonic()
        if self._missing_since is None:
            self._missing_since, self._missing_polls = now, 0
        self._missing_polls += 1
        lasted = self._missing_polls >= 2 and now - self._missing_since >= self.missing_grace
        if self._missing_reported or not (lasted or final):
            return
        self._missing_reported = True
        if not os.path.isdir(self.dir):
            self._problem("log_missing", self.dir, "directory does not exist")
        else:
            self._problem("log_missing", self.path, f"does not exist (for {now - self._missing_since:.2f} s)")

    def _scan(self, now: float, present: set[tuple[int, int]]) -> int:
        """Open every listed file we do not know yet; returns how many were opened."""
        opened = 0
        open_keys = {(f.ident.dev, f.ident.ino) for f in self._retired if f.fd >= 0}
        if self._current is not None:
            open_keys.add((self._current.ident.dev, self._current.ident.ino))
        names: dict[str, tuple[int, tuple[int, int]]] = {}
        done_files = self._done
        for _order, path, hint in self._listing():
            if path == self.path and self._current is not None:
                continue  # renamed again meanwhile: the next poll moves on to it
            cached = self._names.get(path) if path != self.path else None
            if cached is not None and hint and cached[0] == hint and (cached[1] in open_keys or cached[1] in done_files):
                # A rolled name with the same inode as at the last listing, a file we know:
                # no stat, no read (RocksDB never gives a rolled name to a second file).
                present.add(cached[1])
                names[path] = cached
                continue
            st = _lstat(path)
            if st is None or not stat.S_ISREG(st.st_mode):
                continue
            key = (st.st_dev, st.st_ino)
            present.add(key)
            # A file we hold open: its inode cannot have been reused.
            if key in open_keys:
                names[path] = (hint, key)
                continue
            done = self._is_done(path, st)
            if done:
                names[path] = (hint, key)
            if done is None or done:
                continue
            f = self._open(path, 0, report_missing=False)
            if f is None:
                if path != self.path and not os.path.lexists(path):
                    # Listed, never read, deleted before we could open it.
                    self._problem("file_lost", path, "a rolled LOG file was deleted before it could be read")
                continue
            got = (f.ident.dev, f.ident.ino)
            present.add(got)
            if got in open_keys:  # the name moved to a file we already follow
                os.close(f.fd)
                continue
            open_keys.add(got)
            if got == key:
                names[path] = (hint, key)
            opened += 1
            if path == self.path:
                self._current = f
            else:
                f.retired_at = now
                self._retired.append(f)
        self._names = names
        return opened

    def _check_gap(self, previous: LogFile, present: set[tuple[int, int]], dir_replaced: bool = False) -> None:
        """The file we were reading was renamed *and deleted* before we saw its new
        name: RocksDB deletes the oldest rolled files first (``keep_log_file_num``),
        so every file rolled between it and the oldest one left may be gone unread.
        We still read ``previous`` to its end (we hold it open), but cannot tell how
        many files came in between: report it once, never silently.

        Not a gap: a database that closed (its last line ``Shutdown complete``) and was
        removed with its directory, a new database made in a new directory at the same
        path. RocksDB wrote nothing after that line; the files went with the directory."""
        if (previous.ident.dev, previous.ident.ino) in present or previous.fd < 0:
            return
        try:
            if os.fstat(previous.fd).st_nlink > 0:
                return  # renamed out of the directory, not deleted
        except OSError:
            return
        if dir_replaced and _ends_with_shutdown(previous.fd):
            return
        self._problem(
            "file_lost", previous.name,
            "rolled and deleted before its successors were listed: LOG files rolled in between were "
            "deleted unread (the reader was more than keep_log_file_num files behind)",
        )

    def _read(self, f: LogFile, lines: list[bytes], budget: list[int], final: bool) -> None:
        self.bytes_read += f.read(lines, budget, final, self.max_line, self.problems)

    def _expire(self, lines: list[bytes], final: bool) -> None:
        """Close renamed-away files that are done.

        A retired file is done when it was read to its end on two reads that found
        nothing new, no partial line waits in it, and ``settle`` seconds passed since
        its last byte (RocksDB 9 closes the old logger before it renames the file;
        the settle time covers a logger that flushes a last line just after); or,
        whatever it holds, after ``grace`` seconds without growing. Beyond
        ``max_retired_open`` fully read files, the oldest are closed early.
        """
        now = time.monotonic()
        keep = []
        for f in self._retired:
            idle = now - max(f.last_growth, f.retired_at or now)
            settled = f.eof_polls >= 2 and idle >= self.settle and not f.pending and not f.skipping
            if final or settled or idle >= self.grace:
                self._close_retired(f, lines)
            else:
                keep.append(f)
        excess = len(keep) - self.max_retired_open
        if excess > 0:
            # Oldest first; only files read to their end (nothing lost by closing them).
            for f in sorted((f for f in keep if f.idle),
                            key=lambda f: f.retired_at or 0.0)[:excess]:
                self._close_retired(f, lines)
            keep = [f for f in keep if f.fd >= 0]
        self._retired = keep

    def _close_retired(self, f: LogFile, lines: list[bytes]) -> None:
        # The writer is gone: a partial last line is all there will be.
        self._read(f, lines, [self.max_batch], final=True)
        f.close()
        self._mark_done(f.ident)

    # -- state --------------------------------------------------------------

    def checkpoint(self) -> dict[str, Any]:
        """Where the next poll would start: JSON-able, for :class:`LogFollower`'s ``start``."""
        files = self._retired + ([self._current] if self._current else [])
        return {
            "path": self.path,
            "wall_us": self._looked_us,
            "files": [{**f.ident.to_json(), "offset": f.offset, "name": f.name} for f in files],
        }

    def head(self, nbytes: int = 64 << 10) -> list[bytes]:
        """Complete lines of the first ``nbytes`` of the live file (its header)."""
        f = self._current
        if f is None:
            return []
        try:
            data = os.pread(f.fd, nbytes, 0)
        except OSError:
            return []
        return data.split(b"\n")[:-1]

    @property
    def live_inode(self) -> int | None:
        """The inode of the live LOG when growing is all it can do next: the file at
        the LOG's name is the one being read, to its end, no renamed file still open,
        nothing missing. None otherwise (a notifier on the LOG cannot cover it: poll)."""
        f = self._current
        if (f is None or f.name != self.path or self.behind or self._retired
                or self._missing_since is not None or self._unplaced is not None):
            return None
        return f.ident.ino

    @property
    def following(self) -> str | None:
        return self._current.name if self._current else None

    def close(self) -> None:
        for f in self._retired + ([self._current] if self._current else []):
            f.close()
        self._retired, self._current = [], None

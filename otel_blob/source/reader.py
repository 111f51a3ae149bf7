"""Reading one open LOG file: complete lines only, a cap on their length (stdlib only).

A :class:`LogFile` is a descriptor and a position. It hands out only complete
lines (a partial last line waits for its newline; when the writer is known to be
done -- ``final`` -- it is handed out as is), drops lines over ``max_line`` bytes
with a :class:`LogProblem`, and remembers the offset just past the last complete
line it handed out: what a checkpoint keeps. The live follower and the reader of
finished files (replay) both read through it.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from dataclasses import dataclass, field

from .identity import FileIdentity, identity_of

__all__ = ["READ_CHUNK", "LogFile", "LogProblem", "describe", "open_regular"]

READ_CHUNK = 1 << 20


@dataclass
class LogProblem:
    """Something a LOG source could not do; the watch counts and logs it."""

    reason: str  # log_missing | log_unreadable | not_a_file | line_too_long | file_lost | truncated
    path: str
    detail: str = ""


def open_regular(path: str) -> int:
    """Open a LOG file for reading; raise OSError with a clear message otherwise.

    O_NOFOLLOW: a LOG that is a symlink is refused (it may point anywhere).
    O_NONBLOCK: opening a FIFO must not hang the watcher.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def describe(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "is a symbolic link (refused)"
    if exc.errno == errno.EACCES:
        return "permission denied"
    if exc.errno == errno.ENOENT:
        return "does not exist"
    return exc.strerror or str(exc)


@dataclass
class LogFile:
    fd: int
    ident: FileIdentity
    name: str  # last name we saw it under
    offset: int  # just past the last complete line handed out (what a checkpoint keeps)
    pos: int = -1  # next byte to read; offset + len(pending) unless skipping
    pending: bytearray = field(default_factory=bytearray)
    skipping: bool = False  # inside a line longer than the cap: drop to its newline
    retired_at: float | None = None  # monotonic time it was renamed away
    last_growth: float = 0.0
    eof_polls: int = 0  # consecutive reads that found it at its end, nothing new

    @classmethod
    def open(cls, path: str, offset: int) -> LogFile:
        """Open ``path`` at ``offset`` (raises OSError: see :func:`open_regular`)."""
        fd = open_regular(path)
        ident = identity_of(path, fd) or FileIdentity(0, 0)
        return cls(fd, ident, path, offset, offset, last_growth=time.monotonic())

    @property
    def idle(self) -> bool:
        """Read to its end, with no partial line waiting."""
        return self.eof_polls >= 1 and not self.pending and not self.skipping

    def read(self, lines: list[bytes], budget: list[int], final: bool, max_line: int,
             problems: list[LogProblem]) -> int:
        """Append the complete lines written since the last read to ``lines``; returns the bytes read.

        Reads at most ``budget[0]`` bytes (and lowers it). ``final``: the writer is gone
        (closed DB, crash): a partial last line is all there is, hand it out too.
        """
        if self.fd < 0:
            return 0
        if not self.ident.head:
            ident = identity_of(self.name, self.fd)
            if ident is not None:
                self.ident = ident
        try:
            size = os.fstat(self.fd).st_size
        except OSError:
            return 0
        if size < self.pos:
            # Truncated in place (RocksDB never does; a tool might): start over.
            problems.append(LogProblem("truncated", self.name, f"size {size} < offset {self.pos}"))
            self.pos = self.offset = 0
            self.pending, self.skipping = bytearray(), False
        nread = 0
        while self.pos < size and budget[0] > 0:
            try:
                chunk = os.pread(self.fd, min(READ_CHUNK, size - self.pos), self.pos)
            except OSError as exc:
                problems.append(LogProblem("log_unreadable", self.name, describe(exc)))
                return nread
            if not chunk:
                break
            self.pos += len(chunk)
            budget[0] -= len(chunk)
            nread += len(chunk)
            self._split(chunk, lines, max_line, problems)
        if nread:
            self.last_growth = time.monotonic()
        if nread or self.pos < size:
            self.eof_polls = 0
        else:
            self.eof_polls += 1
        if final and self.pos >= size and (self.pending or self.skipping):
            if self.pending:
                lines.append(bytes(self.pending))
            self.offset = self.pos
            self.pending, self.skipping = bytearray(), False
        return nread

    def _split(self, chunk: bytes, lines: list[bytes], max_line: int, problems: list[LogProblem]) -> None:
        """Append the complete lines of ``chunk`` (which ends at ``self.pos``) to ``lines``."""
        parts = chunk.split(b"\n")
        tail = parts.pop()
        if parts:
            if self.skipping:  # the rest of an over-long line
                del parts[0]
                self.skipping = False
            elif self.pending:
                parts[0] = bytes(self.pending) + parts[0]
                self.pending = bytearray()
            self.offset = self.pos - len(tail)
            if parts and max(map(len, parts)) > max_line:
                for part in [p for p in parts if len(p) > max_line]:
                    problems.append(LogProblem("line_too_long", self.name, f"{len(part)} bytes (cap {max_line})"))
                parts = [p for p in parts if len(p) <= max_line]
            lines.extend(parts)
        if tail and not self.skipping:
            self.pending += tail
            if len(self.pending) > max_line:
                problems.append(LogProblem("line_too_long", self.name, f"over {max_line} bytes without newline"))
                self.pending, self.skipping = bytearray(), True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

"""Finished LOG files read once, in order: the source of a replay (stdlib only).

:class:`LogFiles` offers the follower's interface (``poll``, ``problems``,
``behind``, ``close``) over a fixed list of files, so a replay runs through the
same watch, decoder and listeners as a live watch. The files are done being
written: a partial last line is a line.
"""

from __future__ import annotations

from typing import Sequence

from .reader import LogFile, LogProblem, describe

__all__ = ["LogFiles"]


class LogFiles:
    """Reads ``paths`` one after the other, at most ``max_batch`` bytes a poll.

    :attr:`behind` stays True until the last file was read to its end;
    ``on_read(path, nbytes)`` is told of every read (a progress bar).
    """

    def __init__(self, paths: Sequence[str], *, max_line: int = 1 << 20, max_batch: int = 512 << 10,
                 on_read: object = None) -> None:
        self.paths = list(paths)
        self.max_line = max_line
        self.max_batch = max_batch
        self.problems: list[LogProblem] = []
        self.behind = bool(self.paths)
        self.bytes_read = 0
        self.on_read = on_read
        self._next = 0
        self._file: LogFile | None = None

    @property
    def following(self) -> str | None:
        return self._file.name if self._file is not None else None

    live_inode = None  # nothing to be notified of

    def poll(self, final: bool = False) -> list[bytes]:
        lines: list[bytes] = []
        budget = [self.max_batch]
        while budget[0] > 0:
            f = self._file
            if f is None:
                if self._next >= len(self.paths):
                    self.behind = False
                    break
                path = self.paths[self._next]
                self._next += 1
                try:
                    f = self._file = LogFile.open(path, 0)
                except OSError as exc:
                    self.problems.append(LogProblem("log_unreadable", path, describe(exc)))
                    continue
            n = f.read(lines, budget, True, self.max_line, self.problems)
            self.bytes_read += n
            if self.on_read is not None and n:
                self.on_read(f.name, n)  # type: ignore[operator]
            if not n:  # at its end (a partial last line was handed out: the file is finished)
                f.close()
                self._file = None
        return lines

    def checkpoint(self) -> dict[str, object]:
        return {}

    def head(self, nbytes: int = 64 << 10) -> list[bytes]:
        return []

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._next = len(self.paths)
        self.behind = False

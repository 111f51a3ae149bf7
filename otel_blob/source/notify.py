"""Wake the watcher when a LOG grows, instead of polling it (Linux inotify; stdlib only).

Polling a LOG every few milliseconds costs a wake-up each time (~60 µs of CPU on a
small VM: 30 ms a second at a 2 ms interval, for nothing when the DB is quiet) and
adds up to the interval to every event's delay. With inotify the watcher sleeps
until RocksDB's logger writes (``IN_MODIFY`` on the LOG's inode) or renames or
deletes the LOG (``IN_MOVE_SELF`` / ``IN_DELETE_SELF``), and reads at once.

Only the live LOG file is watched, not the DB directory (every SST and blob file
created there would wake us). The caller keeps polling at its interval whenever
a notification cannot cover the situation: the LOG missing (a rotation in
progress), a renamed file still open, a backlog, backpressure.

Where inotify is not available (not Linux, no libc, out of watches)
:func:`make_notifier` returns None and the caller polls as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import threading

__all__ = ["ADDED", "KEPT", "NONE", "LogNotifier", "make_notifier", "wait_readable"]

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_MOVE_SELF = 0x00000800
IN_DELETE_SELF = 0x00000400
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_MASK = IN_MODIFY | IN_ATTRIB | IN_MOVE_SELF | IN_DELETE_SELF
NONE, ADDED, KEPT = 0, 1, 2

_libc = None


def _load() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name or "libc.so.6", use_errno=True)
            lib.inotify_init1.argtypes = [ctypes.c_int]
            lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            lib.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        except (OSError, AttributeError):
            return None
        _libc = lib
    return _libc


class LogNotifier:
    """One inotify instance and a self-pipe: :meth:`wait` returns when a watched
    file changed, :meth:`wake` was called, or the timeout passed."""

    def __init__(self, lib: ctypes.CDLL, fd: int) -> None:
        self._lib = lib
        self.fd = fd
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wds: dict[str, tuple[int, int]] = {}  # path -> (wd, inode it was added for)
        # wake() comes from other threads: never after close(), when the descriptor's number
        # may already be a file or socket of the application's.
        self._closing = threading.Lock()
        self._closed = False

    def watch(self, path: str, ino: int | None) -> int:
        """Watch the file now at ``path`` (``ino``: the inode the caller reads, to
        notice a new file under the same name). Returns :data:`KEPT` (watched since
        before), :data:`ADDED` (just now: a change since the caller's last read may
        have been missed, read once more) or :data:`NONE` (cannot: poll)."""
        have = self._wds.get(path)
        if have is not None and have[1] == ino:
            return KEPT
        if have is not None:  # the name is another file now: drop the old inode's watch
            self._lib.inotify_rm_watch(self.fd, have[0])
            del self._wds[path]
        if ino is None:
            return NONE
        wd = self._lib.inotify_add_watch(self.fd, os.fsencode(path), _MASK)
        if wd < 0:
            return NONE
        self._wds[path] = (wd, ino)
        return ADDED

    def paths(self) -> list[str]:
        return list(self._wds)

    def forget(self, path: str) -> None:
        have = self._wds.pop(path, None)
        if have is not None:
            self._lib.inotify_rm_watch(self.fd, have[0])

    def wait(self, timeout: float, also: tuple[int, ...] = ()) -> bool:
        """Sleep until a change, a wake(), ``timeout`` s, or one of the descriptors ``also``
        (left unread: the caller's) is readable; True if woken by something."""
        ready = wait_readable((self.fd, self._wake_r, *also), timeout)
        for fd in ready:
            if fd in also:
                continue
            try:
                while os.read(fd, 65536):
                    pass
            except (BlockingIOError, OSError):
                pass
        return bool(ready)

    def wake(self) -> None:
        with self._closing:
            if self._closed:
                return
            try:
                os.write(self._wake_w, b"\0")
            except OSError:  # the pipe is full: a wake-up is pending anyway
                pass

    def close(self) -> None:
        with self._closing:
            if self._closed:
                return
            self._closed = True
        for fd in (self.fd, self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wds.clear()


def make_notifier() -> LogNotifier | None:
    """A notifier, or None where inotify is unavailable (the caller polls)."""
    lib = _load()
    if lib is None or not hasattr(lib, "inotify_init1"):
        return None
    fd = lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        return None
    return LogNotifier(lib, fd)


def wait_readable(fds: tuple[int, ...] | list[int], timeout: float) -> list[int]:
    """The descriptors of ``fds`` readable within ``timeout`` s (or closed: the read says so).

    poll(), not select(): select() refuses a descriptor numbered 1024 or more, and an
    application with many files or sockets open gives us such numbers -- a wait that
    returned at once would make the watcher spin."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    try:
        return [fd for fd, _ in poller.poll(max(0.0, timeout) * 1000.0)]
    except OSError:  # EINTR is retried by Python; anything else: as if nothing came
        return []

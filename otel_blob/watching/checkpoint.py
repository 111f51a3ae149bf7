"""A checkpoint file (``otel-blob watch --checkpoint FILE``): how far each LOG was delivered.

Format (JSON)::

    {"version": 1, "dbs": {"/abs/db/path": <Watch.checkpoint()>}}

A watch's checkpoint (:meth:`otel_blob.watching.db_watch.Watch.checkpoint`) names every
LOG file being read by its identity (device, inode, first line) and the offset
just past the last line delivered, so a watcher restarted from it resumes there
even if RocksDB renamed the files to ``LOG.old.*`` meanwhile; with it the
decoder's state (session id, which job is a flush or a compaction of which column
family, the live blob files: without it a job that started before the
checkpoint would have its blob files reported with ``reason=unknown`` after a
restart) and the jobs open at that point.

Writes are atomic: a temporary file in the same directory, ``fsync``,
``os.replace`` over the old file, ``fsync`` of the directory. A reader sees the
old checkpoint or the new one, never a mix, also after a crash or power loss.

A file that exists but cannot be understood (truncated by hand, another
program's JSON, a newer version) is an error (:class:`CheckpointError`), never
silently ignored: ignoring it would re-export or skip events. Delete the file to
start afresh.
"""

from __future__ import annotations

import errno
import json
import os
from typing import Any

__all__ = ["CheckpointError", "CheckpointFile", "load", "save"]

VERSION = 1


class CheckpointError(Exception):
    """A checkpoint file that cannot be read, understood or written; the message names it."""


def _validate(path: str, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict) or "version" not in data or not isinstance(data.get("dbs"), dict):
        raise CheckpointError(f"checkpoint {path} is not an otel-blob checkpoint (delete it to start afresh)")
    if data["version"] != VERSION:
        raise CheckpointError(
            f"checkpoint {path} has version {data['version']!r}, this otel-blob reads version {VERSION}"
        )
    for db, entry in data["dbs"].items():
        files = entry.get("files") if isinstance(entry, dict) else None
        if not isinstance(files, list) or not all(
            isinstance(f, dict) and isinstance(f.get("offset"), int) and isinstance(f.get("ino"), int)
            and isinstance(f.get("dev"), int)
            for f in files
        ):
            raise CheckpointError(f"checkpoint {path} is corrupt: bad entry for {db} (delete it to start afresh)")
    return data


def load(path: str) -> dict[str, Any]:
    """The checkpoint in ``path``; an empty one if the file does not exist."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return {"version": VERSION, "dbs": {}}
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint {path} is a directory") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        what = "empty" if not raw.strip() else "corrupt (not valid JSON; truncated?)"
        raise CheckpointError(f"checkpoint {path} is {what}: delete it to start afresh") from None
    return _validate(path, data)


def save(path: str, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp.{os.getpid()}")
    payload = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            view = memoryview(payload)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dfd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(dfd)
        except OSError as exc:  # some file systems cannot fsync a directory
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
                raise
        finally:
            os.close(dfd)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from None


def check_writable(path: str) -> None:
    """Fail early (before any event is exported) if ``path`` could not be written."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CheckpointError(f"cannot write checkpoint {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CheckpointError(f"cannot write checkpoint {path}: directory {directory} is not writable")


class CheckpointFile:
    """One process's view of a checkpoint file, with an exclusive lock on it.

    The lock (``fcntl.flock`` on ``FILE.lock``) keeps two watchers from sharing
    one checkpoint, which would make both of them resume wrongly.
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        check_writable(self.path)
        lock_existed = os.path.lexists(self.path + ".lock")
        self._lock_fd = self._lock()
        try:
            self.data = load(self.path)
        except BaseException:
            if not lock_existed:  # a refused checkpoint leaves nothing of ours behind
                try:
                    os.unlink(self.path + ".lock")
                except OSError:
                    pass
            self.close()  # do not leak the lock's descriptor
            raise
        self._remove_stale_tmp()

    def _remove_stale_tmp(self) -> None:
        # Temporary files of writers that died between write and rename (we hold the
        # lock, so no live writer owns one). The checkpoint itself was never touched.
        d, base = os.path.split(self.path)
        prefix = f".{base}.tmp."
        try:
            names = os.listdir(d)
        except OSError:
            return
        for name in names:
            if name.startswith(prefix) and name[len(prefix):].isdigit():
                try:
                    os.unlink(os.path.join(d, name))
                except OSError:
                    pass

    def _lock(self) -> int | None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return None
        lock_path = self.path + ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise CheckpointError(f"cannot lock checkpoint {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise CheckpointError(f"checkpoint {self.path} is in use by another otel-blob process") from None
        return fd

    def entry(self, db_path: str) -> dict[str, Any] | None:
        return self.data["dbs"].get(db_path)

    def set(self, db_path: str, entry: dict[str, Any] | None) -> None:
        if entry is None:
            self.data["dbs"].pop(db_path, None)
        else:
            self.data["dbs"][db_path] = entry

    def save(self) -> None:
        save(self.path, self.data)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

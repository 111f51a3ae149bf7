"""A LOG file's identity: what it is, not what it is called (stdlib only).

RocksDB renames its LOG at every roll and reopen and may delete old ones, and the
file system may give a deleted file's inode to a new file. A file is therefore
known by its device, its inode *and* its first line (which starts with a
microsecond timestamp): the fingerprint of the Collector's file consumer.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any

__all__ = ["HEAD_BYTES", "FileIdentity", "check_position", "identity_of"]

HEAD_BYTES = 128  # how much of the first line identifies a file


@dataclass(frozen=True)
class FileIdentity:
    dev: int
    ino: int
    head: bytes = b""  # the file's first line (up to HEAD_BYTES), b"" until written

    def same_file(self, other: FileIdentity) -> bool:
        if (self.dev, self.ino) != (other.dev, other.ino):
            return False
        # An inode can be reused by a new file: the first lines must agree too
        # (one may still be a prefix of the other while the line is written).
        a, b = self.head, other.head
        return not a or not b or a.startswith(b) or b.startswith(a)

    def to_json(self) -> dict[str, Any]:
        return {"dev": self.dev, "ino": self.ino, "head": self.head.decode("latin-1")}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FileIdentity:
        return cls(int(d["dev"]), int(d["ino"]), str(d.get("head", "")).encode("latin-1"))


def identity_of(path: str, fd: int | None = None) -> FileIdentity | None:
    """The identity of the regular file at ``path`` (or open as ``fd``); None if it cannot be read."""
    own = fd is None
    try:
        if own:
            # One look at one file: a stat and a read by name could see two files (RocksDB renames
            # the live LOG and makes a new one at any open), and mix their inode and first line.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if own and not stat.S_ISREG(st.st_mode):
                return None
            head = os.pread(fd, HEAD_BYTES, 0)
        finally:
            if own:
                os.close(fd)
    except OSError:
        return None
    nl = head.find(b"\n")
    return FileIdentity(st.st_dev, st.st_ino, head[:nl] if nl >= 0 else b"")


def _uint_below(value: Any, limit: int) -> bool:
    return type(value) is int and 0 <= value < limit


def check_position(position: Any) -> None:
    """Raise ValueError, saying what is wrong, unless ``position`` has the shape
    :meth:`~otel_blob.source.follower.LogFollower.checkpoint` returns (a hand-edited or
    corrupt checkpoint must be refused, not half-used)."""
    if not isinstance(position, dict):
        raise ValueError(f"a LOG position must be an object, not {type(position).__name__}")
    wall = position.get("wall_us", 0)
    if not _uint_below(wall, 1 << 63):
        raise ValueError(f"wall_us must be a non-negative integer, not {wall!r:.40}")
    files = position.get("files", [])
    if not isinstance(files, list):
        raise ValueError(f"files must be a list, not {type(files).__name__}")
    for i, entry in enumerate(files):
        if not isinstance(entry, dict):
            raise ValueError(f"files[{i}] must be an object, not {type(entry).__name__}")
        for key, limit in (("dev", 1 << 64), ("ino", 1 << 64), ("offset", 1 << 63)):
            if not _uint_below(entry.get(key), limit):
                raise ValueError(f"files[{i}].{key} must be a non-negative integer, not {entry.get(key)!r:.40}")
        head = entry.get("head", "")
        if not isinstance(head, str):
            raise ValueError(f"files[{i}].head must be a string, not {type(head).__name__}")
        try:
            head.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"files[{i}].head is not a first line this follower wrote") from None

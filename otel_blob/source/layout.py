"""Where RocksDB puts things: the info LOG's names, the persisted options, blob files.

Stdlib only. The naming rules come from RocksDB's ``file/filename.cc`` (``InfoLogFileName``,
``OldInfoLogFileName``, ``InfoLogPrefix``) and were checked against real databases.
"""

from __future__ import annotations

import os
import re

__all__ = [
    "LIVE",
    "WatchError",
    "blob_files",
    "file_size",
    "flattened_log_name",
    "info_log_path",
    "is_rocksdb_dir",
    "log_files",
    "persisted_db_options",
    "split_log_name",
]

# The order of the live LOG among its rolled files (``<name>.old.<epoch µs>``): after all of them.
LIVE = 1 << 64

_BLOB_RE = re.compile(r"^(\d+)\.blob$")
_OPTIONS_RE = re.compile(r"^OPTIONS-(\d+)$")


class WatchError(Exception):
    """A database or LOG that cannot be watched; the message names the path."""


def flattened_log_name(db_absolute_path: str) -> str:
    """RocksDB's info LOG name under ``db_log_dir`` (``InfoLogPrefix`` in filename.cc).

    Every character but ``[A-Za-z0-9._-]`` becomes ``_``, except a leading one,
    which is dropped; the prefix is capped at 255 characters.
    """
    out = []
    for i, ch in enumerate(os.path.normpath(db_absolute_path)):
        if ch.isascii() and (ch.isalnum() or ch in "-._"):
            out.append(ch)
        elif i > 0:
            out.append("_")
    return "".join(out)[:255] + "_LOG"


def persisted_db_options(db_path: str) -> dict[str, str]:
    """The ``[DBOptions]`` section of the newest ``OPTIONS-<n>`` file ({} if none)."""
    try:
        names = os.listdir(db_path)
    except OSError:
        return {}
    numbered = [(int(m.group(1)), n) for n in names if (m := _OPTIONS_RE.match(n))]
    if not numbered:
        return {}
    options: dict[str, str] = {}
    section = None
    try:
        with open(os.path.join(db_path, max(numbered)[1]), encoding="utf-8", errors="replace") as f:
            for raw in f:
                line = raw.strip()
                if line.startswith("["):
                    section = line
                elif section == "[DBOptions]" and "=" in line:
                    key, _, value = line.partition("=")
                    options[key.strip()] = value.strip()
    except OSError:
        return {}
    return options


def info_log_path(db_path: str, log_dir: str | None = None) -> str:
    """The live info LOG of the DB at ``db_path``.

    ``log_dir`` is RocksDB's ``db_log_dir``; when None it is read from the DB's
    persisted options. A DB opened by a relative path under ``db_log_dir`` has
    its LOG named after the current directory (a RocksDB quirk); that name is
    tried as well, and whichever exists wins.
    """
    if log_dir is None:
        log_dir = persisted_db_options(db_path).get("db_log_dir", "")
    if not log_dir:
        return os.path.join(os.path.abspath(db_path), "LOG")
    log_dir = os.path.abspath(log_dir)
    candidates = [os.path.join(log_dir, flattened_log_name(os.path.abspath(db_path)))]
    if not os.path.isabs(db_path):
        candidates.append(os.path.join(log_dir, flattened_log_name(os.getcwd())))
    for path in candidates:
        if os.path.exists(path):
            return path
    return candidates[0]


def split_log_name(name: str) -> tuple[str, int]:
    """``(live name, order)`` of a LOG file name: ``LOG.old.1700000000000000`` -> ``("LOG", 1700000000000000)``
    (RocksDB renames a rolled or replaced LOG with the epoch microseconds of the rename), a live name ->
    ``(name, LIVE)``. Files of one LOG sort oldest first by ``order``."""
    head, sep, tail = name.rpartition(".old.")
    if sep and head and tail.isascii() and tail.isdigit():
        return head, int(tail)
    return name, LIVE


def log_files(directory: str, live_name: str = "LOG") -> list[str]:
    """Paths of the LOG files named ``live_name`` (live and rolled) in ``directory``, oldest first.

    Raises OSError if the directory cannot be listed."""
    found = []
    for name in os.listdir(directory):
        base, order = split_log_name(name)
        if base == live_name:
            found.append((order, os.path.join(directory, name)))
    return [path for _order, path in sorted(found)]


def is_rocksdb_dir(path: str) -> bool:
    """Does ``path`` look like a RocksDB database directory (CURRENT or IDENTITY)?"""
    return os.path.isfile(os.path.join(path, "CURRENT")) or os.path.isfile(os.path.join(path, "IDENTITY"))


def blob_files(directory: str) -> dict[int, int | None]:
    """The blob files in ``directory``: file number -> size in bytes (None if it vanished)."""
    found: dict[int, int | None] = {}
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return found
    for entry in entries:
        m = _BLOB_RE.match(entry.name)
        if m:
            try:
                found[int(m.group(1))] = entry.stat(follow_symlinks=False).st_size
            except OSError:
                found[int(m.group(1))] = None
    return found


def file_size(path: str) -> int | None:
    """Bytes on disk, or None when the file is gone (or cannot be stat'ed)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return None

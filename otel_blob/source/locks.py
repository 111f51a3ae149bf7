"""Does this process hold a database's LOCK? (stdlib only; Linux ``/proc/locks``)

A read-write open of a RocksDB database takes a POSIX record lock on
``<db>/LOCK`` (``fcntl(F_SETLK)``) and starts a new info LOG; a read-only or
secondary open takes no lock and writes nothing to the primary's LOG. The lock
cannot be tested with ``fcntl`` from the process that holds it (record locks
never conflict with their owner's), but the kernel lists every lock, with its
owner, in ``/proc/locks``.
"""

from __future__ import annotations

import os

__all__ = ["holds_lock"]

_PROC_LOCKS = "/proc/locks"


def holds_lock(path: str, pid: int | None = None) -> bool | None:
    """True if process ``pid`` (default: this one) holds a POSIX lock on the file at ``path``;
    False if it does not; None where that cannot be told (no ``/proc/locks``: not Linux)."""
    try:
        st = os.stat(path)
    except OSError:
        return False  # no LOCK file: nothing holds it
    try:
        with open(_PROC_LOCKS, "rb") as f:
            table = f.read()
    except OSError:
        return None
    # "1: POSIX  ADVISORY  WRITE 3568 fe:00:4244726 0 EOF" ("1: -> POSIX ..." for a waiter).
    want_pid = str(os.getpid() if pid is None else pid).encode()
    want_file = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}".encode()
    for line in table.splitlines():
        fields = line.split()
        if b"->" in fields or len(fields) < 6 or fields[1] != b"POSIX":
            continue
        if fields[4] == want_pid and fields[5] == want_file:
            return True
    return False

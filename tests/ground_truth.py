"""Ground truth for blob file events, independent of the code under test.

The kernel tells us (inotify, through ctypes: stdlib only) every ``*.blob`` file
that appears in or disappears from a directory; ``stat`` at the end tells the
sizes of those still there. Tests compare the events ``otel_blob`` delivered with
this record, not with anything ``otel_blob`` computed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import struct
from dataclasses import dataclass, field

IN_CREATE = 0x100
IN_DELETE = 0x200
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_Q_OVERFLOW = 0x4000
IN_NONBLOCK = os.O_NONBLOCK
_EVENT = struct.Struct("iIII")
_BLOB = re.compile(r"^(\d+)\.blob$")

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


@dataclass
class BlobFileTruth:
    created: dict[int, int] = field(default_factory=dict)  # number -> times it appeared
    deleted: dict[int, int] = field(default_factory=dict)  # number -> times it disappeared

    def present(self, directory: str) -> dict[int, int]:
        """Blob files in ``directory`` now: number -> size."""
        out = {}
        for name in os.listdir(directory):
            m = _BLOB.match(name)
            if m:
                out[int(m.group(1))] = os.stat(os.path.join(directory, name)).st_size
        return out


class BlobDirWatch:
    """Records blob files created in / deleted from directories, via inotify."""

    def __init__(self, *directories: str) -> None:
        self.fd = _libc.inotify_init1(IN_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.truth = BlobFileTruth()
        self.dirs: dict[int, str] = {}
        for d in directories:
            self.add(d)

    def add(self, directory: str) -> None:
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(directory), IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")
        self.dirs[wd] = directory

    def collect(self) -> BlobFileTruth:
        """Read every pending inotify event into :attr:`truth`."""
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return self.truth
            off = 0
            while off < len(data):
                _wd, mask, _cookie, length = _EVENT.unpack_from(data, off)
                name = data[off + _EVENT.size: off + _EVENT.size + length].rstrip(b"\0").decode()
                off += _EVENT.size + length
                assert not mask & IN_Q_OVERFLOW, "inotify queue overflowed: ground truth incomplete"
                m = _BLOB.match(name)
                if not m:
                    continue
                n = int(m.group(1))
                if mask & (IN_CREATE | IN_MOVED_TO):
                    self.truth.created[n] = self.truth.created.get(n, 0) + 1
                if mask & (IN_DELETE | IN_MOVED_FROM):
                    self.truth.deleted[n] = self.truth.deleted.get(n, 0) + 1

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> BlobDirWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

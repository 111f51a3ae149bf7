"""Where a DB session starts in its LOG files.

RocksDB starts a new LOG at every open and, with ``max_log_file_size`` or
``log_file_time_to_roll``, rolls it during the session; every rolled file begins
with the same header, ``DB Session ID`` included. "From the start" therefore
means: from the oldest LOG file whose header names the current session -- not
from the start of the live file, which may be the tenth of the session.

:func:`session_position` gives a follower position that reads the session's
files from their first byte (and whatever came after them), and says what is
known of what lies before: a session whose first file is no longer on disk
(``keep_log_file_num`` deleted it) began before what can be read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..decode.rules import parse_line
from ..source.identity import FileIdentity, identity_of
from ..source.layout import LIVE, split_log_name
from ..source.reader import open_regular

__all__ = ["SessionStart", "session_position", "session_of"]

HEADER_BYTES = 16 << 10  # the header's session line is near the top (line 5 in RocksDB 9)
# Written once per open, after the options dump (~30 KB): a file holding it is a session's first.
_OPEN_MARK = b"Recovering from manifest file"
_OPEN_MARK_BYTES = 512 << 10


@dataclass
class SessionStart:
    """What :func:`session_position` found."""

    session_id: str | None
    files: list[str]  # the session's LOG files on disk, oldest first
    first_on_disk: bool  # the oldest of them is where the session began

    def describe(self) -> str:
        where = os.path.basename(self.files[0]) if self.files else "?"
        text = f"session {self.session_id or '?'} from {where}"
        if len(self.files) > 1:
            text += f" ({len(self.files)} LOG files)"
        if not self.first_on_disk:
            text += "; its first LOG files are no longer on disk (deleted by RocksDB), what they held is lost"
        return text


def _head(path: str, nbytes: int) -> bytes | None:
    """The first ``nbytes`` of a regular file (a FIFO or a symlink in a LOG's place is not read)."""
    try:
        fd = open_regular(path)
    except OSError:
        return None
    try:
        return os.pread(fd, nbytes, 0)
    except OSError:
        return None
    finally:
        os.close(fd)


def session_of(path: str) -> str | None:
    """The DB session id in the header of the LOG file at ``path`` (None if unreadable or none)."""
    head = _head(path, HEADER_BYTES)
    if head is None:
        return None
    for line in head.split(b"\n"):
        parsed = parse_line(line)
        if parsed is not None and parsed.kind == "session":
            return parsed.value
    return None


def _has_open_mark(path: str) -> bool:
    """False only if the file at ``path`` is surely not where its session began.

    The mark comes before the session's first event (``recovery_started``): a head with an
    event and no mark is a rolled file. A head with neither may be a first file whose rest
    is still in RocksDB's buffer (a session just opened): cannot tell, say nothing was lost.
    """
    head = _head(path, _OPEN_MARK_BYTES)
    return head is None or _OPEN_MARK in head or b"EVENT_LOG_v1" not in head


def _listing(log_path: str) -> list[tuple[int, str]]:
    directory, base = os.path.split(os.path.abspath(log_path))
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    out = []
    for name in names:
        live, order = split_log_name(name)
        if live == base:
            out.append((order, os.path.join(directory, name)))
    return sorted(out)


def _find(files: list[tuple[int, str]], anchor: FileIdentity) -> int | None:
    """The index of ``anchor`` in ``files`` (None: not there). Newest first, by stat: the anchor
    is the live LOG or one of the latest rolled ones."""
    for i in range(len(files) - 1, -1, -1):
        try:
            st = os.stat(files[i][1], follow_symlinks=False)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) != (anchor.dev, anchor.ino):
            continue
        ident = identity_of(files[i][1])  # None, or another file if the name moved meanwhile
        if ident is not None and ident.same_file(anchor):
            return i
    return None


def session_position(log_path: str, anchor: FileIdentity | None = None) -> tuple[dict[str, Any], SessionStart]:
    """A follower position that reads the session of ``anchor`` (default: of the live LOG) from
    its first LOG file on, and what was found.

    ``anchor`` identifies a LOG file of the session (the live LOG when a database was just
    opened): it may have been renamed to ``LOG.old.*`` since.
    """
    files = _listing(log_path)
    at = None
    if anchor is not None:
        at = _find(files, anchor)
        for _again in range(3):
            if at is not None:
                break
            # Renamed to LOG.old.* after our listing (the DB opened again meanwhile): list again.
            files = _listing(log_path)
            at = _find(files, anchor)
    if at is None:  # no anchor, or the anchor is gone: the live LOG's session
        anchor = None  # (not the live file's identity)
        at = next((i for i, (order, _p) in enumerate(files) if order == LIVE), None)
    if at is None:
        return {"path": os.path.abspath(log_path), "wall_us": 0, "files": []}, SessionStart(None, [], True)
    session = session_of(files[at][1])
    first = at
    while first > 0 and session is not None and session_of(files[first - 1][1]) == session:
        first -= 1
    # The session's files are named by what they are (a rename between now and the follower's
    # own look at them cannot make it read another session first); every file renamed after
    # the one before the session is read from its start too.
    since = files[first - 1][0] if first > 0 else 0
    ours = [path for _o, path in files[first:at + 1]]
    idents = [identity_of(path) for path in ours[:-1]] + [anchor or identity_of(ours[-1])]
    start = SessionStart(session, ours, _has_open_mark(ours[0]))
    position = {"path": os.path.abspath(log_path), "wall_us": since,
                "files": [{**i.to_json(), "offset": 0} for i in idents if i is not None]}
    return position, start

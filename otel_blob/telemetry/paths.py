"""The path policy (``file_paths``): how file and DB paths leave the process.

``full``: as they are. ``hash``: the first 16 hex digits of their SHA-256 -- the
same path always gives the same stand-in, so records still group by file and DB
without naming them. ``none``: left out. The policy covers every attribute, span,
metric and log body, and also the paths RocksDB writes into its status texts (an
unlink error names the file): without that, ``rocksdb.status`` would leak what
the policy hides.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["hash_path", "shown_path", "status_text"]


def hash_path(path: str) -> str:
    """The stable stand-in for a path in ``file_paths="hash"``: SHA-256 hex, 16 chars."""
    return hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def shown_path(path: str | None, file_paths: str) -> str | None:
    """A path as exported under ``file_paths``: as is (``full``), its hash, or None (``none``)."""
    if path is None or file_paths == "full":
        return path
    return hash_path(path) if file_paths == "hash" else None


# An absolute path inside a status text: it ends at a blank or at the punctuation RocksDB puts after it.
_ABS_PATH_RE = re.compile(r"/[^\s:,;'\"]+")


def status_text(status: str, file_paths: str, db_name: str, db_shown: str | None, path: str | None) -> str:
    """RocksDB's status text, its paths replaced unless ``file_paths="full"``.

    ``hash``: the file's and the DB's own paths by the very stand-ins their
    attributes carry, any other absolute path by its hash; ``none``: every
    absolute path by ``<path>``.
    """
    if file_paths == "full" or "/" not in status:
        return status
    if file_paths == "hash":
        if path:
            status = status.replace(path, hash_path(path))
        status = status.replace(db_name, db_shown or "")
        return _ABS_PATH_RE.sub(lambda m: hash_path(m.group(0)), status)
    return _ABS_PATH_RE.sub("<path>", status)

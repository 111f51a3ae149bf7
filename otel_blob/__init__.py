"""otel_blob: RocksDB blob file lifecycle as events (and OpenTelemetry).

RocksDB (integrated BlobDB) keeps large values in ``*.blob`` files created by
flushes and compactions and deleted when compaction or blob GC makes them
obsolete. ``otel_blob`` follows the DB's info ``LOG`` -- its ``EVENT_LOG_v1``
lines -- and turns every blob file creation and deletion (and the flush and
compaction jobs around them) into typed events for listeners.

Usage
-----

.. code-block:: python

    import logging, os, tempfile
    import rocksdict
    import otel_blob

    logging.basicConfig(level=logging.INFO)
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_enable_blob_files(True)
    opts.set_min_blob_size(512)
    db = rocksdict.Rdict(tempfile.mkdtemp(), opts)

    w = otel_blob.watch(db, otel_blob.LoggingListener())
    for i in range(100):
        db[b"key%d" % i] = os.urandom(4096)
    db.flush()
    db.close()
    w.stop()   # drains the LOG to its end: every event is delivered on return

Write your own listener by overriding what you need; every method has a no-op
default (see :class:`EventListener`). ``watch(path)`` follows a DB that another
process (or library) writes, from the end of its LOG unless ``from_start=True``.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from .events import (
    BlobFileCreationInfo,
    BlobFileDeletionInfo,
    CompactionJobInfo,
    FlushJobInfo,
    LineSkippedInfo,
    RecoveryJobInfo,
    TableFileCreationInfo,
    TableFileDeletionInfo,
    WatchInfo,
    parse_line,
)
from .layout import WatchError, info_log_path
from .listener import EventListener, LoggingListener, TeeListener, tee
from .watcher import Watch, WatchLoop, default_loop, start_watch

__all__ = [
    "BlobFileCreationInfo",
    "RocksdictInstrumentor",
    "BlobFileDeletionInfo",
    "CompactionJobInfo",
    "EventListener",
    "FlushJobInfo",
    "LineSkippedInfo",
    "LoggingListener",
    "RecoveryJobInfo",
    "TableFileCreationInfo",
    "TableFileDeletionInfo",
    "TeeListener",
    "Watch",
    "WatchError",
    "WatchInfo",
    "parse_line",
    "watch",
]


def __getattr__(name: str) -> Any:
    # The instrumentor (and with it OpenTelemetry) is imported only when asked for:
    # the engine itself never imports opentelemetry.
    if name == "RocksdictInstrumentor":
        from .instrumentor import RocksdictInstrumentor

        return RocksdictInstrumentor
    raise AttributeError(f"module 'otel_blob' has no attribute {name!r}")


def watch(
    db: Any,
    listener: EventListener | Iterable[EventListener] | None = None,
    *,
    from_start: bool | None = None,
    log_dir: str | None = None,
    blob_only: bool = False,
    poll_interval: float = 0.01,
    checkpoint: dict[str, Any] | None = None,
    loop: WatchLoop | None = default_loop,
) -> Watch:
    """Follow the info LOG of ``db`` and deliver its events to ``listener``.

    ``db`` is an open ``rocksdict.Rdict`` (only its path is kept: the watch never
    holds the database open) or a DB directory path. ``listener`` is one
    :class:`EventListener` or several (fanned out with :class:`TeeListener`);
    default: a :class:`LoggingListener`.

    Where reading starts: an Rdict is read from the start of its current LOG
    (RocksDB starts a new LOG at every open, so an Rdict just opened is seen from
    its recovery on); a path from the end of its LOG, or from its start with
    ``from_start=True``; a ``checkpoint`` (from :meth:`Watch.checkpoint`) wins
    over both. ``log_dir`` is RocksDB's ``db_log_dir``; by default it is read
    from the options RocksDB persisted in the DB directory.

    Raises :class:`WatchError` (naming the path) if ``db`` is not a directory.
    """
    if isinstance(db, (str, os.PathLike)):
        db_path = os.fspath(db)
        default_start = False
    elif callable(getattr(db, "path", None)):
        db_path = db.path()  # an Rdict: keep its path only, never the handle
        default_start = True
    else:
        raise TypeError(f"watch() takes an Rdict or a DB directory path, not {type(db).__name__}")
    if listener is None:
        listener = LoggingListener()
    elif not isinstance(listener, EventListener):
        listener = tee(listener)
    start: str | dict[str, Any]
    if checkpoint is not None:
        start = checkpoint
    else:
        start = "start" if (default_start if from_start is None else from_start) else "end"
    return start_watch(
        db_path,
        info_log_path(db_path, log_dir),
        listener,
        loop=loop,
        start=start,
        blob_only=blob_only,
        poll_interval=poll_interval,
    )

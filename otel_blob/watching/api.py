"""``otel_blob.watch()``: follow one database's LOG from Python."""

from __future__ import annotations

import os
from typing import Any, Iterable

from ..source.layout import info_log_path
from .listener import EventListener, LoggingListener, tee
from .loop import WatchLoop, default_loop
from .db_watch import DEFAULT_POLL_INTERVAL, Watch, check_db_dir

__all__ = ["start_watch", "watch"]


def start_watch(
    db_path: str,
    log_path: str,
    listener: EventListener,
    *,
    loop: WatchLoop | None = default_loop,
    **kwargs: Any,
) -> Watch:
    """Build a watch of an existing DB directory and register it with the loop
    (``loop=None``: poll it yourself). Raises :class:`WatchError` if there is no such directory."""
    check_db_dir(db_path)
    w = Watch(db_path, log_path, listener, **kwargs)
    if loop is not None:
        loop.add(w)
    return w


def watch(
    db: Any,
    listener: EventListener | Iterable[EventListener] | None = None,
    *,
    from_start: bool | None = None,
    log_dir: str | None = None,
    events: str | None = None,
    blob_only: bool = False,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    checkpoint: dict[str, Any] | None = None,
    loop: WatchLoop | None = default_loop,
) -> Watch:
    """Follow the info LOG of ``db`` and deliver its events to ``listener``.

    ``db`` is an open ``rocksdict.Rdict`` (only its path is kept: the watch never
    holds the database open) or a DB directory path. ``listener`` is one
    :class:`EventListener` or several (fanned out with :class:`TeeListener`);
    default: a :class:`LoggingListener`.

    Where reading starts: an Rdict is read from the start of its DB session
    (RocksDB starts a new LOG at every open, so an Rdict just opened is seen from
    its recovery on, also if the LOG rolled since); a path from the end of its
    LOG, or from the start of its current session with ``from_start=True`` (the
    oldest LOG file whose header names it); a ``checkpoint`` (from
    :meth:`Watch.checkpoint`) wins over both. ``log_dir`` is RocksDB's ``db_log_dir``; by default it is read
    from the options RocksDB persisted in the DB directory. ``events``: ``"all"``
    (default) or ``"blob"`` -- only blob file events (``blob_only=True`` says the same).

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
    if events not in (None, "all", "blob"):
        raise ValueError(f"events must be 'all' or 'blob', not {events!r}")
    if listener is None:
        listener = LoggingListener()
    elif not isinstance(listener, EventListener):
        listener = tee(listener)
    start: str | dict[str, Any]
    if checkpoint is not None:
        start = checkpoint
    else:
        start = "session" if (default_start if from_start is None else from_start) else "end"
    return start_watch(
        db_path,
        info_log_path(db_path, log_dir),
        listener,
        loop=loop,
        start=start,
        blob_only=blob_only or events == "blob",
        poll_interval=poll_interval,
    )

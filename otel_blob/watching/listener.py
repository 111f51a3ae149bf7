"""Listeners: what the watcher calls for every event.

:class:`EventListener` has a no-op method for every event, so a listener
overrides only what it needs (RocksDB's ``EventListener`` / Pebble's
``EventListener``). :class:`TeeListener` fans one stream out to several
listeners, each guarded on its own. :class:`LoggingListener` is the reference
implementation: one readable line per event, what Kvrocks logs natively.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from ..decode.info import (
    BatchInfo,
    BlobFileCreationInfo,
    BlobFileDeletionInfo,
    CompactionJobInfo,
    FlushJobInfo,
    LineSkippedInfo,
    RecoveryJobInfo,
    SessionInfo,
    TableFileCreationInfo,
    TableFileDeletionInfo,
    WatchInfo,
    callback_of,
)

__all__ = ["EventListener", "LoggingListener", "TeeListener", "accepting", "deliver"]

_log = logging.getLogger("otel_blob")


class EventListener:
    """Base class: every callback is a no-op. Callbacks run on the watcher's thread
    (or on the thread that calls ``stop()``/``drain()``), one at a time per watch.
    """

    def on_blob_file_created(self, info: BlobFileCreationInfo) -> None: ...
    def on_blob_file_deleted(self, info: BlobFileDeletionInfo) -> None: ...
    def on_flush_begin(self, info: FlushJobInfo) -> None: ...
    def on_flush_completed(self, info: FlushJobInfo) -> None: ...
    def on_compaction_begin(self, info: CompactionJobInfo) -> None: ...
    def on_compaction_completed(self, info: CompactionJobInfo) -> None: ...
    def on_recovery_begin(self, info: RecoveryJobInfo) -> None: ...
    def on_recovery_completed(self, info: RecoveryJobInfo) -> None: ...
    def on_table_file_created(self, info: TableFileCreationInfo) -> None: ...
    def on_table_file_deleted(self, info: TableFileDeletionInfo) -> None: ...
    def on_line_skipped(self, info: LineSkippedInfo) -> None: ...
    def on_session_started(self, info: SessionInfo) -> None: ...
    def on_session_ended(self, info: SessionInfo) -> None: ...
    def on_watch_started(self, info: WatchInfo) -> None: ...
    def on_watch_stopped(self, info: WatchInfo) -> None: ...
    def on_batch_delivered(self, info: BatchInfo) -> None: ...

    def accepting(self, timeout: float | None = 0.0) -> bool:
        """Backpressure: False asks the watch to leave the LOG unread for now.

        The LOG on disk is the buffer; a listener whose exporter is behind (a slow
        or absent Collector) says False until it has room, waiting up to
        ``timeout`` seconds (None: as long as it takes) for it.
        """
        return True


def accepting(listener: EventListener, timeout: float | None = 0.0) -> bool:
    """``listener.accepting(timeout)``, never raising (a failing check counts as room)."""
    try:
        return bool(listener.accepting(timeout))
    except Exception:
        _log.exception("listener %r failed in accepting()", listener)
        return True


def deliver(listener: EventListener, info: Any) -> bool:
    """Call the listener's method for ``info``; never raises. False if it raised."""
    try:
        getattr(listener, callback_of(info))(info)
        return True
    except Exception:
        # A listener bug must not stop other listeners, later events or the host.
        _log.exception("listener %r failed on %s", listener, type(info).__name__)
        return False


class TeeListener(EventListener):
    """Fans every event out to several listeners; one that raises does not stop the rest."""

    def __init__(self, *listeners: EventListener) -> None:
        self.listeners: tuple[EventListener, ...] = tuple(listeners)
        self.errors = 0

    def accepting(self, timeout: float | None = 0.0) -> bool:
        return all(accepting(listener, timeout) for listener in self.listeners)

    def _fan(self, info: Any) -> None:
        for listener in self.listeners:
            if not deliver(listener, info):
                self.errors += 1


def _fan_method(name: str) -> Any:
    def method(self: TeeListener, info: Any) -> None:
        self._fan(info)

    method.__name__ = name
    return method


for _name in [n for n in vars(EventListener) if n.startswith("on_")]:
    setattr(TeeListener, _name, _fan_method(_name))


def _opt(value: Any) -> str:
    return "?" if value is None else str(value)


class LoggingListener(EventListener):
    """Writes one readable line per blob file event (and, at DEBUG, per job).

    ``level`` is the level of blob file lines (INFO by default; DEBUG is common
    in production); failed operations are always WARNING.
    """

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self.logger = logger or logging.getLogger("otel_blob.events")
        self.level = level

    def on_blob_file_created(self, info: BlobFileCreationInfo) -> None:
        self.logger.log(
            self.level if info.ok else logging.WARNING,
            "blob file created: %s db=%s cf=%s job=%s reason=%s blobs=%s blob_bytes=%s size=%s status=%s",
            info.file_path, info.db_name, _opt(info.cf_name), _opt(info.job_id), info.reason,
            _opt(info.total_blob_count), _opt(info.total_blob_bytes), _opt(info.file_size), info.status,
        )

    def on_blob_file_deleted(self, info: BlobFileDeletionInfo) -> None:
        self.logger.log(
            self.level if info.ok else logging.WARNING,
            "blob file deleted: %s db=%s cf=%s job=%s size=%s status=%s",
            info.file_path, info.db_name, _opt(info.cf_name), _opt(info.job_id), _opt(info.file_size), info.status,
        )

    def _job(self, what: str, info: Any) -> None:
        self.logger.debug(
            "%s: db=%s cf=%s job=%s reason=%s", what, info.db_name, _opt(info.cf_name), info.job_id, _opt(info.reason)
        )

    def on_flush_begin(self, info: FlushJobInfo) -> None:
        self._job("flush started", info)

    def on_flush_completed(self, info: FlushJobInfo) -> None:
        self._job("flush finished", info)

    def on_compaction_begin(self, info: CompactionJobInfo) -> None:
        self._job("compaction started", info)

    def on_compaction_completed(self, info: CompactionJobInfo) -> None:
        self._job("compaction finished", info)

    def on_line_skipped(self, info: LineSkippedInfo) -> None:
        self.logger.warning("LOG line skipped: db=%s reason=%s %s", info.db_name, info.reason, info.detail)


def tee(listeners: Iterable[EventListener]) -> EventListener:
    """One listener for many: the listener itself when there is one."""
    items = list(listeners)
    return items[0] if len(items) == 1 else TeeListener(*items)

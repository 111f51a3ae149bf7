"""The typed events: one ``...Info`` per RocksDB event, as listeners receive them.

Pebble's ``event.go`` shape: ``job_id`` first, the status on the same struct,
``callback`` names the :class:`~otel_blob.watching.listener.EventListener` method
that receives it. Pure data: no I/O, no OpenTelemetry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "OK",
    "BatchInfo",
    "BlobFileCreationInfo",
    "BlobFileDeletionInfo",
    "CompactionJobInfo",
    "FlushJobInfo",
    "JobInfo",
    "LineSkippedInfo",
    "RecoveryJobInfo",
    "SessionInfo",
    "TableFileCreationInfo",
    "TableFileDeletionInfo",
    "WatchInfo",
    "callback_of",
]

OK = "OK"


class _Outcome:
    """A file event's ``ok``: RocksDB's status for it is OK."""

    __slots__ = ()
    status: str

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(slots=True)
class _FileDeletion(_Outcome):
    """What RocksDB logs of every file it deletes (``table_file_deletion``, ``blob_file_deletion``)."""

    job_id: int | None
    db_name: str
    file_path: str
    file_number: int
    status: str
    time_micros: int | None
    session_id: str | None


@dataclass(slots=True)
class BlobFileCreationInfo(_Outcome):
    """A blob file finished by a flush, compaction (incl. blob GC) or recovery."""

    callback = "on_blob_file_created"

    job_id: int | None
    db_name: str
    cf_name: str | None
    file_path: str
    file_number: int
    reason: str  # flush | compaction | recovery | unknown
    total_blob_count: int | None
    total_blob_bytes: int | None
    file_checksum: str | None
    file_checksum_func_name: str | None
    status: str
    file_size: int | None
    time_micros: int | None
    session_id: str | None
    # RocksDB's reason for the job (flush_reason / compaction_reason, e.g. "ForcedBlobGC"), when seen.
    job_reason: str | None = None


@dataclass(slots=True)
class BlobFileDeletionInfo(_FileDeletion):
    """A blob file RocksDB deleted (or failed to delete: see ``status``)."""

    callback = "on_blob_file_deleted"

    file_size: int | None = None
    cf_name: str | None = None
    # When this DB's watcher saw the creation: RocksDB time of it (for lifetimes).
    created_micros: int | None = None
    # The kind of job that deleted it (flush | compaction | recovery | unknown; purge: job 0, a
    # user thread such as an iterator's release) and RocksDB's reason for that job, when seen.
    reason: str = "unknown"
    job_reason: str | None = None
    # The decoder knew the file as live (created during the watch or present when it began):
    # its deletion ends a life a listener counted.
    known: bool = False


@dataclass(slots=True)
class TableFileCreationInfo(_Outcome):
    callback = "on_table_file_created"

    job_id: int | None
    db_name: str
    cf_name: str | None
    file_path: str
    file_number: int
    file_size: int | None
    reason: str
    status: str
    time_micros: int | None
    session_id: str | None
    oldest_blob_file_number: int | None = None


@dataclass(slots=True)
class TableFileDeletionInfo(_FileDeletion):
    callback = "on_table_file_deleted"


@dataclass(slots=True)
class JobInfo:
    job_id: int | None
    db_name: str
    cf_name: str | None
    session_id: str | None
    time_micros: int | None
    # RocksDB's reason string (flush_reason / compaction_reason); None for recovery.
    reason: str | None
    # True on the ``*_finished`` event; the ``*_started`` event has False.
    finished: bool
    # RocksDB time of the matching ``*_started`` (on finished events, when seen).
    start_micros: int | None = None
    # Every other JSON field of the event, as RocksDB wrote it.
    details: dict[str, Any] = field(default_factory=dict)
    # The JSON was cut short (RocksDB caps event lines); fields were salvaged.
    truncated: bool = False


@dataclass(slots=True)
class FlushJobInfo(JobInfo):
    callback = "on_flush_begin"  # on_flush_completed when finished (see callback_of)


@dataclass(slots=True)
class CompactionJobInfo(JobInfo):
    callback = "on_compaction_begin"


@dataclass(slots=True)
class RecoveryJobInfo(JobInfo):
    callback = "on_recovery_begin"


@dataclass(slots=True)
class LineSkippedInfo:
    """A LOG line (or event) that could not be used: counted, logged, reported."""

    callback = "on_line_skipped"

    db_name: str
    reason: str  # malformed_line | invalid_file_number | invalid_job_id | repeated_event | line_too_long | file_lost | ...
    detail: str
    log_path: str | None = None
    offset: int | None = None


@dataclass(slots=True)
class WatchInfo:
    """A watcher started or stopped following one DB's LOG."""

    callback = "on_watch_started"  # on_watch_stopped when stopped

    db_name: str
    log_path: str
    stopped: bool = False
    # Blob files found in the DB directory when watching started: number -> size.
    existing_blob_files: dict[int, int | None] = field(default_factory=dict)


@dataclass(slots=True)
class SessionInfo:
    """A DB session began (the header of an open: ``DB Session ID``) or ended (``Shutdown complete``,
    RocksDB's last line of a session: every event of the session was logged before it)."""

    callback = "on_session_started"  # on_session_ended when ended

    db_name: str
    session_id: str | None
    ended: bool = False
    # The session created the database (``Creating manifest 1``): a database at this path before
    # it was removed, and nothing known of its files holds. Said once more, after the header.
    new_db: bool = False


@dataclass(slots=True)
class BatchInfo:
    """The watcher delivered every event of the lines it just read.

    A listener that buffers (e.g. keeps a finished job's span open for the
    deletions RocksDB logs right after it) can settle here.
    """

    callback = "on_batch_delivered"

    db_name: str
    lines: int
    events: int


_FINISHED_CALLBACK = {
    FlushJobInfo: "on_flush_completed",
    CompactionJobInfo: "on_compaction_completed",
    RecoveryJobInfo: "on_recovery_completed",
}


def callback_of(info: Any) -> str:
    """The EventListener method name that receives ``info``."""
    if isinstance(info, JobInfo) and info.finished:
        return _FINISHED_CALLBACK[type(info)]
    if isinstance(info, WatchInfo) and info.stopped:
        return "on_watch_stopped"
    if isinstance(info, SessionInfo) and info.ended:
        return "on_session_ended"
    return info.callback

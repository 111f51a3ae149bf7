"""RocksDB's values as OpenTelemetry values: attributes, timestamps, log record bodies.

Every attribute key the listener sets is written here (docs/telemetry.md lists
them), in the order the exports have always had them: the attribute order is part
of the exported bytes. Only OTel attribute types leave: strings, booleans, ints
within int64, doubles and homogeneous lists of them; anything else RocksDB wrote
(deeper objects, mixed lists, ``null``, huge ints) is dropped, since the SDK
would drop it with a warning per record.
"""

from __future__ import annotations

from typing import Any

from .paths import shown_path, status_text

__all__ = [
    "EVENT_CREATED",
    "EVENT_DELETED",
    "EVENT_TABLE_CREATED",
    "EVENT_TABLE_DELETED",
    "base_attributes",
    "created_attributes",
    "created_body",
    "deleted_attributes",
    "deleted_body",
    "details_attributes",
    "file_attributes",
    "job_attributes",
    "ns",
    "table_attributes",
]

EVENT_CREATED = "rocksdb.blob_file.created"
EVENT_DELETED = "rocksdb.blob_file.deleted"
EVENT_TABLE_CREATED = "rocksdb.table_file.created"
EVENT_TABLE_DELETED = "rocksdb.table_file.deleted"

_NS_LIMIT_US = (1 << 64) // 1000


def ns(micros: Any) -> int | None:
    """RocksDB's ``time_micros`` as an OTel timestamp (ns), or None.

    OTLP timestamps are uint64 nanoseconds: anything else is no time at all.
    """
    if type(micros) is int and 0 <= micros < _NS_LIMIT_US:
        return micros * 1000
    return None


# -- RocksDB's job JSON --------------------------------------------------------------

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_SCALARS = (str, bool, int, float)


def _valid_scalar(v: Any) -> bool:
    t = type(v)
    if t is int:
        return _INT64_MIN <= v <= _INT64_MAX
    return t is str or t is bool or t is float


def _otel_value(v: Any) -> Any:
    """``v`` as an OTel attribute value, or None when it cannot be one."""
    if _valid_scalar(v):
        return v
    if isinstance(v, list):
        if not v:
            return None
        t = type(v[0])
        if t not in _SCALARS or any(type(x) is not t for x in v):
            return None
        if t is int and not all(_INT64_MIN <= x <= _INT64_MAX for x in v):
            return None
        return list(v)
    return None


# details keys that have a name of their own (not rocksdb.<kind>.<key>): they describe
# the CF's state after any kind of job
_JOB_KEYS = {
    "lsm_state": "rocksdb.job.lsm_state",
    "blob_file_head": "rocksdb.job.blob_file_head",
    "blob_file_tail": "rocksdb.job.blob_file_tail",
}
# already exported as rocksdb.<kind>.reason
_REASON_DETAIL = frozenset({"flush_reason", "compaction_reason"})


def details_attributes(kind: str, details: Any, out: dict[str, Any]) -> dict[str, Any]:
    """RocksDB's job JSON as span attributes under ``rocksdb.<kind>.*``.

    Scalars and homogeneous lists of scalars are kept; a nested object is
    flattened one level (``rocksdb.<kind>.<key>.<sub>``); anything else (deeper
    objects, mixed lists, null, ints beyond int64) is dropped.
    """
    if not isinstance(details, dict):
        return out
    prefix = "rocksdb." + kind + "."
    for k, v in details.items():
        if not isinstance(k, str) or k in _REASON_DETAIL:
            continue
        if isinstance(v, dict):
            for sk, sv in v.items():
                if isinstance(sk, str):
                    cv = _otel_value(sv)
                    if cv is not None:
                        out[prefix + k + "." + sk] = cv
            continue
        cv = _otel_value(v)
        if cv is not None:
            out[_JOB_KEYS.get(k) or prefix + k] = cv
    return out


# -- attribute sets --------------------------------------------------------------------


def base_attributes(db_shown: str | None, session: str | None, cf: str | None, job_id: Any) -> dict[str, Any]:
    """What every record, span event and span says of where it comes from."""
    a: dict[str, Any] = {"db.system.name": "rocksdb"}
    if db_shown is not None:
        a["rocksdb.db.path"] = db_shown
    if session is not None:
        a["rocksdb.db.session_id"] = session
    if cf is not None:
        a["rocksdb.column_family"] = cf
    if type(job_id) is int:
        a["rocksdb.job.id"] = job_id
    return a


def job_attributes(db_shown: str | None, info: Any, kind: str) -> dict[str, Any]:
    """The first attributes of a job span (the caller adds the JSON's)."""
    a = base_attributes(db_shown, info.session_id, info.cf_name, info.job_id)
    if info.reason is not None:
        a["rocksdb." + kind + ".reason"] = info.reason
    return a


def file_attributes(info: Any, event: str, cf: str | None, failed: bool, path: Any,
                    db_name: str, db_shown: str | None, file_paths: str) -> dict[str, Any]:
    """What a blob or table file record / span event says of the file and its status."""
    a = base_attributes(db_shown, info.session_id, cf, info.job_id)
    a["rocksdb.event"] = event
    number = info.file_number
    if type(number) is int:
        a["rocksdb.blob_file.number" if event.startswith("rocksdb.blob") else "rocksdb.table_file.number"] = number
    status = info.status
    if isinstance(status, str):
        shown_status = a["rocksdb.status"] = status_text(status, file_paths, db_name, db_shown, path)
        if failed:  # from the text as shown: a status with no ":" before its path leaks nothing
            a["error.type"] = shown_status.split(":", 1)[0].strip() or "error"
    if isinstance(path, str):
        shown = shown_path(path, file_paths)
        if shown is not None:
            a["file.path"] = shown
        a["file.name"] = path.rsplit("/", 1)[-1]
    return a


def created_attributes(info: Any, failed: bool, db_name: str, db_shown: str | None, file_paths: str) -> dict[str, Any]:
    """The attributes of a blob file creation (its record and its span event)."""
    a = file_attributes(info, EVENT_CREATED, info.cf_name, failed, info.file_path, db_name, db_shown, file_paths)
    a["rocksdb.blob_file.reason"] = info.reason
    if info.total_blob_count is not None:
        a["rocksdb.blob_file.blob_count"] = info.total_blob_count
    if info.total_blob_bytes is not None:
        a["rocksdb.blob_file.blob_bytes"] = info.total_blob_bytes
    if info.file_checksum:
        a["rocksdb.blob_file.checksum"] = info.file_checksum
        if info.file_checksum_func_name:
            a["rocksdb.blob_file.checksum_func"] = info.file_checksum_func_name
    size = info.file_size
    if type(size) is int:
        a["file.size"] = size
    return a


def deleted_attributes(info: Any, failed: bool, size: Any, lifetime: float | None,
                       db_name: str, db_shown: str | None, file_paths: str) -> dict[str, Any]:
    """The attributes of a blob file deletion; ``size`` and ``lifetime`` as the listener knows them."""
    a = file_attributes(info, EVENT_DELETED, info.cf_name, failed, info.file_path, db_name, db_shown, file_paths)
    if type(size) is int:
        a["file.size"] = size
    if lifetime is not None:
        a["rocksdb.blob_file.lifetime_s"] = lifetime
    return a


def table_attributes(info: Any, event: str, db_name: str, db_shown: str | None, file_paths: str) -> dict[str, Any]:
    """The attributes of a table file span event (``kinds="all"``)."""
    a = file_attributes(info, event, getattr(info, "cf_name", None), info.status != "OK", info.file_path,
                        db_name, db_shown, file_paths)
    size = getattr(info, "file_size", None)
    if type(size) is int:
        a["file.size"] = size
    oldest = getattr(info, "oldest_blob_file_number", None)
    if type(oldest) is int:
        a["rocksdb.table_file.oldest_blob_file_number"] = oldest
    return a


# -- log record bodies: one line, deterministic (no wall-clock time: replays are identical) --


def _opt(v: Any) -> str:
    return "?" if v is None else str(v)


def created_body(info: Any, a: dict[str, Any], db_shown: str | None, file_paths: str) -> str:
    """``blob file created: /db/000012.blob db=/db cf=default job=4 reason=flush blobs=... status=OK``"""
    return (
        f"blob file created: {info.file_path if file_paths == 'full' else a.get('file.name')}"
        f"{'' if db_shown is None else ' db=' + db_shown} cf={_opt(info.cf_name)} job={_opt(info.job_id)}"
        f" reason={info.reason} blobs={_opt(info.total_blob_count)} blob_bytes={_opt(info.total_blob_bytes)}"
        f" size={_opt(info.file_size)} status={a.get('rocksdb.status', _opt(info.status))}"
    )


def deleted_body(info: Any, a: dict[str, Any], size: Any, lifetime: float | None, db_shown: str | None,
                 file_paths: str) -> str:
    """``blob file deleted: /db/000012.blob db=/db cf=default job=9 size=... lifetime=12.5s status=OK``"""
    return (
        f"blob file deleted: {info.file_path if file_paths == 'full' else a.get('file.name')}"
        f"{'' if db_shown is None else ' db=' + db_shown} cf={_opt(info.cf_name)} job={_opt(info.job_id)}"
        f" size={_opt(size)}{'' if lifetime is None else ' lifetime=%.3fs' % lifetime}"
        f" status={a.get('rocksdb.status', _opt(info.status))}"
    )

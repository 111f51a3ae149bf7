"""Job events (``*_started`` / ``*_finished``) onto job spans.

What a job event says becomes the job's span: its attributes (RocksDB's JSON of
both events), its parent (an application call, manual.py), its end time and
status. A job id is only unique within a DB session: the first start of a new
session ends the open jobs of the old one (RocksDB reopened; they will never
finish). A ``*_finished`` without its start (the job began before the watch read
the LOG) still makes a span, from the finish alone, marked
``rocksdb.job.start_seen=false``. spans.py does the lifecycle.
"""

from __future__ import annotations

import time
from typing import Any

from .attributes import details_attributes, job_attributes, ns
from .db_state import DbState
from .manual import ManualCalls
from .paths import status_text
from .spans import JOB_KIND, JOB_SPAN_NAME, JobSpans
from .stats import TelemetryStats

__all__ = ["JobEvents"]


class JobEvents:
    """Turns one listener's job events into span starts and finishes (``info.job_id`` an int)."""

    __slots__ = ("_spans", "_manual", "_stats", "_file_paths")

    def __init__(self, spans: JobSpans, manual: ManualCalls, stats: TelemetryStats, file_paths: str) -> None:
        self._spans = spans
        self._manual = manual
        self._stats = stats
        self._file_paths = file_paths

    def started(self, db: DbState, info: Any) -> None:
        session = info.session_id
        jobs = db.jobs
        if session != jobs.session:
            if jobs.open:
                self._spans.abandon(jobs, db.last_ns, keep_session=session)
            jobs.session = session
        key = (db.name, session, info.job_id)
        if key in jobs.open:
            return  # the same start twice: keep the first
        cls = type(info)
        kind = JOB_KIND[cls]
        start_ns = ns(info.time_micros)
        db.seen(start_ns, time.time_ns())
        attrs = job_attributes(db.display, info, kind)
        details_attributes(kind, info.details, attrs)
        if info.truncated:
            attrs["rocksdb.job.truncated"] = True
        parent = self._manual.parent(db.name, info.reason, info.time_micros, info.cf_name)
        if parent is not None:
            self._stats.manual_parents += 1
        self._spans.begin(jobs, key, JOB_SPAN_NAME[cls], start_ns, attrs, parent, db.last_ns)

    def finished(self, db: DbState, info: Any) -> None:
        key = (db.name, info.session_id, info.job_id)
        end_ns = ns(info.time_micros)
        db.seen(end_ns, time.time_ns())
        kind = JOB_KIND[type(info)]
        jobs = db.jobs
        job = jobs.open.get(key)
        if job is not None and job.finished:
            return  # finished twice
        if job is None:
            if self._spans.has_ended(key):
                return  # finished twice
            # Started before we were reading: a span from the finish alone.
            attrs = job_attributes(db.display, info, kind)
            attrs["rocksdb.job.start_seen"] = False
            job = self._spans.begin(jobs, key, JOB_SPAN_NAME[type(info)], ns(info.start_micros) or end_ns, attrs,
                                    None, db.last_ns)
        extra = details_attributes(kind, info.details, {})
        if info.truncated:
            extra["rocksdb.job.truncated"] = True
        if info.cf_name is not None and "rocksdb.column_family" not in job.attrs:
            extra["rocksdb.column_family"] = info.cf_name
        status = info.details.get("status") if isinstance(info.details, dict) else None
        error = None
        if isinstance(status, str) and status != "OK":
            error = status_text(status, self._file_paths, db.name, db.display, None)
        self._spans.finish(jobs, job, end_ns, extra, error)

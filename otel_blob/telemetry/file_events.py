"""Blob and table file events onto a log record, a span event and metrics each.

A blob file creation or deletion becomes a log record (its body and attributes
from attributes.py) in the trace context of its job, the same attributes as a span
event on the job's open span, and counts in the metrics -- unless RocksDB reports
it failed: a failed operation is a WARN record and is not counted. A table file
event (``kinds="all"``) is only a span event, and only on a span that exists.

This is the hot path (one call per blob event; ~25,000 a second through the
whole pipeline): no work here that a batch could do once (metrics.py).
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context

from .attributes import (
    EVENT_CREATED,
    EVENT_DELETED,
    created_attributes,
    created_body,
    deleted_attributes,
    deleted_body,
    ns,
    table_attributes,
)
from .db_state import DbState
from .metrics import Instruments
from .spans import JobSpans
from .stats import TelemetryStats

__all__ = ["FileEvents"]

_SEVERITIES = {"info": (SeverityNumber.INFO, "INFO"), "debug": (SeverityNumber.DEBUG, "DEBUG")}
_WARN = (SeverityNumber.WARN, "WARN")


class FileEvents:
    """Emits what one listener makes of file events (``severity``: ``info`` or ``debug``)."""

    __slots__ = ("_logger", "_severity", "_spans", "_instruments", "_stats", "_file_paths")

    def __init__(self, logger: Any, severity: str, spans: JobSpans, instruments: Instruments, stats: TelemetryStats,
                 file_paths: str) -> None:
        self._logger = logger
        self._severity = _SEVERITIES[severity]
        self._spans = spans
        self._instruments = instruments
        self._stats = stats
        self._file_paths = file_paths

    def blob_created(self, db: DbState, info: Any) -> None:
        observed = time.time_ns()
        event_ns = ns(info.time_micros)
        db.seen(event_ns, observed)
        status = info.status
        failed = status != "OK" and status != "unknown"
        a = created_attributes(info, failed, db.name, db.display, self._file_paths)
        span, ctx = self._spans.span_for(db.jobs, db.name, info.session_id, info.job_id, True)
        if span is not None:
            span.add_event(EVENT_CREATED, a, timestamp=event_ns)
            self._stats.span_events += 1
        self._emit(EVENT_CREATED, ctx, event_ns, observed, failed, created_body(info, a, db.display, self._file_paths), a)
        if failed:
            return
        m = db.metrics
        size = info.file_size
        mattrs = m.attributes(info.cf_name, info.reason)
        m.created(mattrs, size)
        if type(size) is int:
            self._instruments.size.record(size, mattrs)
        db.live.created(info.file_number, size, info.cf_name, event_ns, m)

    def blob_deleted(self, db: DbState, info: Any) -> None:
        observed = time.time_ns()
        event_ns = ns(info.time_micros)
        db.seen(event_ns, observed)
        failed = info.status != "OK"
        number = info.file_number
        live = db.live.get(number)
        # Size and creation time: the event's (the decoder's table), else what the live counters counted.
        size = info.file_size
        if type(size) is not int and live is not None and type(live[0]) is int:
            size = live[0]
        created_ns = ns(info.created_micros)
        if created_ns is None and live is not None:
            created_ns = live[2]
        lifetime = None
        if not failed and created_ns is not None and event_ns is not None and event_ns >= created_ns:
            lifetime = (event_ns - created_ns) / 1e9
        a = deleted_attributes(info, failed, size, lifetime, db.name, db.display, self._file_paths)
        span, ctx = self._spans.span_for(db.jobs, db.name, info.session_id, info.job_id, True)
        if span is not None:
            span.add_event(EVENT_DELETED, a, timestamp=event_ns)
            self._stats.span_events += 1
        body = deleted_body(info, a, size, lifetime, db.display, self._file_paths)
        self._emit(EVENT_DELETED, ctx, event_ns, observed, failed, body, a)
        if failed:
            return  # a failed deletion does not end the file's life
        m = db.metrics
        mattrs = m.attributes(info.cf_name, None)
        m.deleted(mattrs, size)
        if lifetime is not None:
            self._instruments.lifetime.record(lifetime, mattrs)
        if live is not None:
            db.live.deleted(number, live, m)

    def table_event(self, db: DbState, info: Any, event: str) -> None:
        """A span event on the job's span, if it has one (none is made for a table file)."""
        event_ns = ns(info.time_micros)
        span, _ctx = self._spans.span_for(db.jobs, db.name, info.session_id, info.job_id, False)
        if span is None:
            return
        span.add_event(event, table_attributes(info, event, db.name, db.display, self._file_paths), timestamp=event_ns)
        self._stats.span_events += 1

    def _emit(self, event: str, ctx: Context, event_ns: int | None, observed_ns: int, failed: bool,
              body: str, attrs: dict[str, Any]) -> None:
        sev_num, sev_text = _WARN if failed else self._severity
        self._logger.emit(
            timestamp=event_ns,
            observed_timestamp=observed_ns,
            context=ctx,
            severity_number=sev_num,
            severity_text=sev_text,
            body=body,
            attributes=attrs,
            event_name=event,
        )
        self._stats.records_emitted += 1

"""The job span lifecycle: one span per background job (flush, compaction, recovery).

A job is *open* from its ``*_started`` event until its span is ended. Its span
is made (*materialised*) at once with ``kinds="all"``; with ``kinds="blob"`` only
when a blob file event of the job arrives -- started retroactively at the job's
start time -- so jobs without blob files cost no span.

Ending: RocksDB logs a job's file deletions right *after* its ``*_finished`` line,
so a finished job waits in ``to_end`` until the watcher has delivered the batch
(:meth:`JobSpans.settle`): the deletions of that batch become span events of the
job. A job still open when its watch stops or a new DB session begins is ended
with status ERROR ``unfinished`` at the last RocksDB time seen for the DB
(:meth:`JobSpans.abandon`). Both tables are bounded whatever the LOG says:

* open jobs, per DB: :data:`OPEN_JOBS_MAX`. RocksDB runs a handful of jobs at
  once and a new session ends the old one's, so only a long session whose
  ``*_finished`` lines go missing could fill it. Beyond it the oldest open job
  (by start) is forgotten, counted in ``stats.jobs_evicted``; its span, if it has
  one, is ended as ``unfinished`` (so a ``*_finished`` that still comes is
  recognised as ended; a job without span would get one from its finish alone).
* ended span contexts, for all DBs: :data:`ENDED_SPANS_MAX` (an LRU). A record that
  comes after its job's span ended (a deletion logged in a later batch) still
  carries the job's trace context, and a ``*_finished`` seen twice is recognised.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, Status, StatusCode

from ..decode.info import CompactionJobInfo, FlushJobInfo, RecoveryJobInfo
from .ids import seeded_ids
from .stats import TelemetryStats

__all__ = ["ENDED_SPANS_MAX", "JOB_KIND", "JOB_SPAN_NAME", "NO_SPAN", "OPEN_JOBS_MAX", "JobSpans", "OpenJobs"]

ENDED_SPANS_MAX = 4096
OPEN_JOBS_MAX = 4096

# The context of a record without a job span: explicitly none (not the caller's current span:
# w.stop() may be called inside an application span that has nothing to do with RocksDB's jobs).
NO_SPAN = trace.set_span_in_context(trace.INVALID_SPAN, Context())
JOB_SPAN_NAME = {FlushJobInfo: "rocksdb.flush", CompactionJobInfo: "rocksdb.compaction", RecoveryJobInfo: "rocksdb.recovery"}
JOB_KIND = {FlushJobInfo: "flush", CompactionJobInfo: "compaction", RecoveryJobInfo: "recovery"}


class _Job:
    __slots__ = ("key", "name", "start_ns", "attrs", "parent", "span", "end_ns", "finished", "error")

    def __init__(self, key: tuple[Any, ...], name: str, start_ns: int | None, attrs: dict[str, Any], parent: Context) -> None:
        self.key = key  # (db name, session id, job id): job ids restart in every session
        self.name = name
        self.start_ns = start_ns
        self.attrs = attrs
        self.parent = parent
        self.span: Span | None = None
        self.end_ns: int | None = None
        self.finished = False
        self.error: str | None = None


class OpenJobs:
    """One DB's open jobs (touched only by that DB's watch): key -> job, oldest first."""

    __slots__ = ("session", "open", "to_end")

    def __init__(self) -> None:
        self.session: str | None = None  # the session of the latest job start
        self.open: dict[tuple[Any, ...], _Job] = {}
        self.to_end: list[tuple[Any, ...]] = []  # finished: ended when their batch is delivered


class JobSpans:
    """Starts and ends the job spans of a listener; remembers the ended ones (LRU)."""

    __slots__ = ("_tracer", "_stats", "_every_job", "_ended", "_lock", "_on_dropped")

    def __init__(self, tracer: Any, stats: TelemetryStats, every_job: bool,
                 on_dropped: Any = None) -> None:
        self._tracer = tracer
        self._stats = stats
        # Told of span events a span had to drop (``on_dropped(n)``): a tracer provider's
        # event limit (the SDK's default is 128; a compaction can make more blob files).
        self._on_dropped = on_dropped
        self._every_job = every_job  # kinds="all": a span for every job, from its start
        self._ended: OrderedDict[tuple[Any, ...], SpanContext] = OrderedDict()
        self._lock = threading.Lock()  # _ended: the watches of several DBs may run on several threads

    def renew_lock(self) -> None:
        """A new lock (in a forked child: the parent's may be held by a thread that is gone)."""
        self._lock = threading.Lock()

    def begin(self, jobs: OpenJobs, key: tuple[Any, ...], name: str, start_ns: int | None, attrs: dict[str, Any],
              parent: Context | None, last_ns: int | None) -> _Job:
        """Open a job (``key`` not open yet); ``parent``: an application call's context, or None."""
        job = _Job(key, name, start_ns, attrs, parent if parent is not None else NO_SPAN)
        opened = jobs.open
        opened[key] = job
        if len(opened) > OPEN_JOBS_MAX:
            oldest = opened.pop(next(iter(opened)))
            self._stats.jobs_evicted += 1
            if oldest.finished:
                self._end(oldest)  # its to_end entry finds nothing to end any more
            else:
                self._end_unfinished(oldest, last_ns)
        if self._every_job:
            self._materialize(job)
        return job

    def finish(self, jobs: OpenJobs, job: _Job, end_ns: int | None, extra: dict[str, Any], error: str | None) -> None:
        """The job's ``*_finished`` event: its attributes, status and end time; ended at the next settle."""
        if error is not None:
            job.error = error
        job.attrs.update(extra)
        if job.span is not None and extra:
            job.span.set_attributes(extra)
        job.finished = True
        job.end_ns = end_ns
        jobs.to_end.append(job.key)

    def has_ended(self, key: tuple[Any, ...]) -> bool:
        with self._lock:
            return key in self._ended

    def span_for(self, jobs: OpenJobs, db_name: str, session: str | None, job_id: Any,
                 materialize: bool) -> tuple[Span | None, Context]:
        """The open span of a job (started now if ``materialize`` and needed) and the context
        of its records: that span, the ended span's context, or none."""
        if type(job_id) is not int or job_id == 0:  # job 0: a user thread, never a job
            return None, NO_SPAN
        key = (db_name, session, job_id)
        job = jobs.open.get(key)
        if job is not None:
            span = job.span
            if span is None:
                if not materialize:
                    return None, NO_SPAN
                span = self._materialize(job)
            return span, trace.set_span_in_context(span, Context())
        with self._lock:
            ctx = self._ended.get(key)
        if ctx is not None:
            return None, trace.set_span_in_context(NonRecordingSpan(ctx), Context())
        return None, NO_SPAN

    def settle(self, jobs: OpenJobs) -> None:
        """End the spans of the jobs that finished (their batch is delivered: so are their deletions)."""
        if not jobs.to_end:
            return
        keys, jobs.to_end = jobs.to_end, []
        for key in keys:
            job = jobs.open.pop(key, None)
            if job is not None:
                self._end(job)

    def abandon(self, jobs: OpenJobs, last_ns: int | None, keep_session: str | None = None, *,
                all_sessions: bool = False) -> None:
        """End (ERROR, "unfinished") the open jobs of sessions other than ``keep_session`` (or all)."""
        self.settle(jobs)
        for key, job in list(jobs.open.items()):
            if all_sessions or key[1] != keep_session:
                del jobs.open[key]
                self._end_unfinished(job, last_ns)

    # -- internals ---------------------------------------------------------------------

    def _materialize(self, job: _Job) -> Span:
        with seeded_ids(job.key + (job.name,)):
            span = self._tracer.start_span(job.name, context=job.parent, start_time=job.start_ns, attributes=job.attrs)
        job.span = span
        self._stats.spans_started += 1
        return span

    def _end_unfinished(self, job: _Job, last_ns: int | None) -> None:
        # at the last RocksDB time seen for the DB (not before the job's start); a job without span is forgotten
        if job.span is not None:
            job.error = "unfinished"
            job.end_ns = last_ns if last_ns is not None and (job.start_ns is None or last_ns >= job.start_ns) else job.start_ns
            self._stats.spans_unfinished += 1
            self._end(job)

    def _end(self, job: _Job) -> None:
        span = job.span
        if span is None:
            return
        if job.error is not None:
            span.set_status(Status(StatusCode.ERROR, job.error))
        end_ns = job.end_ns
        if end_ns is not None and job.start_ns is not None and end_ns < job.start_ns:
            end_ns = job.start_ns
        span.end(end_time=end_ns)
        self._stats.spans_ended += 1
        dropped = getattr(span, "dropped_events", 0)  # ReadableSpan's; 0 for other spans
        if type(dropped) is int and dropped > 0 and self._on_dropped is not None:
            self._on_dropped(dropped)
        ctx = span.get_span_context()
        with self._lock:
            ended = self._ended
            ended[job.key] = ctx
            if len(ended) > ENDED_SPANS_MAX:
                ended.popitem(last=False)

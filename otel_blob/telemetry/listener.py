"""TelemetryListener: a watch's event stream as OpenTelemetry log records, spans and metrics.

The listener is the EventListener the watch calls; each callback hands the event
to the part that maps it (docs/telemetry.md is the contract):

* file_events.py -- one **log record** per blob file creation and deletion, in the trace
  context of the job that made or removed the file, the same as a span event of
  that job, and the **metrics** (metrics.py: instruments and per-batch sums;
  live.py: what the live counters counted; attributes.py, paths.py);
* job_events.py -- one **span** per background job (spans.py: lifecycle; ids.py:
  deterministic ids; manual.py: the application calls that parent them).

Threading: callbacks of one watch are serialized by the watcher; the state of a
DB (db_state.py) is only touched from the callbacks of that DB's watch, except its
metric sums (:meth:`TelemetryListener.flush_metrics` may run on any thread).
:meth:`TelemetryListener.manual_operation` may be called from any application
thread. Each part that is shared across threads has its own lock; none is held
while the SDK exports. Every callback is guarded: a failure is counted as a drop
and logged, never raised into the watcher.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable

from opentelemetry import metrics, trace
from opentelemetry._logs import get_logger_provider
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext

from ..decode.info import (
    BatchInfo, BlobFileCreationInfo, BlobFileDeletionInfo, CompactionJobInfo, FlushJobInfo, LineSkippedInfo,
    RecoveryJobInfo, SessionInfo, TableFileCreationInfo, TableFileDeletionInfo, WatchInfo,
)
from ..settings import INSTRUMENTATION
from ..watching.listener import EventListener
from .attributes import EVENT_TABLE_CREATED, EVENT_TABLE_DELETED
from .db_state import DbState
from .file_events import FileEvents
from .ids import given_ids
from .job_events import JobEvents
from .manual import ManualCalls, ManualOp
from .metrics import Instruments
from .paths import shown_path
from .scope import SCHEMA_URL, SCOPE_NAME, SCOPE_VERSION
from .spans import JobSpans
from .stats import TelemetryStats

__all__ = ["TelemetryListener"]

_log = logging.getLogger("otel_blob")

_SETTINGS = {s.name: s for s in INSTRUMENTATION}


def _option(name: str, value: str, setting: str) -> str:
    """``value`` as the parser of the instrumentation's ``setting`` reads it (one list of
    allowed values for the listener, the environment and the CLI); a ValueError names them."""
    s = _SETTINGS[setting]
    try:
        return s.parse(value)
    except ValueError:
        allowed = [repr(v) for v in s.expected.split(" | ")]
        raise ValueError(f"{name} must be {', '.join(allowed[:-1])} or {allowed[-1]}, not {value!r}") from None


def _guarded(method: Callable[..., None]) -> Callable[..., None]:
    """A callback that never raises into the watcher: failures are counted as drops."""

    def wrapper(self: TelemetryListener, info: Any) -> None:
        try:
            method(self, info)
        except Exception:
            self._failed(method.__name__)

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


class TelemetryListener(EventListener):
    """Exports the event stream as OpenTelemetry log records, spans and metrics.

    ``severity``: ``"info"`` | ``"debug"`` -- severity of blob file log records
    (a failed operation is always WARN). ``kinds``: ``"blob"`` -- blob file log
    records and span events, job spans for the jobs that created or deleted a blob
    file; ``"all"`` -- also table file span events and a span for every job.
    ``file_paths``: ``"full"`` | ``"hash"`` | ``"none"`` -- how ``file.path`` and
    ``rocksdb.db.path`` are exported (as is, SHA-256 hex prefix, left out).
    ``lag_metric``: record ``otel_blob.export.lag`` (False for a replay of history,
    where observed minus event time is the history's age, not a delay).
    None providers: the global ones.
    """

    def __init__(
        self,
        *,
        tracer_provider: Any = None,
        logger_provider: Any = None,
        meter_provider: Any = None,
        severity: str = "info",
        kinds: str = "blob",
        file_paths: str = "full",
        backpressure: Callable[[float | None], bool] | None = None,
        lag_metric: bool = True,
    ) -> None:
        severity, kinds, file_paths = (severity or "info").lower(), (kinds or "blob").lower(), (file_paths or "full").lower()
        self.severity = _option("severity", severity, "severity")
        self.kinds = _option("kinds", kinds, "events")
        self.file_paths = _option("file_paths", file_paths, "file_paths")
        self._backpressure = backpressure
        self._all = self.kinds == "all"
        tp = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        lp = logger_provider if logger_provider is not None else get_logger_provider()
        mp = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        tracer = self._tracer = tp.get_tracer(SCOPE_NAME, SCOPE_VERSION, schema_url=SCHEMA_URL)
        logger = lp.get_logger(SCOPE_NAME, SCOPE_VERSION, schema_url=SCHEMA_URL)
        self._instruments = Instruments(mp.get_meter(SCOPE_NAME, SCOPE_VERSION, schema_url=SCHEMA_URL))
        self._lag = self._instruments.lag if lag_metric else None
        self.stats = TelemetryStats()
        self._span_events_warned = False
        self._spans = JobSpans(tracer, self.stats, self._all, self._span_events_dropped)
        self._manual = ManualCalls()
        self._jobs = JobEvents(self._spans, self._manual, self.stats, self.file_paths)
        self._files = FileEvents(logger, self.severity, self._spans, self._instruments, self.stats, self.file_paths)
        self._dbs: dict[str, DbState] = {}
        self._dbs_lock = threading.Lock()  # creating a DbState

    # -- public helpers -----------------------------------------------------------

    def manual_operation(self, db_path: str, kind: str, context: Context | None = None,
                         cf: str | None = None) -> ManualOp:
        """Register an application call that makes RocksDB run a job.

        A flush or compaction of ``db_path`` whose ``*_started`` event has a manual
        reason and a RocksDB time inside [call start, call end + 50 ms] gets
        ``context`` as its parent. ``kind``: ``flush`` or ``compact_range``. ``cf``: the
        column family the call acts on (given, only its jobs match: two threads' calls
        on two column families at once, or RocksDB's own flush at close, do not get each
        other's parents).
        """
        if context is None:
            from opentelemetry.context import get_current

            context = get_current()
        return self._manual.register(os.path.abspath(db_path), kind, context, cf)

    def call_span(self, name: str, trace_id: int, span_id: int, parent: SpanContext | None, start_ns: int,
                  attributes: dict[str, Any]) -> Any:
        """Start the span of an application call (``rocksdict.flush``) with the ids the
        application gave its context: the helper process records it, so the application's
        own providers never hold -- or wait at exit to export -- a span of ours. End it with
        ``span.end(end_time=...)``. Needs a TracerProvider with :class:`DeterministicIdGenerator`."""
        context = trace.set_span_in_context(NonRecordingSpan(parent)) if parent is not None else Context()
        with given_ids(trace_id, span_id):
            return self._tracer.start_span(name, context=context, start_time=start_ns, attributes=attributes)

    def path_attr(self, path: str) -> str | None:
        """A DB or file path as this listener exports it (``rocksdb.db.path``):
        the absolute path, its hash, or None with ``file_paths="none"``."""
        return shown_path(os.path.abspath(path), self.file_paths)

    def accepting(self, timeout: float | None = 0.0) -> bool:
        # Backpressure from our own export queues (otel_blob.export); an application's
        # providers give no such signal, and then the LOG is read as it grows.
        check = self._backpressure
        return True if check is None else check(timeout)

    def count_dropped(self, n: int, reason: str, signal_name: str | None = None) -> None:
        """Count ``n`` telemetry items lost after this listener made them (e.g. a full export queue)."""
        self.stats.dropped += n
        attrs = {"reason": reason}
        if signal_name:
            attrs["signal"] = signal_name
        try:
            self._instruments.dropped.add(n, attrs)
        except Exception:
            pass

    def _span_events_dropped(self, n: int) -> None:
        # A job span had more blob (or table) file events than its provider keeps: the
        # log records still carry every file, the trace does not. Said once, counted always.
        if not self._span_events_warned:
            self._span_events_warned = True
            _log.warning("a job span had more file events than its tracer provider keeps (%d dropped); raise "
                         "OTEL_SPAN_EVENT_COUNT_LIMIT -- every file is still in the log records", n)
        self.count_dropped(n, "span_event_limit", "traces")

    def pending_operations(self) -> int:
        return len(self._manual)

    def flush_metrics(self) -> None:
        """Hand the counter and up-down counter sums of the events delivered so far to the SDK.

        Callbacks add to per-DB sums (one ``add()`` per instrument and attribute set
        instead of one per event); the listener flushes them itself after every batch
        (``on_batch_delivered``) and when a watch starts or stops. Call this before
        collecting metrics (``MeterProvider.force_flush()`` / ``shutdown()``) when events
        may have been delivered since. Any thread; never raises.
        """
        with self._dbs_lock:
            dbs = list(self._dbs.values())
        for db in dbs:
            db.metrics.flush(self._instruments, self._failed)

    def renew_locks(self) -> None:
        """New locks for every part, in a forked child: a lock some thread of the parent
        held at the fork would stay held forever in the child."""
        self._dbs_lock = threading.Lock()
        self._manual.renew_lock()
        self._spans.renew_lock()
        for db in list(self._dbs.values()):
            db.metrics.renew_lock()

    # The rocksdict instrumentation calls renew_locks() in a forked child (instrument/instrumentor.py).
    # -- internals ------------------------------------------------------------------

    def _failed(self, where: str) -> None:
        st = self.stats
        st.callback_errors += 1
        st.dropped += 1
        if st.callback_errors <= 5 or st.callback_errors % 1000 == 0:
            _log.warning("telemetry listener failed in %s (failure %d)", where, st.callback_errors, exc_info=True)
        try:
            self._instruments.dropped.add(1, {"reason": "listener_error"})
        except Exception:
            pass

    def _db(self, name: str) -> DbState:
        db = self._dbs.get(name)
        if db is None:
            with self._dbs_lock:
                db = self._dbs.get(name)
                if db is None:
                    if not isinstance(name, str):
                        raise TypeError(f"db_name must be a str, not {type(name).__name__}")
                    db = self._dbs[name] = DbState(name, shown_path(name, self.file_paths), self._lag)
        return db

    # -- the callbacks -------------------------------------------------------------------

    def _job_started(self, info: Any) -> None:
        if type(info.job_id) is int:
            self._jobs.started(self._db(info.db_name), info)

    def _job_finished(self, info: Any) -> None:
        if type(info.job_id) is int:
            self._jobs.finished(self._db(info.db_name), info)

    @_guarded
    def on_flush_begin(self, info: FlushJobInfo) -> None:
        self._job_started(info)

    @_guarded
    def on_compaction_begin(self, info: CompactionJobInfo) -> None:
        self._job_started(info)

    @_guarded
    def on_recovery_begin(self, info: RecoveryJobInfo) -> None:
        self._job_started(info)

    @_guarded
    def on_flush_completed(self, info: FlushJobInfo) -> None:
        self._job_finished(info)

    @_guarded
    def on_compaction_completed(self, info: CompactionJobInfo) -> None:
        self._job_finished(info)

    @_guarded
    def on_recovery_completed(self, info: RecoveryJobInfo) -> None:
        self._job_finished(info)

    @_guarded
    def on_blob_file_created(self, info: BlobFileCreationInfo) -> None:
        self._files.blob_created(self._db(info.db_name), info)

    @_guarded
    def on_blob_file_deleted(self, info: BlobFileDeletionInfo) -> None:
        self._files.blob_deleted(self._db(info.db_name), info)

    @_guarded
    def on_table_file_created(self, info: TableFileCreationInfo) -> None:
        if self._all:  # table files are span events of kinds="all" only
            self._files.table_event(self._db(info.db_name), info, EVENT_TABLE_CREATED)

    @_guarded
    def on_table_file_deleted(self, info: TableFileDeletionInfo) -> None:
        if self._all:
            self._files.table_event(self._db(info.db_name), info, EVENT_TABLE_DELETED)

    @_guarded
    def on_batch_delivered(self, info: BatchInfo) -> None:
        db = self._dbs.get(info.db_name)
        if db is not None:
            try:
                self._spans.settle(db.jobs)
            finally:
                db.metrics.flush(self._instruments, self._failed)

    @_guarded
    def on_session_started(self, info: SessionInfo) -> None:
        if info.new_db:  # a database created at this path: what the live counters held is gone
            db = self._db(info.db_name)
            try:
                db.live.forget_all(db.metrics)
            finally:
                db.metrics.flush(self._instruments, self._failed)

    @_guarded
    def on_watch_started(self, info: WatchInfo) -> None:
        db = self._db(info.db_name)
        try:
            # Reconcile with what the directory holds (a listener reused across watches).
            db.live.reconcile(info.existing_blob_files or {}, db.metrics)
        finally:
            db.metrics.flush(self._instruments, self._failed)

    @_guarded
    def on_watch_stopped(self, info: WatchInfo) -> None:
        db = self._dbs.get(info.db_name)
        if db is not None:
            try:
                self._spans.abandon(db.jobs, db.last_ns, all_sessions=True)
            finally:
                db.metrics.flush(self._instruments, self._failed)

    @_guarded
    def on_line_skipped(self, info: LineSkippedInfo) -> None:
        self.stats.lines_skipped += 1
        db = self._dbs.get(info.db_name)
        attrs = {"reason": str(info.reason)}
        if db is not None and db.display is not None:
            attrs["rocksdb.db.path"] = db.display
        elif db is None and isinstance(info.db_name, str) and self.file_paths != "none":
            attrs["rocksdb.db.path"] = shown_path(info.db_name, self.file_paths)
        self._instruments.skipped.add(1, attrs)

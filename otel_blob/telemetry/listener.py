"""OpenTelemetry for the event stream: log records, job spans and metrics.

:class:`TelemetryListener` is an :class:`~otel_blob.listener.EventListener` that
maps the typed events of the watcher onto the OpenTelemetry APIs:

* one **log record** per blob file creation and deletion
  (``event_name`` ``rocksdb.blob_file.created`` / ``rocksdb.blob_file.deleted``),
  stamped with RocksDB's own event time and carrying the trace/span id of the
  background job that made or removed the file;
* one **span** per background job (``rocksdb.flush``, ``rocksdb.compaction``,
  ``rocksdb.recovery``), started and ended at RocksDB's timestamps, with the blob
  (and, in ``kinds="all"``, table) file events of the job as span events;
* **metrics**: created/deleted blob files and bytes, live blob files and bytes
  per DB, blob file size and lifetime histograms and the engine's own health.

The whole mapping is documented in ``docs/telemetry.md``.

:class:`DeterministicIdGenerator` gives job spans ids derived from
(db path, session id, job id, span name), so replaying the same LOG twice yields
the same trace and span ids (the CLI installs it in the TracerProvider it owns).

Threading: callbacks of one watch are serialized by the watcher; the state of a
DB is only touched from the callbacks of that DB's watch. :meth:`manual_operation`
may be called from any application thread (its registry has its own lock). No
lock of ours is held while the SDK exports.

Metric cost: counters and up-down counters are summed per (instrument, attribute
set) in plain dicts while a batch is delivered and handed to the SDK with one
``add()`` each when the batch ends (``on_batch_delivered``), when a watch starts
or stops, or on :meth:`TelemetryListener.flush_metrics`; histograms still record
every value. What a collection exports after a batch is what one ``add()`` per
event gives; a collection in the middle of a batch sees that batch later.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import threading
import time
from collections import OrderedDict, deque
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from opentelemetry import metrics, trace
from opentelemetry._logs import SeverityNumber, get_logger_provider
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, Status, StatusCode

from ..decode.info import (
    BatchInfo,
    BlobFileCreationInfo,
    BlobFileDeletionInfo,
    CompactionJobInfo,
    FlushJobInfo,
    LineSkippedInfo,
    RecoveryJobInfo,
    TableFileCreationInfo,
    TableFileDeletionInfo,
    WatchInfo,
)
from ..watch.listener import EventListener

__all__ = [
    "DeterministicIdGenerator",
    "ManualOp",
    "TelemetryListener",
    "TelemetryStats",
    "hash_path",
    "seeded_ids",
    "shown_path",
]

_log = logging.getLogger("otel_blob")

SCOPE_NAME = "otel_blob"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("otel_blob")
    except Exception:  # not installed (a source checkout on sys.path)
        return "0"


# ---------------------------------------------------------------------------
# Deterministic ids
# ---------------------------------------------------------------------------

_seed = threading.local()


@contextmanager
def seeded_ids(key: tuple[Any, ...] | None) -> Iterator[None]:
    """Within this block, spans started on this thread by a TracerProvider using
    :class:`DeterministicIdGenerator` get ids derived from ``key``."""
    _seed.key = key
    try:
        yield
    finally:
        _seed.key = None


def _digest(key: tuple[Any, ...], what: bytes) -> bytes:
    h = hashlib.sha256(what)
    h.update(repr(key).encode("utf-8", "surrogateescape"))
    return h.digest()


class DeterministicIdGenerator(IdGenerator):
    """Trace and span ids from a hash of the span's key (see :func:`seeded_ids`).

    :class:`TelemetryListener` seeds every job span with
    ``(db path, session id, job id, span name)``; a span started without a seed
    (any other span of the process) gets random ids.
    """

    def generate_trace_id(self) -> int:
        key = getattr(_seed, "key", None)
        if key is not None:
            tid = int.from_bytes(_digest(key, b"trace")[:16], "big")
            if tid != trace.INVALID_TRACE_ID:
                return tid
        return _random_nonzero(128)

    def generate_span_id(self) -> int:
        key = getattr(_seed, "key", None)
        if key is not None:
            sid = int.from_bytes(_digest(key, b"span")[:8], "big")
            if sid != trace.INVALID_SPAN_ID:
                return sid
        return _random_nonzero(64)


def _random_nonzero(bits: int) -> int:
    while True:
        v = random.getrandbits(bits)
        if v:
            return v


# ---------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------


def hash_path(path: str) -> str:
    """The stable stand-in for a path in ``file_paths="hash"``: SHA-256 hex, 16 chars."""
    return hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def shown_path(path: str | None, file_paths: str) -> str | None:
    """A path as exported under ``file_paths``: as is (``full``), its hash, or None (``none``)."""
    if path is None or file_paths == "full":
        return path
    return hash_path(path) if file_paths == "hash" else None


_ABS_PATH_RE = re.compile(r"/[^\s:,;'\"]+")

# ---------------------------------------------------------------------------
# Attribute conversion
# ---------------------------------------------------------------------------

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


# details keys that have a name of their own (not rocksdb.<kind>.<key>)
_JOB_KEYS = {
    "lsm_state": "rocksdb.job.lsm_state",
    "blob_file_head": "rocksdb.job.blob_file_head",
    "blob_file_tail": "rocksdb.job.blob_file_tail",
}
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


# ---------------------------------------------------------------------------
# Manual operations (the application's Rdict.flush() / compact_range())
# ---------------------------------------------------------------------------

_MANUAL_FLUSH_REASONS = frozenset({"Manual Flush"})
_COMPACT_RANGE_REASONS = frozenset({"ManualCompaction", "Manual Compaction"})
_MANUAL_REASONS = _MANUAL_FLUSH_REASONS | _COMPACT_RANGE_REASONS
MANUAL_SLACK_US = 50_000  # the job's started event may be stamped a little after the call returned
MANUAL_OPS_MAX = 256
MANUAL_OP_TTL_US = 120_000_000  # a finished call is forgotten 2 min after it returned


def _op_group(kind: str) -> str:
    k = kind.lower()
    if "compact" in k:
        return "compact_range"
    if "flush" in k:
        return "flush"
    return "any"


class ManualOp:
    """One application call (``Rdict.flush()`` / ``compact_range()``) in progress.

    Call :meth:`done` when the call returns (or use it as a context manager).
    """

    __slots__ = ("db_path", "kind", "group", "context", "start_us", "end_us")

    def __init__(self, db_path: str, kind: str, context: Context) -> None:
        self.db_path = db_path
        self.kind = kind
        self.group = _op_group(kind)
        self.context = context
        self.start_us = time.time_ns() // 1000
        self.end_us: int | None = None

    def done(self) -> None:
        if self.end_us is None:
            self.end_us = time.time_ns() // 1000

    def __enter__(self) -> ManualOp:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.done()

    def matches(self, db_path: str, group: str, when_us: int) -> bool:
        if db_path != self.db_path or when_us < self.start_us:
            return False
        if self.end_us is not None and when_us > self.end_us + MANUAL_SLACK_US:
            return False
        return self.group == "any" or self.group == group

    def __repr__(self) -> str:
        return f"<ManualOp {self.kind} {self.db_path} [{self.start_us}, {self.end_us}]>"


# ---------------------------------------------------------------------------
# Stats
# ---------------------------------------------------------------------------


class TelemetryStats:
    """Counters of a TelemetryListener (approximate under concurrency; they only grow)."""

    __slots__ = (
        "records_emitted",
        "span_events",
        "spans_started",
        "spans_ended",
        "spans_unfinished",
        "manual_parents",
        "callback_errors",
        "dropped",
        "lines_skipped",
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        return f"TelemetryStats({self.as_dict()})"


# ---------------------------------------------------------------------------
# Per-DB state
# ---------------------------------------------------------------------------


class _Job:
    __slots__ = ("key", "name", "start_ns", "attrs", "parent", "span", "end_ns", "finished", "error")

    def __init__(self, key: tuple[Any, ...], name: str, start_ns: int | None, attrs: dict[str, Any], parent: Context) -> None:
        self.key = key
        self.name = name
        self.start_ns = start_ns
        self.attrs = attrs
        self.parent = parent
        self.span: Span | None = None
        self.end_ns: int | None = None
        self.finished = False
        self.error: str | None = None


class _Db:
    """What the listener knows of one DB (touched only by that DB's watch)."""

    __slots__ = ("name", "display", "session", "open", "to_end", "live", "last_ns", "metric_attrs", "db_attrs", "pending")

    def __init__(self, name: str, display: str | None) -> None:
        self.name = name
        self.display = display  # rocksdb.db.path as exported (path, hash or None)
        self.session: str | None = None
        self.open: dict[tuple[Any, ...], _Job] = {}
        self.to_end: list[tuple[Any, ...]] = []
        # live blob files: number -> [size, metric attrs of the live counters]
        self.live: dict[int, list[Any]] = {}
        self.last_ns: int | None = None  # latest RocksDB event time seen
        self.metric_attrs: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.db_attrs: dict[str, Any] = {} if display is None else {"rocksdb.db.path": display}
        # Counter / up-down counter sums not yet handed to the SDK (see _acc): id(attrs) ->
        # [attrs, created, created.bytes, deleted, deleted.bytes, live, live.bytes].
        self.pending: dict[int, list[Any]] = {}


_NO_SPAN = trace.set_span_in_context(trace.INVALID_SPAN, Context())
_JOB_SPAN_NAME = {FlushJobInfo: "rocksdb.flush", CompactionJobInfo: "rocksdb.compaction", RecoveryJobInfo: "rocksdb.recovery"}
_JOB_KIND = {FlushJobInfo: "flush", CompactionJobInfo: "compaction", RecoveryJobInfo: "recovery"}
_SEVERITY = {"info": (SeverityNumber.INFO, "INFO"), "debug": (SeverityNumber.DEBUG, "DEBUG")}
_WARN = (SeverityNumber.WARN, "WARN")
ENDED_SPANS_MAX = 4096

EVENT_CREATED = "rocksdb.blob_file.created"
EVENT_DELETED = "rocksdb.blob_file.deleted"
EVENT_TABLE_CREATED = "rocksdb.table_file.created"
EVENT_TABLE_DELETED = "rocksdb.table_file.deleted"

_SIZE_BUCKETS = [float(1 << n) for n in range(10, 34, 2)]  # 1 KiB .. 8 GiB, x4
_LIFETIME_BUCKETS = [1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200, 21600, 43200, 86400, 259200, 604800, 2592000]
_LAG_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]


def _ns(micros: Any) -> int | None:
    # OTLP timestamps are uint64 nanoseconds: anything else is no time at all.
    if type(micros) is int and 0 <= micros < _NS_LIMIT_US:
        return micros * 1000
    return None


_NS_LIMIT_US = (1 << 64) // 1000


def _opt(v: Any) -> str:
    return "?" if v is None else str(v)


# Slots of a pending-sum row (_Db.pending): index 0 is the attribute dict.
_CREATED, _CREATED_BYTES, _DELETED, _DELETED_BYTES, _LIVE, _LIVE_BYTES = range(1, 7)


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
        severity = (severity or "info").lower()
        kinds = (kinds or "blob").lower()
        file_paths = (file_paths or "full").lower()
        if severity not in _SEVERITY:
            raise ValueError(f"severity must be 'info' or 'debug', not {severity!r}")
        if kinds not in ("blob", "all"):
            raise ValueError(f"kinds must be 'blob' or 'all', not {kinds!r}")
        if file_paths not in ("full", "hash", "none"):
            raise ValueError(f"file_paths must be 'full', 'hash' or 'none', not {file_paths!r}")
        self._backpressure = backpressure
        self._lag_metric = lag_metric
        self.severity = severity
        self.kinds = kinds
        self.file_paths = file_paths
        self._all = kinds == "all"
        self._severity = _SEVERITY[severity]
        version = _version()
        tp = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        lp = logger_provider if logger_provider is not None else get_logger_provider()
        mp = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        self._tracer = tp.get_tracer(SCOPE_NAME, version)
        self._logger = lp.get_logger(SCOPE_NAME, version)
        meter = mp.get_meter(SCOPE_NAME, version)
        self._m_created = meter.create_counter("rocksdb.blob_file.created", "{file}", "Blob files created")
        self._m_deleted = meter.create_counter("rocksdb.blob_file.deleted", "{file}", "Blob files deleted")
        self._m_created_bytes = meter.create_counter("rocksdb.blob_file.created.bytes", "By", "Bytes of blob files created")
        self._m_deleted_bytes = meter.create_counter("rocksdb.blob_file.deleted.bytes", "By", "Bytes of blob files deleted")
        self._m_live = meter.create_up_down_counter("rocksdb.blob_file.live", "{file}", "Blob files present")
        self._m_live_bytes = meter.create_up_down_counter("rocksdb.blob_file.live.bytes", "By", "Bytes of blob files present")
        self._m_size = meter.create_histogram(
            "rocksdb.blob_file.size", "By", "Size of created blob files", explicit_bucket_boundaries_advisory=_SIZE_BUCKETS
        )
        self._m_lifetime = meter.create_histogram(
            "rocksdb.blob_file.lifetime", "s", "Blob file lifetime, creation to deletion",
            explicit_bucket_boundaries_advisory=_LIFETIME_BUCKETS,
        )
        self._m_skipped = meter.create_counter("otel_blob.lines.skipped", "{line}", "LOG lines or files that could not be used")
        self._m_dropped = meter.create_counter("otel_blob.events.dropped", "{event}", "Events lost by the telemetry listener")
        self._m_lag = meter.create_histogram(
            "otel_blob.export.lag", "s", "Observed time minus RocksDB event time",
            explicit_bucket_boundaries_advisory=_LAG_BUCKETS,
        )
        # Instrument of each pending-sum slot (index 0: the attributes).
        self._summed = (None, self._m_created, self._m_created_bytes, self._m_deleted, self._m_deleted_bytes,
                        self._m_live, self._m_live_bytes)
        self.stats = TelemetryStats()
        self._dbs: dict[str, _Db] = {}
        self._ended: OrderedDict[tuple[Any, ...], SpanContext] = OrderedDict()
        self._ops: deque[ManualOp] = deque(maxlen=MANUAL_OPS_MAX)
        self._lock = threading.Lock()  # _dbs creation, _ended, _ops

    # -- public helpers -----------------------------------------------------------

    def manual_operation(self, db_path: str, kind: str, context: Context | None = None) -> ManualOp:
        """Register an application call that makes RocksDB run a job.

        A flush or compaction of ``db_path`` whose ``*_started`` event has a manual
        reason and a RocksDB time inside [call start, call end + 50 ms] gets
        ``context`` as its parent. ``kind``: ``flush`` or ``compact_range``.
        """
        if context is None:
            from opentelemetry.context import get_current

            context = get_current()
        op = ManualOp(os.path.abspath(db_path), kind, context)
        now = op.start_us
        with self._lock:
            ops = self._ops
            while ops and ops[0].end_us is not None and ops[0].end_us + MANUAL_OP_TTL_US < now:
                ops.popleft()
            ops.append(op)  # maxlen: the oldest is dropped
        return op

    def path_attr(self, path: str) -> str | None:
        """A DB or file path as this listener exports it (``rocksdb.db.path``):
        the absolute path, its hash, or None with ``file_paths="none"``."""
        return self._path(os.path.abspath(path))

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
            self._m_dropped.add(n, attrs)
        except Exception:
            pass

    def pending_operations(self) -> int:
        with self._lock:
            return len(self._ops)

    def flush_metrics(self) -> None:
        """Hand the counter and up-down counter sums of the events delivered so far to the SDK.

        Callbacks add to per-DB sums (one ``add()`` per instrument and attribute set
        instead of one per event); the listener flushes them itself after every batch
        (``on_batch_delivered``) and when a watch starts or stops. Call this before
        collecting metrics (``MeterProvider.force_flush()`` / ``shutdown()``) when events
        may have been delivered since. Any thread; never raises.
        """
        with self._lock:
            dbs = list(self._dbs.values())
        for db in dbs:
            self._flush_db(db)

    # -- internals ------------------------------------------------------------------

    def _failed(self, where: str) -> None:
        st = self.stats
        st.callback_errors += 1
        st.dropped += 1
        if st.callback_errors <= 5 or st.callback_errors % 1000 == 0:
            _log.warning("telemetry listener failed in %s (failure %d)", where, st.callback_errors, exc_info=True)
        try:
            self._m_dropped.add(1, {"reason": "listener_error"})
        except Exception:
            pass

    def _db(self, name: str) -> _Db:
        db = self._dbs.get(name)
        if db is None:
            with self._lock:
                db = self._dbs.get(name)
                if db is None:
                    if not isinstance(name, str):
                        raise TypeError(f"db_name must be a str, not {type(name).__name__}")
                    display = shown_path(name, self.file_paths)
                    db = self._dbs[name] = _Db(name, display)
        return db

    def _path(self, path: str | None) -> str | None:
        return shown_path(path, self.file_paths)

    def _status(self, status: str, db: _Db, path: str | None) -> str:
        """RocksDB's status text, without paths unless file_paths="full"."""
        if self.file_paths == "full" or "/" not in status:
            return status
        if self.file_paths == "hash":
            if path:
                status = status.replace(path, hash_path(path))
            status = status.replace(db.name, db.display or "")
            return _ABS_PATH_RE.sub(lambda m: hash_path(m.group(0)), status)
        return _ABS_PATH_RE.sub("<path>", status)

    def _metric_attrs(self, db: _Db, cf: str | None, reason: str | None) -> dict[str, Any]:
        key = (cf, reason)
        attrs = db.metric_attrs.get(key)
        if attrs is None:
            attrs = dict(db.db_attrs)
            if cf is not None:
                attrs["rocksdb.column_family"] = cf
            if reason is not None:
                attrs["rocksdb.blob_file.reason"] = reason
            db.metric_attrs[key] = attrs
        return attrs

    def _acc(self, db: _Db, attrs: dict[str, Any], *slot_values: Any) -> None:
        """Add to the pending sums of ``attrs`` (slot, value, slot, value, ...): applied by _flush_db.

        Keyed by the identity of the cached attribute dict (the row keeps it alive);
        a slot stays None until touched, so a batch whose +1 and -1 cancel still
        adds 0 (the data point exists as it would with one add per event).
        """
        key = id(attrs)
        with self._lock:  # flush_metrics() may run on another thread
            row = db.pending.get(key)
            if row is None:
                row = db.pending[key] = [attrs, None, None, None, None, None, None]
            for i in range(0, len(slot_values), 2):
                slot = slot_values[i]
                old = row[slot]
                row[slot] = slot_values[i + 1] if old is None else old + slot_values[i + 1]

    def _flush_db(self, db: _Db) -> None:
        """One add() per pending (instrument, attributes) sum of ``db``; never raises."""
        if not db.pending:
            return
        with self._lock:
            pending, db.pending = db.pending, {}
        summed = self._summed
        for row in pending.values():
            attrs = row[0]
            for slot in range(1, 7):
                total = row[slot]
                if total is not None:
                    try:
                        summed[slot].add(total, attrs)
                    except Exception:
                        self._failed("flush_metrics")

    def _lag(self, db: _Db, event_ns: int | None, observed_ns: int) -> None:
        if event_ns is not None:
            if db.last_ns is None or event_ns > db.last_ns:
                db.last_ns = event_ns
            if self._lag_metric:
                lag = (observed_ns - event_ns) / 1e9
                self._m_lag.record(lag if lag > 0 else 0.0, db.db_attrs)

    def _base_attrs(self, db: _Db, session: str | None, cf: str | None, job_id: Any) -> dict[str, Any]:
        a: dict[str, Any] = {"db.system.name": "rocksdb"}
        if db.display is not None:
            a["rocksdb.db.path"] = db.display
        if session is not None:
            a["rocksdb.db.session_id"] = session
        if cf is not None:
            a["rocksdb.column_family"] = cf
        if type(job_id) is int:
            a["rocksdb.job.id"] = job_id
        return a

    def _match_manual(self, db_name: str, group: str, when_us: int | None) -> Context | None:
        if when_us is None:
            return None
        with self._lock:
            for op in reversed(self._ops):
                if op.matches(db_name, group, when_us):
                    return op.context
        return None

    def _materialize(self, job: _Job) -> Span:
        with seeded_ids(job.key + (job.name,)):
            span = self._tracer.start_span(job.name, context=job.parent, start_time=job.start_ns, attributes=job.attrs)
        job.span = span
        self.stats.spans_started += 1
        return span

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
        self.stats.spans_ended += 1
        ctx = span.get_span_context()
        with self._lock:
            ended = self._ended
            ended[job.key] = ctx
            if len(ended) > ENDED_SPANS_MAX:
                ended.popitem(last=False)

    def _settle(self, db: _Db) -> None:
        """End the spans of the jobs that finished (their deletions are delivered)."""
        if not db.to_end:
            return
        keys, db.to_end = db.to_end, []
        for key in keys:
            job = db.open.pop(key, None)
            if job is not None:
                self._end(job)

    def _abandon(self, db: _Db, keep_session: str | None = None, *, all_sessions: bool = False) -> None:
        """End (ERROR, "unfinished") the open jobs of other sessions (or all)."""
        self._settle(db)
        for key, job in list(db.open.items()):
            if all_sessions or key[1] != keep_session:
                del db.open[key]
                if job.span is not None:
                    job.error = "unfinished"
                    last = db.last_ns
                    job.end_ns = last if last is not None and (job.start_ns is None or last >= job.start_ns) else job.start_ns
                    self.stats.spans_unfinished += 1
                    self._end(job)

    def _span_for(self, db: _Db, session: str | None, job_id: Any, materialize: bool) -> tuple[Span | None, Context]:
        """The open span of a job (started now if needed) and the log record context."""
        if type(job_id) is not int or job_id == 0:
            return None, _NO_SPAN
        key = (db.name, session, job_id)
        job = db.open.get(key)
        if job is not None:
            span = job.span
            if span is None:
                if not materialize:
                    return None, _NO_SPAN
                span = self._materialize(job)
            return span, trace.set_span_in_context(span, Context())
        with self._lock:
            ctx = self._ended.get(key)
        if ctx is not None:
            return None, trace.set_span_in_context(NonRecordingSpan(ctx), Context())
        return None, _NO_SPAN

    # -- jobs ------------------------------------------------------------------------

    def _job_started(self, info: Any) -> None:
        job_id = info.job_id
        if type(job_id) is not int:
            return
        db = self._db(info.db_name)
        session = info.session_id
        if session != db.session:
            if db.open:
                self._abandon(db, keep_session=session)
            db.session = session
        key = (db.name, session, job_id)
        if key in db.open:
            return  # the same start twice: keep the first
        cls = type(info)
        kind = _JOB_KIND[cls]
        start_ns = _ns(info.time_micros)
        self._lag(db, start_ns, time.time_ns())
        attrs = self._base_attrs(db, session, info.cf_name, job_id)
        if info.reason is not None:
            attrs["rocksdb." + kind + ".reason"] = info.reason
        details_attributes(kind, info.details, attrs)
        if info.truncated:
            attrs["rocksdb.job.truncated"] = True
        parent = None
        if info.reason in _MANUAL_REASONS and self._ops:
            group = "flush" if info.reason in _MANUAL_FLUSH_REASONS else "compact_range"
            parent = self._match_manual(db.name, group, info.time_micros)
            if parent is not None:
                self.stats.manual_parents += 1
        job = _Job(key, _JOB_SPAN_NAME[cls], start_ns, attrs, parent if parent is not None else _NO_SPAN)
        db.open[key] = job
        if self._all:
            self._materialize(job)

    def _job_finished(self, info: Any) -> None:
        job_id = info.job_id
        if type(job_id) is not int:
            return
        db = self._db(info.db_name)
        session = info.session_id
        key = (db.name, session, job_id)
        end_ns = _ns(info.time_micros)
        self._lag(db, end_ns, time.time_ns())
        kind = _JOB_KIND[type(info)]
        job = db.open.get(key)
        if job is not None and job.finished:
            return  # finished twice
        if job is None:
            with self._lock:
                if key in self._ended:
                    return  # finished twice
            # Started before we were reading: a span from the finish alone.
            start_ns = _ns(info.start_micros) or end_ns
            attrs = self._base_attrs(db, session, info.cf_name, job_id)
            if info.reason is not None:
                attrs["rocksdb." + kind + ".reason"] = info.reason
            attrs["rocksdb.job.start_seen"] = False
            job = db.open[key] = _Job(key, _JOB_SPAN_NAME[type(info)], start_ns, attrs, _NO_SPAN)
            if self._all:
                self._materialize(job)
        extra = details_attributes(kind, info.details, {})
        if info.truncated:
            extra["rocksdb.job.truncated"] = True
        if info.cf_name is not None and "rocksdb.column_family" not in job.attrs:
            extra["rocksdb.column_family"] = info.cf_name
        status = info.details.get("status") if isinstance(info.details, dict) else None
        if isinstance(status, str) and status != "OK":
            job.error = self._status(status, db, None)
        job.attrs.update(extra)
        if job.span is not None and extra:
            job.span.set_attributes(extra)
        job.finished = True
        job.end_ns = end_ns
        db.to_end.append(key)

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

    # -- blob files --------------------------------------------------------------------

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
        self.stats.records_emitted += 1

    def _file_attrs(self, db: _Db, info: Any, event: str, cf: str | None, failed: bool, path: str) -> dict[str, Any]:
        a = self._base_attrs(db, info.session_id, cf, info.job_id)
        a["rocksdb.event"] = event
        number = info.file_number
        if type(number) is int:
            a["rocksdb.blob_file.number" if event.startswith("rocksdb.blob") else "rocksdb.table_file.number"] = number
        status = info.status
        if isinstance(status, str):
            a["rocksdb.status"] = self._status(status, db, path)
            if failed:
                a["error.type"] = status.split(":", 1)[0].strip() or "error"
        if isinstance(path, str):
            shown = self._path(path)
            if shown is not None:
                a["file.path"] = shown
            a["file.name"] = path.rsplit("/", 1)[-1]
        return a

    @_guarded
    def on_blob_file_created(self, info: BlobFileCreationInfo) -> None:
        observed = time.time_ns()
        db = self._db(info.db_name)
        event_ns = _ns(info.time_micros)
        self._lag(db, event_ns, observed)
        status = info.status
        failed = status != "OK" and status != "unknown"
        cf = info.cf_name
        path = info.file_path
        a = self._file_attrs(db, info, EVENT_CREATED, cf, failed, path)
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
        span, ctx = self._span_for(db, info.session_id, info.job_id, True)
        if span is not None:
            span.add_event(EVENT_CREATED, a, timestamp=event_ns)
            self.stats.span_events += 1
        shown_db = db.display
        body = (
            f"blob file created: {self._path(path) if self.file_paths == 'full' else a.get('file.name')}"
            f"{'' if shown_db is None else ' db=' + shown_db} cf={_opt(cf)} job={_opt(info.job_id)} reason={info.reason}"
            f" blobs={_opt(info.total_blob_count)} blob_bytes={_opt(info.total_blob_bytes)} size={_opt(size)}"
            f" status={a.get('rocksdb.status', _opt(status))}"
        )
        self._emit(EVENT_CREATED, ctx, event_ns, observed, failed, body, a)
        if failed:
            return
        # Counters: summed per batch (_acc, flushed by on_batch_delivered); histograms: every value.
        mattrs = self._metric_attrs(db, cf, info.reason)
        sized = type(size) is int
        if sized:
            self._acc(db, mattrs, _CREATED, 1, _CREATED_BYTES, size)
            self._m_size.record(size, mattrs)
        else:
            self._acc(db, mattrs, _CREATED, 1)
        number = info.file_number
        live = db.live.get(number)
        if live is None:
            lattrs = self._metric_attrs(db, cf, None)
            db.live[number] = [size, lattrs, event_ns]
            if sized:
                self._acc(db, lattrs, _LIVE, 1, _LIVE_BYTES, size)
            else:
                self._acc(db, lattrs, _LIVE, 1)
        else:
            if live[0] is None and sized:
                live[0] = size
                self._acc(db, live[1], _LIVE_BYTES, size)
            if live[2] is None:
                live[2] = event_ns

    @_guarded
    def on_blob_file_deleted(self, info: BlobFileDeletionInfo) -> None:
        observed = time.time_ns()
        db = self._db(info.db_name)
        event_ns = _ns(info.time_micros)
        self._lag(db, event_ns, observed)
        failed = info.status != "OK"
        number = info.file_number
        live = db.live.get(number)
        cf = info.cf_name
        path = info.file_path
        a = self._file_attrs(db, info, EVENT_DELETED, cf, failed, path)
        size = info.file_size
        if type(size) is not int and live is not None and type(live[0]) is int:
            size = live[0]
        if type(size) is int:
            a["file.size"] = size
        created_ns = _ns(info.created_micros)
        if created_ns is None and live is not None:
            created_ns = live[2]
        lifetime = None
        if not failed and created_ns is not None and event_ns is not None and event_ns >= created_ns:
            lifetime = (event_ns - created_ns) / 1e9
            a["rocksdb.blob_file.lifetime_s"] = lifetime
        span, ctx = self._span_for(db, info.session_id, info.job_id, True)
        if span is not None:
            span.add_event(EVENT_DELETED, a, timestamp=event_ns)
            self.stats.span_events += 1
        shown_db = db.display
        body = (
            f"blob file deleted: {self._path(path) if self.file_paths == 'full' else a.get('file.name')}"
            f"{'' if shown_db is None else ' db=' + shown_db} cf={_opt(cf)} job={_opt(info.job_id)}"
            f" size={_opt(size)}{'' if lifetime is None else ' lifetime=%.3fs' % lifetime}"
            f" status={a.get('rocksdb.status', _opt(info.status))}"
        )
        self._emit(EVENT_DELETED, ctx, event_ns, observed, failed, body, a)
        if failed:
            return
        mattrs = self._metric_attrs(db, cf, None)
        if type(size) is int:
            self._acc(db, mattrs, _DELETED, 1, _DELETED_BYTES, size)
        else:
            self._acc(db, mattrs, _DELETED, 1)
        if lifetime is not None:
            self._m_lifetime.record(lifetime, mattrs)
        if live is not None:
            del db.live[number]
            if type(live[0]) is int:
                self._acc(db, live[1], _LIVE, -1, _LIVE_BYTES, -live[0])
            else:
                self._acc(db, live[1], _LIVE, -1)

    # -- table files (kinds="all": span events only) ---------------------------------------

    def _table_event(self, info: Any, event: str) -> None:
        if not self._all:
            return
        db = self._db(info.db_name)
        event_ns = _ns(info.time_micros)
        span, _ctx = self._span_for(db, info.session_id, info.job_id, False)
        if span is None:
            return
        status = info.status
        a = self._file_attrs(db, info, event, getattr(info, "cf_name", None), status != "OK", info.file_path)
        size = getattr(info, "file_size", None)
        if type(size) is int:
            a["file.size"] = size
        oldest = getattr(info, "oldest_blob_file_number", None)
        if type(oldest) is int:
            a["rocksdb.table_file.oldest_blob_file_number"] = oldest
        span.add_event(event, a, timestamp=event_ns)
        self.stats.span_events += 1

    @_guarded
    def on_table_file_created(self, info: TableFileCreationInfo) -> None:
        self._table_event(info, EVENT_TABLE_CREATED)

    @_guarded
    def on_table_file_deleted(self, info: TableFileDeletionInfo) -> None:
        self._table_event(info, EVENT_TABLE_DELETED)

    # -- the watch ---------------------------------------------------------------------------

    @_guarded
    def on_batch_delivered(self, info: BatchInfo) -> None:
        db = self._dbs.get(info.db_name)
        if db is not None:
            try:
                self._settle(db)
            finally:
                self._flush_db(db)

    @_guarded
    def on_watch_started(self, info: WatchInfo) -> None:
        db = self._db(info.db_name)
        try:
            existing = info.existing_blob_files or {}
            lattrs = self._metric_attrs(db, None, None)
            # Reconcile with what the directory holds (a listener reused across watches).
            for number in [n for n in db.live if n not in existing]:
                size, attrs, _ = db.live.pop(number)
                if type(size) is int:
                    self._acc(db, attrs, _LIVE, -1, _LIVE_BYTES, -size)
                else:
                    self._acc(db, attrs, _LIVE, -1)
            for number, size in existing.items():
                if number in db.live:
                    continue
                db.live[number] = [size, lattrs, None]
                if type(size) is int:
                    self._acc(db, lattrs, _LIVE, 1, _LIVE_BYTES, size)
                else:
                    self._acc(db, lattrs, _LIVE, 1)
        finally:
            self._flush_db(db)

    @_guarded
    def on_watch_stopped(self, info: WatchInfo) -> None:
        db = self._dbs.get(info.db_name)
        if db is not None:
            try:
                self._abandon(db, all_sessions=True)
            finally:
                self._flush_db(db)

    @_guarded
    def on_line_skipped(self, info: LineSkippedInfo) -> None:
        self.stats.lines_skipped += 1
        db = self._dbs.get(info.db_name)
        attrs = {"reason": str(info.reason)}
        if db is not None and db.display is not None:
            attrs["rocksdb.db.path"] = db.display
        elif db is None and isinstance(info.db_name, str) and self.file_paths != "none":
            attrs["rocksdb.db.path"] = self._path(info.db_name) if self.file_paths == "hash" else info.db_name
        self._m_skipped.add(1, attrs)

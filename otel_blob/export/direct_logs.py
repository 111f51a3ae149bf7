"""A LoggerProvider for the pipeline we own: log records go straight to the export queue.

The SDK's ``Logger.emit`` builds an API ``LogRecord``, a ``ReadWriteLogRecord``
that re-validates every attribute into a ``BoundedAttributes``, and then the
processor copies it into a ``ReadableLogRecord``: ~20 µs per blob file record,
the largest cost left in the CLI and the helper process after encoding. Our
records are simple (a string body, a dozen scalar attributes) and the processor
is ours, so :class:`DirectLogger` makes one small :class:`DirectLogRecord` and
puts it on the :class:`~otel_blob.export.DeliveryQueue` the SDK path would have
reached.

It takes the short way only when the result is the same: no record object, no
exception, a str body, str keys with str/bool/float/int64 values, no attribute
value length limit and no more attributes than the count limit
(``OTEL_LOGRECORD_ATTRIBUTE_*`` / ``OTEL_ATTRIBUTE_*``). Anything else is handed
to the SDK logger underneath (whose processor feeds the same queue).
tests/test_direct_logs.py checks both ways give byte-identical OTLP.

A :class:`DirectLogRecord` reads like the SDK's ``ReadableLogRecord`` (its
``log_record`` is itself), so the exporters -- ours and the SDK's encoders --
take it as they are.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry._logs import Logger, LoggerProvider
from opentelemetry.context import get_current
from opentelemetry.trace import get_current_span

from . import private

__all__ = ["DirectLogRecord", "DirectLogger", "DirectLoggerProvider"]

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


class DirectLogRecord:
    """One emitted log record: the fields of the SDK's ``LogRecord`` and ``ReadableLogRecord``."""

    __slots__ = ("timestamp", "observed_timestamp", "trace_id", "span_id", "trace_flags", "severity_text",
                 "severity_number", "body", "attributes", "event_name", "resource", "instrumentation_scope")

    dropped_attributes = 0  # only records within the limits come this way
    limits = None
    exception = None

    @property
    def log_record(self) -> DirectLogRecord:
        return self

    def readable(self) -> Any:
        """The SDK ``ReadableLogRecord`` of the same content (for anything that wants the real type)."""
        from opentelemetry._logs import LogRecord
        from opentelemetry.sdk._logs import ReadableLogRecord
        from opentelemetry.trace import NonRecordingSpan, SpanContext, set_span_in_context

        ctx = set_span_in_context(NonRecordingSpan(SpanContext(self.trace_id, self.span_id, False, self.trace_flags)))
        record = LogRecord(timestamp=self.timestamp, observed_timestamp=self.observed_timestamp, context=ctx,
                           severity_text=self.severity_text, severity_number=self.severity_number, body=self.body,
                           attributes=dict(self.attributes), event_name=self.event_name)
        return ReadableLogRecord(log_record=record, resource=self.resource,
                                 instrumentation_scope=self.instrumentation_scope)

    def to_json(self, indent: int | None = 4) -> str:
        return self.readable().to_json(indent)

    def __repr__(self) -> str:
        return f"DirectLogRecord({self.event_name!r}, {self.body!r})"


def _plain(attributes: Any) -> bool:
    """True when every attribute is kept by the SDK exactly as given."""
    for k, v in attributes.items():
        t = type(v)
        if type(k) is not str or not (t is str or t is bool or t is float or
                                      (t is int and _INT64_MIN <= v <= _INT64_MAX)):
            return False
    return True


class DirectLogger(Logger):
    """Emits to ``queue`` directly when that gives what the SDK logger would; else through ``sdk_logger``."""

    def __init__(self, sdk_logger: Any, queue: Any, resource: Any, scope: Any, limits: Any) -> None:
        super().__init__(scope.name, scope.version, scope.schema_url, scope.attributes)
        self._sdk = sdk_logger
        self._put = queue.put
        self._resource = resource
        self._scope = scope
        n, length = private.log_record_limits(limits)
        self._max_attrs = float("inf") if n is None else n  # None: no limit (the variable set to "")
        self._direct_ok = length is None
        self.direct = 0  # records that took the short way (for tests and benchmarks)

    def enabled(self, **kwargs: Any) -> bool:
        return bool(self._sdk.enabled(**kwargs))

    def emit(self, record: Any = None, *, timestamp: int | None = None, observed_timestamp: int | None = None,
             context: Any = None, severity_number: Any = None, severity_text: str | None = None, body: Any = None,
             attributes: Any = None, event_name: str | None = None, exception: BaseException | None = None) -> None:
        if (record is not None or exception is not None or not self._direct_ok or type(body) is not str
                or (attributes and (len(attributes) > self._max_attrs or not _plain(attributes)))):
            if record is not None:
                self._sdk.emit(record)
            else:
                extra = {} if exception is None else {"exception": exception}  # emit(exception=): SDK 1.42+
                self._sdk.emit(timestamp=timestamp, observed_timestamp=observed_timestamp, context=context,
                               severity_number=severity_number, severity_text=severity_text, body=body,
                               attributes=attributes, event_name=event_name, **extra)
            return
        # What the API LogRecord takes from the context (the current one when none is given).
        sc = get_current_span(context or get_current()).get_span_context()
        r = DirectLogRecord()
        r.timestamp = timestamp
        r.observed_timestamp = time.time_ns() if observed_timestamp is None else observed_timestamp
        r.trace_id = sc.trace_id
        r.span_id = sc.span_id
        r.trace_flags = sc.trace_flags
        r.severity_text = severity_text
        r.severity_number = severity_number
        r.body = body
        r.attributes = dict(attributes) if attributes else {}
        r.event_name = event_name
        r.resource = self._resource
        r.instrumentation_scope = self._scope
        self.direct += 1
        self._put(r)


class DirectLoggerProvider(LoggerProvider):
    """Loggers that put records on ``queue``; ``sdk_provider`` (whose processor feeds the same
    queue) takes the rest, and its flush and shutdown are this provider's."""

    def __init__(self, sdk_provider: Any, queue: Any) -> None:
        from opentelemetry.sdk._logs import LogRecordLimits

        self._sdk = sdk_provider
        self._queue = queue
        self._limits = LogRecordLimits()  # OTEL_ATTRIBUTE_* / OTEL_LOGRECORD_ATTRIBUTE_*, as the SDK reads them

    @property
    def resource(self) -> Any:
        return self._sdk.resource

    def get_logger(self, name: str, version: str | None = None, schema_url: str | None = None,
                   attributes: Any = None) -> DirectLogger:
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        sdk_logger = self._sdk.get_logger(name, version, schema_url, attributes)
        scope = InstrumentationScope(name, version, schema_url, attributes)
        return DirectLogger(sdk_logger, self._queue, self._sdk.resource, scope, self._limits)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self._sdk.force_flush(timeout_millis))

    def shutdown(self) -> None:
        self._sdk.shutdown()

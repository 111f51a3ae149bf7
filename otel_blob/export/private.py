"""Every private name of the OpenTelemetry exporters and SDK that otel_blob uses -- here and nowhere else.

The cheap export path of the pipeline we own (:mod:`.otlp_encode`: our own OTLP
encoding of log records and spans; :mod:`.direct_logs`: records straight onto our
export queue) depends on internals the SDK may change in any release:

* ``opentelemetry.exporter.otlp.proto.common._internal``: ``_encode_value``,
  ``_encode_attributes``, ``_encode_resource``, ``_encode_instrumentation_scope``,
  ``trace_encoder._SPAN_KIND_MAP``; its ``_log_encoder.encode_logs`` and
  ``trace_encoder.encode_spans`` (the stock encodings we must equal);
* the gRPC exporters' ``_translate_data`` hook, which the fast exporters override;
* the log record limits' field names (``max_log_record_attributes`` since SDK 1.44,
  ``max_attributes`` before).

:func:`~otel_blob.export.fast_path.fast_path_problem` checks them once per
process; on any difference the pipeline uses the stock exporters and the SDK's
own logger.

(``opentelemetry.sdk._logs`` is the SDK's logs API itself, not an internal: the
Logs SDK lives there until it is declared stable.)
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

__all__ = [
    "encode_attributes",
    "encode_resource",
    "encode_scope",
    "encode_value",
    "log_record_limits",
    "span_kind_values",
    "stock_encode_logs",
    "stock_encode_spans",
    "stock_grpc_exporters",
]


def _internal() -> Any:
    from opentelemetry.exporter.otlp.proto.common import _internal

    return _internal


@functools.cache
def _value_encoder() -> Callable[[Any], Any]:
    """The exporter's ``_encode_value`` as its log encoder calls it: before exporter 1.43 with
    ``allow_null=True`` (a None is no field), from 1.43 as is (a None is an empty value)."""
    encode = _internal()._encode_value
    if "allow_null" in inspect.signature(encode).parameters:
        return functools.partial(encode, allow_null=True)
    return encode


def encode_value(value: Any) -> Any:
    """The exporter's ``AnyValue`` of ``value`` (None: no field, on exporters before 1.43)."""
    return _value_encoder()(value)


def encode_attributes(attributes: Any) -> Any:
    return _internal()._encode_attributes(attributes)


def encode_resource(resource: Any) -> Any:
    return _internal()._encode_resource(resource)


def encode_scope(scope: Any) -> Any:
    return _internal()._encode_instrumentation_scope(scope)


@functools.cache
def span_kind_values() -> dict[Any, int]:
    """SDK ``SpanKind`` -> the OTLP ``Span.kind`` number the exporter writes."""
    from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import _SPAN_KIND_MAP

    return {kind: int(value) for kind, value in _SPAN_KIND_MAP.items()}


def stock_encode_logs(batch: Any) -> bytes:
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

    return encode_logs(batch).SerializeToString()


def stock_encode_spans(batch: Any) -> bytes:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    return encode_spans(batch).SerializeToString()


def stock_grpc_exporters() -> tuple[type, type]:
    """The stock OTLP/gRPC log and span exporter classes (what the fast ones subclass)."""
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPLogExporter, OTLPSpanExporter


def log_record_limits(limits: Any) -> tuple[int | None, int | None]:
    """``(attribute count limit, attribute value length limit)`` the SDK applies to log records:
    ``OTEL_LOGRECORD_ATTRIBUTE_*`` (SDK 1.44+) or, before, the global ``OTEL_ATTRIBUTE_*``."""
    count = getattr(limits, "max_log_record_attributes", None) if hasattr(limits, "max_log_record_attributes") \
        else limits.max_attributes
    length = getattr(limits, "max_log_record_attribute_length", None) \
        if hasattr(limits, "max_log_record_attribute_length") else limits.max_attribute_length
    return count, length

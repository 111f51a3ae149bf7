"""The check that guards the fast export path (:mod:`.private` names what it relies on).

:func:`fast_path_problem` runs once per process: it imports the exporters'
internals, encodes a sample log record and span both ways (ours and the
exporter's) and compares the bytes, puts a record on our queue through the
direct logger and compares it with the SDK logger's, and sends the samples
through the fast gRPC exporters -- to a stub, no network -- to see that the
exporters still call the ``_translate_data`` hook and send exactly those bytes.
On any difference the pipeline uses the stock exporters and the SDK's own
logger -- exactly the stock output, a few microseconds dearer per record -- and
says so in one warning line.
"""

from __future__ import annotations

import functools
from typing import Any

from . import private

__all__ = ["fast_path_problem"]


def _sample_log_records() -> list[Any]:
    """A log record as the telemetry listener makes it, through the pipeline's two ways: the SDK
    logger (the reference) and the direct logger -- both onto our export queue."""
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk.resources import Resource

    from .direct_logs import DirectLoggerProvider
    from .queue import ReliableLogRecordProcessor

    class _Keep:
        def __init__(self) -> None:
            self.items: list[Any] = []

        def export(self, batch: Any) -> Any:
            from opentelemetry.sdk._logs.export import LogRecordExportResult

            self.items.extend(batch)
            return LogRecordExportResult.SUCCESS

        def shutdown(self) -> None: ...

    keep = _Keep()
    sdk = LoggerProvider(resource=Resource({"service.name": "otel_blob-check"}), shutdown_on_exit=False)
    processor = ReliableLogRecordProcessor(keep)
    sdk.add_log_record_processor(processor)
    direct = DirectLoggerProvider(sdk, processor.queue)
    kw = dict(timestamp=1_700_000_000_000_000_123, observed_timestamp=1_700_000_000_000_000_456,
              severity_number=SeverityNumber.INFO, severity_text="INFO", event_name="rocksdb.blob_file.created",
              body="blob file created: /db/000012.blob cf=default job=4 reason=flush",
              attributes={"rocksdb.db.path": "/db", "rocksdb.blob_file.number": 12, "file.size": 66410,
                          "rocksdb.blob_file.lifetime_s": 1.5, "rocksdb.job.truncated": True})
    sdk.get_logger("otel_blob", "1", "https://opentelemetry.io/schemas/1.26.0").emit(**kw)
    direct.get_logger("otel_blob", "1", "https://opentelemetry.io/schemas/1.26.0").emit(**kw)
    processor.shutdown()  # exports both to _Keep
    return keep.items


def _sample_spans() -> list[Any]:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource({"service.name": "otel_blob-check"}), shutdown_on_exit=False)
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = tp.get_tracer("otel_blob", "1", "https://opentelemetry.io/schemas/1.26.0")
    span = tracer.start_span("rocksdb.compaction", start_time=1_700_000_000_000_000_000,
                             attributes={"rocksdb.job.id": 7, "rocksdb.job.lsm_state": [1, 0, 2]})
    span.add_event("rocksdb.blob_file.created", {"rocksdb.blob_file.number": 12, "file.name": "000012.blob"},
                   timestamp=1_700_000_000_000_000_500)
    span.end(end_time=1_700_000_000_000_001_000)
    return list(exporter.get_finished_spans())


class _StubClient:
    """Stands in for a gRPC stub: keeps what the exporter sends."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def Export(self, request: Any, metadata: Any = None, timeout: Any = None) -> None:  # noqa: N802 (gRPC's name)
        self.sent.append(request.SerializeToString())


def _hook_problem(cls: type, batch: list[Any], expected: bytes) -> str | None:
    """Does the fast exporter ``cls`` send our bytes through the exporter's own export path?"""
    exporter = cls(endpoint="http://127.0.0.1:9", insecure=True)
    try:
        stub = _StubClient()
        exporter._client = stub
        calls = []
        translate = exporter._translate_data
        exporter._translate_data = lambda data: (calls.append(1), translate(data))[1]  # type: ignore[method-assign]
        result = exporter.export(batch)
        if getattr(result, "name", None) != "SUCCESS":
            return f"{cls.__name__}: export through a stub returned {result!r}"
        if not calls:
            return f"{cls.__name__}: the exporter no longer calls _translate_data"
        if stub.sent != [expected]:
            return f"{cls.__name__}: the bytes sent differ from the stock encoding"
        return None
    finally:
        exporter.shutdown()


@functools.cache
def fast_path_problem() -> str | None:
    """None when the fast export path gives exactly the stock bytes through the stock exporters'
    export path on the installed versions; else what differs (the pipeline then uses the stock
    exporters and the SDK logger). Checked once per process (~10 ms)."""
    try:
        from .otlp_encode import FastOTLPLogExporter, FastOTLPSpanExporter, encode_logs, encode_spans

        records = _sample_log_records()
        if len(records) != 2:
            return f"the sample log records did not reach the export queue ({len(records)} of 2)"
        reference, direct = records[:1], records[1:]
        stock = private.stock_encode_logs(reference)
        if encode_logs(reference) != stock:
            return "our encoding of a log record differs from the exporter's"
        if private.stock_encode_logs(direct) != stock or encode_logs(direct) != stock:
            return "a record put straight on the queue encodes differently from the SDK's"
        spans = _sample_spans()
        stock_spans = private.stock_encode_spans(spans)
        if encode_spans(spans) != stock_spans:
            return "our encoding of a span differs from the exporter's"
        return _hook_problem(FastOTLPLogExporter, reference, stock) or \
            _hook_problem(FastOTLPSpanExporter, spans, stock_spans)
    except Exception as exc:  # an internal renamed or moved: the stock path only
        return f"{type(exc).__name__}: {exc}"

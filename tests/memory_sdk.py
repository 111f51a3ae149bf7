"""In-memory SDK providers: what an instrumentation under test exports, kept in the process.

The real SDK (providers, processors, in-memory exporters and metric reader), not a mock:
what reaches them is what an OTLP exporter would have been handed."""

from __future__ import annotations

from collections import Counter
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class MemorySdk:
    """Tracer, logger and meter providers exporting to memory (none shuts down at exit)."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.logs = InMemoryLogRecordExporter()
        self.metrics = InMemoryMetricReader()
        self.tracer_provider = TracerProvider(shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.logger_provider = LoggerProvider(shutdown_on_exit=False)
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.logs))
        self.meter_provider = MeterProvider(metric_readers=[self.metrics], shutdown_on_exit=False)

    def kwargs(self) -> dict[str, Any]:
        """The providers, as ``instrument()`` and ``TelemetryListener`` take them."""
        return {"tracer_provider": self.tracer_provider, "logger_provider": self.logger_provider,
                "meter_provider": self.meter_provider}

    def records(self) -> list[dict[str, Any]]:
        """Every log record so far, as ``{"event_name", "attributes"}`` (the shape of
        :func:`faults.events_from_otlp`'s input)."""
        return [{"event_name": r.log_record.event_name or "", "attributes": dict(r.log_record.attributes or {})}
                for r in self.logs.get_finished_logs()]

    def blob_records(self) -> list[Any]:
        """The blob file log records so far (SDK LogRecords)."""
        return [r.log_record for r in self.logs.get_finished_logs()
                if (r.log_record.event_name or "").startswith("rocksdb.blob_file.")]

    def counter(self, name: str) -> Counter:
        """Sum of a counter's points by their ``reason`` attribute."""
        out: Counter = Counter()
        data = self.metrics.get_metrics_data()
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == name:
                        for p in m.data.data_points:
                            out[dict(p.attributes).get("reason")] += p.value
        return out

"""otel_blob.export.direct_logs: records put straight on the export queue are the SDK's records, byte for byte."""

from __future__ import annotations

import inspect
import os
from typing import Any

import pytest
from opentelemetry._logs import Logger, LoggerProvider as APILoggerProvider, SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs as sdk_encode_logs
from opentelemetry.sdk._logs import Logger as SDKLogger, LoggerProvider, LogRecordLimits
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from otel_blob.export.direct_logs import DirectLogRecord, DirectLoggerProvider
from otel_blob.decode import BatchInfo, LogDecoder
from otel_blob.export import ReliableLogRecordProcessor
from otel_blob.watching.listener import deliver
from otel_blob.export.otlp_encode import encode_logs
from otel_blob.telemetry import TelemetryListener

from dbutil import blob_history

RESOURCE = Resource({"service.name": "direct", "n": 2})

# What the SDK of this environment has (the suite also runs on the lowest versions we declare).
LOGRECORD_LIMITS = hasattr(LogRecordLimits(), "max_log_record_attributes")  # OTEL_LOGRECORD_ATTRIBUTE_*: 1.44+
EMIT_EXCEPTION = "exception" in inspect.signature(SDKLogger.emit).parameters  # Logger.emit(exception=): 1.42+
needs_logrecord_limits = pytest.mark.skipif(not LOGRECORD_LIMITS, reason="SDK < 1.44: no OTEL_LOGRECORD_ATTRIBUTE_*")


class _RecordingProvider(APILoggerProvider):
    """Keeps the keyword arguments of every emit() (what the TelemetryListener asks for)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def get_logger(self, name: str, version: str | None = None, schema_url: str | None = None,
                   attributes: Any = None) -> Logger:
        calls = self.calls

        class _L(Logger):
            def emit(self, record: Any = None, **kwargs: Any) -> None:
                calls.append(kwargs)

            def enabled(self, **kwargs: Any) -> bool:
                return True

        return _L(name, version)


def _direct():
    """A DirectLoggerProvider over a queue exporting to memory, and its SDK twin."""
    exp = InMemoryLogRecordExporter()
    sdk = LoggerProvider(resource=RESOURCE)
    proc = ReliableLogRecordProcessor(exp, max_export_batch_size=100000)
    sdk.add_log_record_processor(proc)
    return DirectLoggerProvider(sdk, proc.queue), exp


def _sdk():
    exp = InMemoryLogRecordExporter()
    sdk = LoggerProvider(resource=RESOURCE)
    proc = ReliableLogRecordProcessor(exp, max_export_batch_size=100000)
    sdk.add_log_record_processor(proc)
    return sdk, exp


def _emit_both(calls: list[dict[str, Any]], version: str = "1.0"):
    (dp, dexp), (sp, sexp) = _direct(), _sdk()
    dl = dp.get_logger("otel_blob", version)
    sl = sp.get_logger("otel_blob", version)
    for kw in calls:
        dl.emit(**kw)
        sl.emit(**kw)
    assert dp.force_flush(10000) and sp.force_flush(10000)
    return dl, list(dexp.get_finished_logs()), list(sexp.get_finished_logs())


def _real_log_calls(tmp_path) -> list[dict[str, Any]]:
    path = str(tmp_path / "db")
    lines = blob_history(path)
    rec = _RecordingProvider()
    listener = TelemetryListener(tracer_provider=TracerProvider(), logger_provider=rec, kinds="all")
    for info in LogDecoder(path).feed_lines(lines):
        deliver(listener, info)
    deliver(listener, BatchInfo(path, len(lines), 0))
    return rec.calls


def test_blob_records_of_a_real_log_go_direct_and_encode_as_the_sdks(tmp_path):
    calls = _real_log_calls(tmp_path)
    assert len(calls) >= 8
    dl, direct, sdk = _emit_both(calls)
    assert dl.direct == len(calls)  # every blob file record took the short way
    assert all(type(r) is DirectLogRecord for r in direct)
    assert len(direct) == len(sdk) == len(calls)
    assert sdk_encode_logs(direct).SerializeToString() == sdk_encode_logs(sdk).SerializeToString()
    assert encode_logs(direct) == encode_logs(sdk)
    assert any(r.trace_id for r in direct)  # the job span's context was taken from the context


def test_the_current_context_is_used_when_none_is_given():
    ctx = set_span_in_context(NonRecordingSpan(SpanContext(0xABC, 0xDEF, False, TraceFlags(1))))
    from opentelemetry.context import attach, detach

    token = attach(ctx)
    try:
        dl, direct, sdk = _emit_both([{"body": "b", "attributes": {"k": 1}, "observed_timestamp": 5}])
    finally:
        detach(token)
    assert dl.direct == 1
    assert (direct[0].trace_id, direct[0].span_id, int(direct[0].trace_flags)) == (0xABC, 0xDEF, 1)
    assert encode_logs(direct) == encode_logs(sdk)


@pytest.mark.parametrize("kw", [
    {"body": {"not": "a string"}, "attributes": {"k": "v"}},
    {"body": "b", "attributes": {"list": ["a", "b"]}},
    {"body": "b", "attributes": {"big": 1 << 63}},
    {"body": "b", "attributes": {"none": None}},
    pytest.param({"body": "b", "exception": ValueError("boom")},
                 marks=pytest.mark.skipif(not EMIT_EXCEPTION, reason="SDK < 1.42: no emit(exception=)")),
], ids=["dict-body", "list-value", "beyond-int64", "none-value", "exception"])
def test_what_the_sdk_would_change_goes_through_the_sdk(kw):
    kw = {"observed_timestamp": 7, "severity_number": SeverityNumber.INFO, **kw}
    dl, direct, sdk = _emit_both([kw])
    assert dl.direct == 0
    assert len(direct) == len(sdk) == 1
    assert type(direct[0]) is not DirectLogRecord
    assert sdk_encode_logs(direct).SerializeToString() == sdk_encode_logs(sdk).SerializeToString()


@pytest.mark.parametrize("env", [
    pytest.param({"OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT": "2"}, marks=needs_logrecord_limits),
    {"OTEL_ATTRIBUTE_COUNT_LIMIT": "2"},
    {"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "3"},
    pytest.param({"OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT": "3"}, marks=needs_logrecord_limits),
])
def test_attribute_limits_are_the_sdks(monkeypatch, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    kw = {"body": "b", "observed_timestamp": 7, "attributes": {"a": "long value", "b": 2, "c": 3.5}}
    dl, direct, sdk = _emit_both([kw])
    assert dl.direct == 0  # limits that bind: the SDK applies them
    assert sdk_encode_logs(direct).SerializeToString() == sdk_encode_logs(sdk).SerializeToString()
    attrs = direct[0].log_record.attributes
    assert len(attrs) == 2 or attrs["a"] == "lon"


@needs_logrecord_limits
def test_no_count_limit_is_no_limit(monkeypatch):
    # OTEL_*_ATTRIBUTE_COUNT_LIMIT set to "" means no limit (the SDK's None).
    monkeypatch.setenv("OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT", "")
    kw = {"body": "b", "observed_timestamp": 7, "attributes": {f"k{i}": i for i in range(200)}}
    dl, direct, sdk = _emit_both([kw])
    assert dl.direct == 1
    assert encode_logs(direct) == encode_logs(sdk)
    assert len(direct[0].attributes) == 200


def test_the_pipeline_uses_it_and_delivers(otlp_receiver, monkeypatch):
    from otel_blob.export.pipeline import ExportPipeline, PipelineOptions

    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.grpc_endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true",
           "OTEL_METRICS_EXPORTER": "none", "OTEL_TRACES_EXPORTER": "none"}
    for k, v in env.items():  # the exporters read the process environment
        monkeypatch.setenv(k, v)
    t = ExportPipeline(PipelineOptions(), os.environ, default_exporter="otlp")
    try:
        assert isinstance(t.logger_provider, DirectLoggerProvider)
        logger = t.logger_provider.get_logger("otel_blob", "9")
        logger.emit(body="hello", attributes={"k": "v", "n": 3}, event_name="rocksdb.blob_file.created",
                    severity_number=SeverityNumber.INFO, severity_text="INFO")
        assert t.flush(10000)
        assert logger.direct == 1
    finally:
        t.shutdown()
    recs = otlp_receiver.log_records()
    assert [(r["body"], r["attributes"], r["event_name"]) for r in recs] == \
        [("hello", {"k": "v", "n": 3}, "rocksdb.blob_file.created")]
    assert recs[0]["resource"]["service.name"] == "otel-blob"


def test_console_output_of_a_direct_record_is_the_sdks():
    dl, direct, sdk = _emit_both([{"body": "b", "attributes": {"k": 1}, "observed_timestamp": 5, "timestamp": 4}])
    assert direct[0].to_json() == sdk[0].to_json()


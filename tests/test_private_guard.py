"""The fast export path depends on private names of the OTLP exporters (otel_blob/export/private.py).
It is used only while a check proves it gives the stock bytes through the stock export path;
otherwise the pipeline falls back to the stock exporters -- and still delivers."""

from __future__ import annotations

import logging
import os

import pytest
from opentelemetry._logs import SeverityNumber

from otel_blob.export import fast_path, private
from otel_blob.export.direct_logs import DirectLoggerProvider
from otel_blob.export.pipeline import ExportPipeline, PipelineOptions


@pytest.fixture
def fresh_check(monkeypatch):
    """The check runs once per process: start each test without its cached answer."""
    import otel_blob.export.pipeline as pipeline_mod

    fast_path.fast_path_problem.cache_clear()
    private._value_encoder.cache_clear()
    monkeypatch.setattr(pipeline_mod, "_said_fast_path", [])
    yield
    fast_path.fast_path_problem.cache_clear()
    private._value_encoder.cache_clear()


def _pipeline(receiver, monkeypatch) -> ExportPipeline:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true",
           "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_METRICS_EXPORTER": "none"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return ExportPipeline(PipelineOptions(), os.environ, default_exporter="otlp")


def _emit(pipeline: ExportPipeline) -> None:
    logger = pipeline.logger_provider.get_logger("otel_blob", "1")
    logger.emit(body="blob file created", event_name="rocksdb.blob_file.created", attributes={"n": 1},
                severity_number=SeverityNumber.INFO, severity_text="INFO")
    with pipeline.tracer_provider.get_tracer("otel_blob").start_as_current_span("rocksdb.flush") as span:
        span.add_event("rocksdb.blob_file.created", {"rocksdb.blob_file.number": 12})


def test_the_fast_path_is_taken_on_the_installed_versions(otlp_receiver, monkeypatch, fresh_check, caplog):
    assert fast_path.fast_path_problem() is None
    with caplog.at_level(logging.WARNING, logger="otel_blob"):
        t = _pipeline(otlp_receiver, monkeypatch)
    try:
        exporters = {type(q.exporter).__name__ for q in t.queues}
        assert exporters == {"FastOTLPLogExporter", "FastOTLPSpanExporter"}
        assert isinstance(t.logger_provider, DirectLoggerProvider)
        _emit(t)
        assert t.flush(10000)
    finally:
        t.shutdown()
    assert [r["body"] for r in otlp_receiver.log_records()] == ["blob file created"]
    assert [s["name"] for s in otlp_receiver.spans()] == ["rocksdb.flush"]
    assert "stock OpenTelemetry exporters" not in caplog.text


def test_a_changed_internal_falls_back_to_the_stock_exporters(otlp_receiver, monkeypatch, fresh_check, caplog):
    # An exporter release whose encoding no longer matches ours (simulated: it writes every
    # value as the string "x"): our bytes would differ from the exporter's.
    real = private._internal()
    encode_value = real._encode_value
    monkeypatch.setattr(real, "_encode_value", lambda value, *a, **k: encode_value("x", *a, **k))
    with caplog.at_level(logging.WARNING, logger="otel_blob"):
        t = _pipeline(otlp_receiver, monkeypatch)
        t2 = _pipeline(otlp_receiver, monkeypatch)  # said once, not per pipeline
    try:
        assert fast_path.fast_path_problem() is not None
        exporters = {type(q.exporter).__name__ for q in t.queues}
        assert exporters == {"OTLPLogExporter", "OTLPSpanExporter"}
        assert not isinstance(t.logger_provider, DirectLoggerProvider)
        _emit(t)
        assert t.flush(10000)
    finally:
        t.shutdown()
        t2.shutdown()
    assert caplog.text.count("stock OpenTelemetry exporters") == 1
    # Exported by the stock path, as that release encodes it.
    assert [r["event_name"] for r in otlp_receiver.log_records()] == ["rocksdb.blob_file.created"]
    assert [s["name"] for s in otlp_receiver.spans()] == ["rocksdb.flush"]


def test_an_exporter_that_stops_calling_the_hook_is_detected(monkeypatch, fresh_check):
    # A release whose export path builds its request without _translate_data: the fast
    # exporter would silently be the stock one. The check sees the hook is not called.
    from opentelemetry.exporter.otlp.proto.grpc.exporter import OTLPExporterMixin

    def _export(self, data):
        from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        encode = encode_logs if "Log" in type(self).__name__ else encode_spans
        self._client.Export(request=encode(data), metadata=None, timeout=1)
        return self._result.SUCCESS

    monkeypatch.setattr(OTLPExporterMixin, "_export", _export)
    problem = fast_path.fast_path_problem()
    assert problem is not None and "_translate_data" in problem


def test_an_internal_that_is_gone_is_a_problem_not_an_error(monkeypatch, fresh_check):
    def gone():
        raise ImportError("cannot import name '_internal'")

    monkeypatch.setattr(private, "_internal", gone)
    problem = fast_path.fast_path_problem()
    assert problem is not None and problem.startswith("ImportError")

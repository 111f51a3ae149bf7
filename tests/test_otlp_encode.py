"""otel_blob.otlp_encode writes exactly the bytes the OTLP exporter's own encoder writes."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs as sdk_encode_logs
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from otel_blob.events import BatchInfo, LogDecoder
from otel_blob.listener import deliver
from otel_blob.otlp_encode import encode_logs
from otel_blob.telemetry import TelemetryListener

from dbutil import blob_options, quiesce, write_round


def _sdk_bytes(batch) -> bytes:
    return sdk_encode_logs(batch).SerializeToString()


def _provider(resource: Resource | None = None):
    exp = InMemoryLogRecordExporter()
    lp = LoggerProvider(resource=resource) if resource is not None else LoggerProvider()
    lp.add_log_record_processor(SimpleLogRecordProcessor(exp))
    return lp, exp


def test_blob_records_of_a_real_log_encode_byte_for_byte(tmp_path):
    import rocksdict

    path = str(tmp_path / "db")
    db = rocksdict.Rdict(path, blob_options())
    for _ in range(4):
        write_round(db)
        db.flush()
    db.compact_range(None, None)
    quiesce(db)
    db.close()
    lp, exp = _provider(Resource({"service.name": "enc", "n": 3, "f": 1.5, "b": True, "l": ["a", "b"]}))
    listener = TelemetryListener(tracer_provider=TracerProvider(), logger_provider=lp, kinds="all")
    dec = LogDecoder(path)
    with open(os.path.join(path, "LOG"), "rb") as f:
        lines = [line.rstrip(b"\n") for line in f]
    for info in dec.feed_lines(lines):
        deliver(listener, info)
    deliver(listener, BatchInfo(path, len(lines), 0))
    batch = list(exp.get_finished_logs())
    assert len(batch) >= 8
    assert encode_logs(batch) == _sdk_bytes(batch)
    assert any(r.log_record.trace_id for r in batch)  # with trace context: the span ids are encoded too


values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1)
    | st.floats(allow_nan=False) | st.text() | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
scalars = st.booleans() | st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1) | st.floats(allow_nan=False) \
    | st.text(max_size=20)
attr_values = scalars | st.lists(st.text(max_size=5), max_size=3) | st.lists(st.integers(-5, 5), max_size=3)


@settings(max_examples=150, deadline=None)
@given(
    records=st.lists(st.fixed_dictionaries({
        "body": values,
        "attributes": st.dictionaries(st.text(min_size=1, max_size=12), attr_values, max_size=6),
        "severity": st.sampled_from(list(SeverityNumber)) | st.none(),
        "text": st.none() | st.text(max_size=8),
        "event": st.none() | st.text(max_size=12),
        "ts": st.none() | st.integers(0, 2 ** 64 - 1),
        "obs": st.integers(1, 2 ** 64 - 1),
        "scope": st.sampled_from(["a", "b"]),
    }), min_size=1, max_size=6),
    two_resources=st.booleans(),
)
def test_any_records_encode_byte_for_byte(records, two_resources):
    providers = [_provider(Resource({"service.name": "one"}))]
    if two_resources:
        providers.append(_provider(Resource({"service.name": "two"}, schema_url="https://x/1")))
    for i, r in enumerate(records):
        lp, _ = providers[i % len(providers)]
        lp.get_logger(r["scope"], "1.0", schema_url="https://s" if r["scope"] == "b" else None).emit(LogRecord(
            timestamp=r["ts"], observed_timestamp=r["obs"], body=r["body"], attributes=r["attributes"],
            severity_number=r["severity"], severity_text=r["text"], event_name=r["event"]))
    batch = [rec for _, exp in providers for rec in exp.get_finished_logs()]
    assert encode_logs(batch) == _sdk_bytes(batch)


def test_fast_grpc_exporter_delivers_to_a_receiver(otlp_receiver):
    from otel_blob.otlp_encode import FastOTLPLogExporter

    lp, _ = _provider(Resource({"service.name": "fast"}))
    exporter = FastOTLPLogExporter(endpoint=otlp_receiver.grpc_endpoint, insecure=True)
    lp.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    lp.get_logger("t").emit(LogRecord(body="hello", attributes={"k": "v", "n": 7}, event_name="e.x"))
    assert otlp_receiver.wait_for(lambda r: r.log_records(), timeout=10)
    rec = otlp_receiver.log_records()[0]
    assert rec["body"] == "hello" and rec["attributes"] == {"k": "v", "n": 7} and rec["event_name"] == "e.x"
    assert rec["resource"]["service.name"] == "fast"
    lp.shutdown()

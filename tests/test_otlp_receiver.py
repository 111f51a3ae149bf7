"""The OTLP test receiver, exercised with the real SDK exporters over gRPC and HTTP."""

from __future__ import annotations

import gzip
import http.client
import socket
import ssl
import threading
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import grpc
import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from otlp_receiver import OtlpReceiver, make_self_signed_cert

TransportName = Literal["grpc", "http"]
TRANSPORTS: list[TransportName] = ["grpc", "http"]
RESOURCE = Resource.create({"service.name": "otlp-receiver-test"})


# ---------------------------------------------------------------------- helpers


@dataclass
class Pipeline:
    """Real SDK providers wired to one receiver over one transport."""

    logger_provider: LoggerProvider
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def flush(self) -> bool:
        return all(
            p.force_flush() for p in (self.logger_provider, self.tracer_provider, self.meter_provider)
        )

    def shutdown(self) -> None:
        self.logger_provider.shutdown()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def make_pipeline(
    rcv: OtlpReceiver,
    transport: TransportName,
    *,
    headers: Mapping[str, str] | None = None,
    ca_cert: str | None = None,
    gzip_http: bool = False,
) -> Pipeline:
    # Short timeouts: a misconfigured test should fail fast, not sit in 10 s of backoff.
    if transport == "grpc":
        grpc_kwargs: dict[str, Any] = {"endpoint": rcv.grpc_endpoint, "headers": dict(headers or {}), "timeout": 5}
        if ca_cert is not None:
            # The gRPC exporters have no certificate_file kwarg; pass channel credentials.
            grpc_kwargs["credentials"] = grpc.ssl_channel_credentials(Path(ca_cert).read_bytes())
        log_exp, span_exp, metric_exp = (
            GrpcLogExporter(**grpc_kwargs),
            GrpcSpanExporter(**grpc_kwargs),
            GrpcMetricExporter(**grpc_kwargs),
        )
    else:
        http_kwargs: dict[str, Any] = {"headers": dict(headers or {}), "timeout": 5, "certificate_file": ca_cert}
        if gzip_http:
            http_kwargs["compression"] = HttpCompression.Gzip
        # HTTP exporters want the full per-signal URL, not the base endpoint.
        log_exp, span_exp, metric_exp = (
            HttpLogExporter(endpoint=rcv.http_url("logs"), **http_kwargs),
            HttpSpanExporter(endpoint=rcv.http_url("traces"), **http_kwargs),
            HttpMetricExporter(endpoint=rcv.http_url("metrics"), **http_kwargs),
        )

    logger_provider = LoggerProvider(resource=RESOURCE, shutdown_on_exit=False)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exp))
    tracer_provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exp))
    # Long interval: only explicit flushes export, so counts are deterministic.
    reader = PeriodicExportingMetricReader(metric_exp, export_interval_millis=60_000)
    meter_provider = MeterProvider(resource=RESOURCE, metric_readers=[reader], shutdown_on_exit=False)
    return Pipeline(logger_provider, tracer_provider, meter_provider)


@pytest.fixture
def no_ca_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override the session's
    # `verify`, i.e. the HTTP exporter's certificate_file; SSL_CERT_FILE changes
    # what the default trust store holds.
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def tls_cert(tmp_path: Path) -> tuple[str, str]:
    return make_self_signed_cert(tmp_path)


def emit_one_span(pipeline: Pipeline, name: str = "op") -> None:
    with pipeline.tracer_provider.get_tracer("test").start_as_current_span(name):
        pass
    pipeline.tracer_provider.force_flush()


def raw_export(
    rcv: OtlpReceiver, transport: TransportName, headers: Mapping[str, str] | None = None
) -> str:
    """Send one empty logs export without the SDK; return a normalised outcome name."""
    headers = dict(headers or {})
    request = logs_service_pb2.ExportLogsServiceRequest()
    if transport == "grpc":
        with grpc.insecure_channel(f"{rcv.host}:{rcv.grpc_port}") as channel:
            stub = logs_service_pb2_grpc.LogsServiceStub(channel)
            try:
                stub.Export(request, metadata=list(headers.items()), timeout=5)
            except grpc.RpcError as err:
                return err.code().name
            return "OK"
    status = http_post(rcv.http_url("logs"), request.SerializeToString(), headers)
    return {200: "OK", 401: "UNAUTHENTICATED", 503: "UNAVAILABLE"}.get(status, str(status))


def http_post(url: str, body: bytes, headers: Mapping[str, str] | None = None, **kwargs: Any) -> int:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/x-protobuf", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=5, **kwargs) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


# ---------------------------------------------------------------------- end to end


@pytest.mark.parametrize(
    ("transport", "gzip_http"), [("grpc", False), ("http", False), ("http", True)], ids=["grpc", "http", "http-gzip"]
)
def test_sdk_exporters_round_trip(otlp_receiver: OtlpReceiver, transport: TransportName, gzip_http: bool) -> None:
    rcv = otlp_receiver
    pipeline = make_pipeline(rcv, transport, gzip_http=gzip_http)
    tracer = pipeline.tracer_provider.get_tracer("receiver.test")
    logger = pipeline.logger_provider.get_logger("receiver.test")
    counter = pipeline.meter_provider.get_meter("receiver.test").create_counter("test.requests", unit="{request}")

    with tracer.start_as_current_span("parent", attributes={"http.route": "/x"}) as span:
        span.add_event("checkpoint", {"step": 1})
        # SDK 1.45: Logger.emit takes keyword args (or an API LogRecord); with
        # no explicit context the current span's ids are attached.
        logger.emit(
            event_name="test.event",
            body="hello receiver",
            severity_number=SeverityNumber.WARN,
            severity_text="WARN",
            attributes={"user.count": 3, "ok": True, "ratio": 0.5, "tags": ["a", "b"], "who": "me"},
        )
    counter.add(2, {"route": "/x"})
    counter.add(3, {"route": "/x"})

    assert pipeline.flush()
    pipeline.shutdown()
    assert rcv.wait_for(lambda r: all((r.log_records(), r.spans(), r.metrics())))

    [log] = rcv.log_records()
    assert log["event_name"] == "test.event"
    assert log["body"] == "hello receiver"
    assert log["severity_number"] == SeverityNumber.WARN.value
    assert log["severity_text"] == "WARN"
    assert log["attributes"] == {"user.count": 3, "ok": True, "ratio": 0.5, "tags": ["a", "b"], "who": "me"}
    assert log["resource"]["service.name"] == "otlp-receiver-test"
    assert log["scope"] == "receiver.test"
    assert log["transport"] == transport
    assert log["observed_time_unix_nano"] > 0

    [parent] = rcv.spans()
    assert parent["name"] == "parent"
    assert parent["parent_span_id"] == ""
    assert parent["kind"] == "SPAN_KIND_INTERNAL"
    assert parent["attributes"] == {"http.route": "/x"}
    assert [(e["name"], e["attributes"]) for e in parent["events"]] == [("checkpoint", {"step": 1})]
    assert parent["end_time_unix_nano"] >= parent["start_time_unix_nano"] > 0
    assert parent["transport"] == transport
    ctx = span.get_span_context()
    assert parent["trace_id"] == format(ctx.trace_id, "032x")
    assert (log["trace_id"], log["span_id"]) == (parent["trace_id"], parent["span_id"])

    # shutdown() exports the cumulative counter again; the last report wins.
    counters = [m for m in rcv.metrics() if m["name"] == "test.requests"]
    assert counters, rcv.metrics()
    last = counters[-1]
    assert (last["type"], last["is_monotonic"], last["unit"]) == ("sum", True, "{request}")
    assert [(dp["attributes"], dp["value"]) for dp in last["data_points"]] == [({"route": "/x"}, 5)]

    assert rcv.requests["logs", transport] == 1
    assert rcv.requests["traces", transport] == 1
    assert rcv.requests["metrics", transport] >= 1
    other = "http" if transport == "grpc" else "grpc"
    assert sum(n for (_, t), n in rcv.requests.items() if t == other) == 0
    # Bodies are kept decompressed, so byte-level "never exported" checks work with gzip too.
    assert any(b"hello receiver" in body for body in rcv.raw_bodies)
    assert rcv.rejected == 0


# ---------------------------------------------------------------------- TLS


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.usefixtures("no_ca_env")
def test_tls_with_self_signed_cert(tls_cert: tuple[str, str], transport: TransportName) -> None:
    cert, _ = tls_cert
    with OtlpReceiver(tls=tls_cert) as rcv:
        assert rcv.grpc_endpoint.startswith("https://")
        assert rcv.http_endpoint.startswith("https://")
        pipeline = make_pipeline(rcv, transport, ca_cert=cert)
        emit_one_span(pipeline, "secure")
        pipeline.shutdown()
        assert rcv.wait_for(lambda r: len(r.spans()) == 1)
        assert rcv.spans()[0]["name"] == "secure"


@pytest.mark.usefixtures("no_ca_env")
def test_tls_http_rejects_untrusting_and_plaintext_clients(tls_cert: tuple[str, str]) -> None:
    cert, _ = tls_cert
    with OtlpReceiver(tls=tls_cert) as rcv:
        body = logs_service_pb2.ExportLogsServiceRequest().SerializeToString()
        trusting = ssl.create_default_context(cafile=cert)
        assert http_post(rcv.http_url("logs"), body, context=trusting) == 200
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            http_post(rcv.http_url("logs"), body, context=ssl.create_default_context())
        with pytest.raises((OSError, http.client.HTTPException)):  # URLError is an OSError
            http_post(f"http://{rcv.host}:{rcv.http_port}/v1/logs", body)
        assert rcv.requests["logs", "http"] == 1


@pytest.mark.usefixtures("no_ca_env")
def test_self_signed_cert_is_valid_for_localhost_name(tls_cert: tuple[str, str]) -> None:
    # Other tests connect by IP (IP SAN); this checks the DNS SAN.
    cert, _ = tls_cert
    with OtlpReceiver(tls=tls_cert) as rcv:
        context = ssl.create_default_context(cafile=cert)
        with socket.create_connection((rcv.host, rcv.http_port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.version() is not None


# ---------------------------------------------------------------------- required headers


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_required_headers(transport: TransportName) -> None:
    auth = {"authorization": "Bearer s3cret"}
    with OtlpReceiver(required_headers=auth) as rcv:
        assert raw_export(rcv, transport) == "UNAUTHENTICATED"
        assert raw_export(rcv, transport, {"authorization": "Bearer wrong"}) == "UNAUTHENTICATED"
        assert rcv.rejected == 2

        # Unauthenticated is not retryable, so the SDK export fails fast.
        denied = make_pipeline(rcv, transport)
        emit_one_span(denied, "denied")
        denied.shutdown()
        assert rcv.rejected == 3
        assert rcv.spans() == []

        allowed = make_pipeline(rcv, transport, headers=auth)
        emit_one_span(allowed, "allowed")
        allowed.shutdown()
        assert [s["name"] for s in rcv.spans()] == ["allowed"]
        assert rcv.received[-1].headers["authorization"] == "Bearer s3cret"


# ---------------------------------------------------------------------- outage


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_outage_answers_unavailable_then_recovers(otlp_receiver: OtlpReceiver, transport: TransportName) -> None:
    rcv = otlp_receiver
    rcv.set_available(False)
    assert raw_export(rcv, transport) == "UNAVAILABLE"
    assert raw_export(rcv, transport) == "UNAVAILABLE"
    assert rcv.rejected == 2
    assert rcv.requests["logs", transport] == 0

    rcv.set_available(True)
    assert raw_export(rcv, transport) == "OK"
    pipeline = make_pipeline(rcv, transport)
    emit_one_span(pipeline, "after-outage")
    pipeline.shutdown()
    assert [s["name"] for s in rcv.spans()] == ["after-outage"]
    assert rcv.rejected == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sdk_exporter_retries_through_outage(otlp_receiver: OtlpReceiver, transport: TransportName) -> None:
    rcv = otlp_receiver
    # retry_after keeps the exporter's backoff at 50 ms instead of >= 0.8 s.
    rcv.set_available(False, retry_after=0.05)
    pipeline = make_pipeline(rcv, transport)
    flusher = threading.Thread(target=emit_one_span, args=(pipeline, "retried"))
    flusher.start()
    try:
        assert rcv.wait_for(lambda r: r.rejected >= 1), "exporter never reached the receiver"
        rcv.set_available(True)
        assert rcv.wait_for(lambda r: len(r.spans()) == 1)
    finally:
        rcv.set_available(True)
        flusher.join(timeout=10)
        pipeline.shutdown()
    assert rcv.spans()[0]["name"] == "retried"
    assert rcv.rejected >= 1


# ---------------------------------------------------------------------- HTTP details


def test_http_decodes_compressed_bodies_and_rejects_bad_requests(otlp_receiver: OtlpReceiver) -> None:
    rcv = otlp_receiver
    request = logs_service_pb2.ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "squeezed"
    body = request.SerializeToString()
    url = rcv.http_url("logs")

    assert http_post(url, gzip.compress(body), {"Content-Encoding": "gzip"}) == 200
    assert http_post(url, zlib.compress(body), {"Content-Encoding": "deflate"}) == 200
    assert [r["body"] for r in rcv.log_records()] == ["squeezed", "squeezed"]
    assert all(r["transport"] == "http" and r["trace_id"] == "" for r in rcv.log_records())

    assert http_post(url, b"\xff\xff\xff", {}) == 400  # not protobuf
    assert http_post(url, b"not gzip", {"Content-Encoding": "gzip"}) == 400
    assert http_post(f"{rcv.http_endpoint}/v1/profiles", body) == 404
    assert http_post(url, b"{}", {"Content-Type": "application/json"}) == 415
    assert rcv.requests["logs", "http"] == 2
    assert rcv.raw_bodies[:2] == [body, body]


# ---------------------------------------------------------------------- lifecycle & waiting


def test_wait_for_times_out_and_clear_resets(otlp_receiver: OtlpReceiver) -> None:
    rcv = otlp_receiver
    assert rcv.wait_for(lambda r: len(r.log_records()) > 0, timeout=0.05) is False
    assert raw_export(rcv, "grpc") == "OK"
    assert rcv.wait_for(lambda r: r.requests["logs", "grpc"] == 1, timeout=0.05) is True
    rcv.clear()
    assert (rcv.received, rcv.raw_bodies, rcv.requests, rcv.rejected) == ([], [], {}, 0)


def test_wait_for_wakes_on_request_from_another_thread(otlp_receiver: OtlpReceiver) -> None:
    rcv = otlp_receiver
    sender = threading.Thread(target=raw_export, args=(rcv, "http"))
    sender.start()
    assert rcv.wait_for(lambda r: r.requests["logs", "http"] == 1, timeout=5)
    sender.join()


def test_stop_releases_ports_and_receivers_are_reusable() -> None:
    for _ in range(3):
        with OtlpReceiver() as rcv:
            assert raw_export(rcv, "grpc") == "OK"
            assert raw_export(rcv, "http") == "OK"
            ports = (rcv.grpc_port, rcv.http_port)
        for port in ports:
            with socket.socket() as sock:
                # SO_REUSEADDR tolerates TIME_WAIT leftovers of finished connections
                # but still raises EADDRINUSE if a server is listening on the port.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))
                sock.listen()
    rcv.stop()  # idempotent


def test_explicit_port_already_in_use_fails_loudly(otlp_receiver: OtlpReceiver) -> None:
    with pytest.raises((RuntimeError, OSError)):
        OtlpReceiver(grpc_port=otlp_receiver.grpc_port).start()
    with pytest.raises(OSError):
        OtlpReceiver(http_port=otlp_receiver.http_port).start()


def test_receivers_are_isolated() -> None:
    with OtlpReceiver() as a, OtlpReceiver() as b:
        assert raw_export(a, "http") == "OK"
        assert (a.requests["logs", "http"], b.requests["logs", "http"]) == (1, 0)

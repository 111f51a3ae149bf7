"""In-process OTLP receiver for end-to-end tests.

Serves the OTLP collector API over gRPC and HTTP/protobuf, decodes every
request with the real ``opentelemetry-proto`` messages and keeps them, so tests
can point the real SDK exporters at it and assert on what actually went over
the wire::

    with OtlpReceiver() as rcv:
        exporter = OTLPLogExporter(endpoint=rcv.grpc_endpoint)
        ...
        assert rcv.wait_for(lambda r: len(r.log_records()) >= 1)
        assert rcv.log_records()[0]["event_name"] == "my.event"

Failure modes the exporters must cope with can be simulated: required headers
(UNAUTHENTICATED / 401), outages (UNAVAILABLE / 503, which the exporters
retry) and TLS with a throw-away self-signed certificate.
"""

from __future__ import annotations

import gzip
import ssl
import subprocess
import sys
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = ["OtlpReceiver", "Received", "make_self_signed_cert"]

Signal = Literal["logs", "traces", "metrics"]
Transport = Literal["grpc", "http"]
_Verdict = Literal["ok", "unavailable", "unauthenticated"]

# signal -> (request message, response message)
_MESSAGES: dict[Signal, tuple[type[Message], type[Message]]] = {
    "logs": (logs_service_pb2.ExportLogsServiceRequest, logs_service_pb2.ExportLogsServiceResponse),
    "traces": (trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse),
    "metrics": (metrics_service_pb2.ExportMetricsServiceRequest, metrics_service_pb2.ExportMetricsServiceResponse),
}
_HTTP_PATHS: dict[str, Signal] = {"/v1/logs": "logs", "/v1/traces": "traces", "/v1/metrics": "metrics"}


@dataclass(frozen=True)
class Received:
    """One accepted export request, decoded."""

    signal: Signal
    transport: Transport
    request: Message  # Export{Logs,Trace,Metrics}ServiceRequest
    headers: Mapping[str, str]  # lower-cased names (gRPC metadata / HTTP headers)


def make_self_signed_cert(directory: str | Path) -> tuple[str, str]:
    """Create a throw-away self-signed certificate valid for 127.0.0.1 and localhost.

    Uses the ``openssl`` CLI so tests need no extra Python dependency. The
    certificate doubles as its own CA, so clients trust it by passing the cert
    file as their CA bundle. Returns ``(certfile, keyfile)``.
    """
    directory = Path(directory)
    cert, key = directory / "otlp-receiver-cert.pem", directory / "otlp-receiver-key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-nodes", "-days", "2",
            # EC keys generate instantly; RSA would add noticeable test time.
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-keyout", str(key), "-out", str(cert),
            "-subj", "/CN=localhost",
            # gRPC and Python's ssl check the SAN, not the CN.
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


class OtlpReceiver:
    """OTLP/gRPC + OTLP/HTTP receiver that records decoded requests.

    All public methods are thread-safe. ``start()``/``stop()`` may be called on
    many instances in one process; ``stop()`` releases both ports and joins the
    server threads.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        grpc_port: int = 0,
        http_port: int = 0,
        tls: tuple[str, str] | None = None,
        required_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        self._requested_grpc_port = grpc_port
        self._requested_http_port = http_port
        self._tls = tls
        # Header names are case-insensitive in HTTP and lower-case in gRPC metadata.
        self._required_headers = {k.lower(): v for k, v in (required_headers or {}).items()}

        # RLock so predicates given to wait_for() can call the (locking) views.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._received: list[Received] = []
        self._raw_bodies: list[bytes] = []
        self._requests: Counter[tuple[Signal, Transport]] = Counter()
        self._rejected = 0
        self._available = True
        self._retry_after: float | None = None

        self._grpc_server: grpc.Server | None = None
        self._grpc_pool: ThreadPoolExecutor | None = None
        self._http_server: _HttpServer | None = None
        self._http_thread: threading.Thread | None = None
        self.grpc_port = 0
        self.http_port = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> OtlpReceiver:
        if self._grpc_server is not None:
            raise RuntimeError("OtlpReceiver already started")
        try:
            self._start_grpc()
            self._start_http()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Shut both servers down and join their threads. Idempotent."""
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None).wait()
            self._grpc_server = None
        if self._grpc_pool is not None:
            # grpc.Server does not own the executor it was given.
            self._grpc_pool.shutdown(wait=True)
            self._grpc_pool = None
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None
        if self._http_thread is not None:
            self._http_thread.join()
            self._http_thread = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _start_grpc(self) -> None:
        self._grpc_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="otlp-receiver-grpc")
        # SO_REUSEPORT (gRPC's default) would let two receivers silently share
        # an explicit port; fail loudly instead.
        server = grpc.server(self._grpc_pool, options=[("grpc.so_reuseport", 0)])
        self._grpc_server = server
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsServicer(self), server)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceServicer(self), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsServicer(self), server)
        address = f"{self.host}:{self._requested_grpc_port}"
        if self._tls is not None:
            cert, key = (Path(p).read_bytes() for p in self._tls)
            port = server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
        else:
            port = server.add_insecure_port(address)
        if port == 0:  # older grpcio reports bind failures this way instead of raising
            raise RuntimeError(f"could not bind gRPC receiver to {address}")
        server.start()
        self.grpc_port = port

    def _start_http(self) -> None:
        ssl_context = None
        if self._tls is not None:
            ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ssl_context.load_cert_chain(*self._tls)
        server = _HttpServer((self.host, self._requested_http_port), self, ssl_context)
        self._http_server = server
        self.http_port = server.server_address[1]
        self._http_thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="otlp-receiver-http", daemon=True
        )
        self._http_thread.start()

    # ------------------------------------------------------------------ endpoints

    @property
    def _scheme(self) -> str:
        return "https" if self._tls is not None else "http"

    @property
    def grpc_endpoint(self) -> str:
        """e.g. ``http://127.0.0.1:PORT``; the gRPC exporter infers TLS from the scheme."""
        return f"{self._scheme}://{self.host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` (what OTEL_EXPORTER_OTLP_ENDPOINT takes)."""
        return f"{self._scheme}://{self.host}:{self.http_port}"

    def http_url(self, signal: Signal) -> str:
        """Full per-signal URL, which is what the HTTP exporters' ``endpoint=`` expects."""
        return f"{self.http_endpoint}/v1/{signal}"

    # ------------------------------------------------------------------ control

    def set_available(self, available: bool, retry_after: float | None = None) -> None:
        """Simulate an outage: while unavailable, answer UNAVAILABLE / 503.

        ``retry_after`` (seconds) is sent as gRPC RetryInfo / HTTP Retry-After,
        which the SDK exporters honour instead of their 1 s+ exponential backoff,
        so retry tests stay fast.
        """
        with self._lock:
            self._available = available
            self._retry_after = retry_after

    def clear(self) -> None:
        """Drop everything recorded so far (requests, bodies, counters)."""
        with self._lock:
            self._received.clear()
            self._raw_bodies.clear()
            self._requests.clear()
            self._rejected = 0

    def wait_for(self, predicate: Callable[[OtlpReceiver], bool], timeout: float = 10.0) -> bool:
        """Block until ``predicate(self)`` is true; re-checked after every request.

        Returns False on timeout. Example:
        ``rcv.wait_for(lambda r: len(r.log_records()) >= 5)``.
        """
        with self._changed:
            return bool(self._changed.wait_for(lambda: predicate(self), timeout))

    # ------------------------------------------------------------------ raw views

    @property
    def received(self) -> list[Received]:
        """Accepted requests, decoded, in arrival order."""
        with self._lock:
            return list(self._received)

    @property
    def raw_bodies(self) -> list[bytes]:
        """Every body that reached a signal endpoint, accepted or rejected (gzip/deflate removed).

        For gRPC this is the decoded request re-serialised; string fields are
        byte-identical to what was sent, so "secret never leaves the process"
        assertions hold.
        """
        with self._lock:
            return list(self._raw_bodies)

    @property
    def requests(self) -> Counter[tuple[Signal, Transport]]:
        """Accepted requests per (signal, transport), e.g. ``r.requests["logs", "http"]``."""
        with self._lock:
            return Counter(self._requests)

    @property
    def rejected(self) -> int:
        """Requests refused because of a simulated outage or missing required headers."""
        with self._lock:
            return self._rejected

    # ------------------------------------------------------------------ flattened views

    def log_records(self) -> list[dict[str, Any]]:
        out = []
        for rec, request in self._requests_for("logs"):
            for rl in request.resource_logs:
                resource = _attributes(rl.resource.attributes)
                for sl in rl.scope_logs:
                    for lr in sl.log_records:
                        body = _any_value(lr.body)
                        out.append({
                            "event_name": lr.event_name,
                            # string bodies come back as str; structured bodies as python values
                            "body": "" if body is None else body,
                            "severity_number": int(lr.severity_number),
                            "severity_text": lr.severity_text,
                            "time_unix_nano": lr.time_unix_nano,
                            "observed_time_unix_nano": lr.observed_time_unix_nano,
                            "trace_id": lr.trace_id.hex(),
                            "span_id": lr.span_id.hex(),
                            "attributes": _attributes(lr.attributes),
                            "resource": resource,
                            "scope": sl.scope.name,
                            "transport": rec.transport,
                        })
        return out

    def spans(self) -> list[dict[str, Any]]:
        out = []
        for rec, request in self._requests_for("traces"):
            for rs in request.resource_spans:
                resource = _attributes(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        out.append({
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "start_time_unix_nano": span.start_time_unix_nano,
                            "end_time_unix_nano": span.end_time_unix_nano,
                            # proto enum names, e.g. "SPAN_KIND_SERVER"; the SDK's
                            # SpanKind ints differ from the wire values.
                            "kind": trace_pb2.Span.SpanKind.Name(span.kind),
                            "status_code": trace_pb2.Status.StatusCode.Name(span.status.code),
                            "status_message": span.status.message,
                            "attributes": _attributes(span.attributes),
                            "events": [
                                {"name": e.name, "time_unix_nano": e.time_unix_nano, "attributes": _attributes(e.attributes)}
                                for e in span.events
                            ],
                            "resource": resource,
                            "scope": ss.scope.name,
                            "transport": rec.transport,
                        })
        return out

    def metrics(self) -> list[dict[str, Any]]:
        """One entry per metric per request; cumulative exporters repeat a metric on each flush."""
        out = []
        for rec, request in self._requests_for("metrics"):
            for rm in request.resource_metrics:
                resource = _attributes(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        out.append({
                            "name": metric.name,
                            "unit": metric.unit,
                            "description": metric.description,
                            **_metric_data(metric),
                            "resource": resource,
                            "scope": sm.scope.name,
                            "transport": rec.transport,
                        })
        return out

    def _requests_for(self, signal: Signal) -> list[tuple[Received, Any]]:
        with self._lock:
            return [(r, r.request) for r in self._received if r.signal == signal]

    # ------------------------------------------------------------------ request handling (server threads)

    def _admit(self, body: bytes, headers: Mapping[str, str]) -> _Verdict:
        """Record the body and decide whether the request is let through."""
        with self._changed:
            self._raw_bodies.append(body)
            if not self._available:
                verdict: _Verdict = "unavailable"
            elif any(headers.get(k) != v for k, v in self._required_headers.items()):
                verdict = "unauthenticated"
            else:
                return "ok"
            self._rejected += 1
            self._changed.notify_all()
            return verdict

    def _store(self, signal: Signal, transport: Transport, request: Message, headers: Mapping[str, str]) -> None:
        with self._changed:
            self._received.append(Received(signal, transport, request, dict(headers)))
            self._requests[signal, transport] += 1
            self._changed.notify_all()

    def _current_retry_after(self) -> float | None:
        with self._lock:
            return self._retry_after

    def _handle_grpc(self, signal: Signal, request: Message, context: grpc.ServicerContext) -> Message:
        headers = {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)}
        verdict = self._admit(request.SerializeToString(), headers)
        if verdict == "unavailable":
            retry_after = self._current_retry_after()
            if retry_after is not None:
                info = RetryInfo()
                info.retry_delay.FromNanoseconds(int(retry_after * 1e9))
                context.set_trailing_metadata([("google.rpc.retryinfo-bin", info.SerializeToString())])
            context.abort(grpc.StatusCode.UNAVAILABLE, "otlp receiver: simulated outage")
        if verdict == "unauthenticated":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "otlp receiver: missing required headers")
        self._store(signal, "grpc", request, headers)
        return _MESSAGES[signal][1]()


class _LogsServicer(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Message, context: grpc.ServicerContext) -> Message:  # noqa: N802 (generated name)
        return self._receiver._handle_grpc("logs", request, context)


class _TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Message, context: grpc.ServicerContext) -> Message:  # noqa: N802
        return self._receiver._handle_grpc("traces", request, context)


class _MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Message, context: grpc.ServicerContext) -> Message:  # noqa: N802
        return self._receiver._handle_grpc("metrics", request, context)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], receiver: OtlpReceiver, ssl_context: ssl.SSLContext | None
    ) -> None:
        self.receiver = receiver
        self.ssl_context = ssl_context
        super().__init__(address, _HttpHandler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        if self.ssl_context is not None:
            # Defer the handshake to the per-connection thread (first read) so a
            # misbehaving client cannot stall the accept loop.
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Failed TLS handshakes and dropped connections are expected in tests
        # (e.g. a client that does not trust the cert); keep pytest output clean.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _HttpHandler(BaseHTTPRequestHandler):
    server: _HttpServer
    # HTTP/1.0: one request per connection, so no keep-alive handler threads
    # linger after stop().
    protocol_version = "HTTP/1.0"
    timeout = 10  # a stuck client must not pin a handler thread forever

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        receiver = self.server.receiver
        signal = _HTTP_PATHS.get(self.path.split("?", 1)[0])
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if signal is None:
            return self._reply(404)
        if self.headers.get_content_type() != "application/x-protobuf":
            return self._reply(415)  # OTLP/JSON is not supported
        try:
            body = _decompress(data, self.headers.get("Content-Encoding", ""))
        except (OSError, EOFError, zlib.error):
            return self._reply(400)
        headers = {k.lower(): v for k, v in self.headers.items()}
        verdict = receiver._admit(body, headers)
        if verdict == "unavailable":
            retry_after = receiver._current_retry_after()
            extra = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
            return self._reply(503, extra_headers=extra)
        if verdict == "unauthenticated":
            return self._reply(401)
        request_cls, response_cls = _MESSAGES[signal]
        try:
            request = request_cls.FromString(body)
        except DecodeError:
            return self._reply(400)
        receiver._store(signal, "http", request, headers)
        self._reply(200, response_cls().SerializeToString())

    def _reply(self, status: int, body: bytes = b"", extra_headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        pass  # no per-request stderr noise in test output


def _decompress(data: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "deflate":
        return zlib.decompress(data)
    return data


# ---------------------------------------------------------------------- proto -> python


def _any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)  # string/bool/int/double/bytes


def _attributes(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in kvs}


def _metric_data(metric: metrics_pb2.Metric) -> dict[str, Any]:
    kind = metric.WhichOneof("data")  # "sum" | "gauge" | "histogram" | "exponential_histogram" | "summary"
    data = getattr(metric, kind) if kind else None
    temporality = getattr(data, "aggregation_temporality", None)
    return {
        "type": kind or "",
        "is_monotonic": data.is_monotonic if kind == "sum" else None,
        "aggregation_temporality": (
            metrics_pb2.AggregationTemporality.Name(temporality) if temporality is not None else None
        ),
        "data_points": [_data_point(kind, dp) for dp in data.data_points] if data is not None else [],
    }


def _data_point(kind: str, dp: Any) -> dict[str, Any]:
    point: dict[str, Any] = {
        "attributes": _attributes(dp.attributes),
        "start_time_unix_nano": dp.start_time_unix_nano,
        "time_unix_nano": dp.time_unix_nano,
    }
    if kind in ("sum", "gauge"):
        value_kind = dp.WhichOneof("value")  # as_int | as_double
        point["value"] = getattr(dp, value_kind) if value_kind else None
    elif kind == "histogram":
        point.update(
            count=dp.count,
            sum=dp.sum,
            bucket_counts=list(dp.bucket_counts),
            explicit_bounds=list(dp.explicit_bounds),
            min=dp.min,
            max=dp.max,
        )
    elif kind == "exponential_histogram":
        point.update(count=dp.count, sum=dp.sum, scale=dp.scale, zero_count=dp.zero_count, min=dp.min, max=dp.max)
    elif kind == "summary":
        point.update(count=dp.count, sum=dp.sum)
    return point

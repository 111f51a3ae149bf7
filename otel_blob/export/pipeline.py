"""The OpenTelemetry pipeline a process of ours owns: providers, exporters, processors.

The sidecar CLI (``otel-blob watch/replay/demo``) and the instrumentation's helper
process (:mod:`otel_blob.instrument.server`) do not share an application's providers: they
build their own from OpenTelemetry's environment variables
(``OTEL_EXPORTER_OTLP_*``, ``OTEL_{TRACES,LOGS,METRICS}_EXPORTER``,
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``) with the processors of
:mod:`otel_blob.export.queue` -- sized queues, retries while the Collector is away,
counted drops, and backpressure on the LOG reader.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from importlib import import_module
from urllib.parse import urlsplit
from typing import Any, Mapping

from ..settings import sdk_disabled
from ..telemetry import DeterministicIdGenerator, TelemetryListener
from ..watching.listener import EventListener
from . import fast_path
from .direct_logs import DirectLoggerProvider
from .queue import DEFAULT_QUEUE, DeliveryQueue, ReliableLogRecordProcessor, ReliableSpanProcessor, all_have_room

__all__ = ["ConfigError", "ExportPipeline", "PipelineOptions", "check_endpoint", "otlp_configured"]

_log = logging.getLogger("otel_blob")

DEFAULT_SERVICE_NAME = "otel-blob"
SPAN_EVENTS_MAX = 2048  # span events a job span keeps in our pipeline (~1.3 MB encoded)
_METRICS_LAST_EXPORT_MS = 250  # the meter provider's last export when the shutdown time is used up


class ConfigError(ValueError):
    """A bad ``OTEL_*`` value for the exporters; the message names the variable (the CLI: exit 2)."""


_SIGNALS = ("traces", "logs", "metrics")


@dataclass(frozen=True)
class PipelineOptions:
    """What a process of ours wants from its pipeline (the CLI's flags, the helper's hello)."""

    severity: str = "info"
    events: str = "blob"
    file_paths: str = "full"
    otlp: str | None = None  # the OTLP endpoint, over OTEL_EXPORTER_OTLP_ENDPOINT
    console: bool = False  # the CLI prints lines instead: no exporters
    lag_metric: bool = True  # see TelemetryListener (False for a replay of history)


def otlp_configured(endpoint: str | None, environ: Mapping[str, str]) -> bool:
    if endpoint:
        return True
    return any(environ.get(v) for v in _ENDPOINT_VARS)


def _exporter_kind(signal_name: str, environ: Mapping[str, str], default: str) -> str:
    var = f"OTEL_{signal_name.upper()}_EXPORTER"
    raw = (environ.get(var) or default).strip().lower()
    kinds = [k.strip() for k in raw.split(",") if k.strip()]
    for k in kinds:
        if k not in ("otlp", "console", "none"):
            raise ConfigError(f"bad value {var}={raw!r}: otel-blob supports otlp, console or none")
    if "otlp" in kinds:
        return "otlp"
    return "console" if "console" in kinds else "none"


def _protocol(signal_name: str, environ: Mapping[str, str]) -> str:
    var = f"OTEL_EXPORTER_OTLP_{signal_name.upper()}_PROTOCOL"
    raw = environ.get(var) or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    v = raw.strip().lower()
    if v not in ("grpc", "http/protobuf"):
        name = var if environ.get(var) else "OTEL_EXPORTER_OTLP_PROTOCOL"
        raise ConfigError(f"bad value {name}={raw!r}: expected grpc or http/protobuf")
    return v


def check_endpoint(value: str, where: str) -> str:
    """``value`` if it is an OTLP endpoint URL (``http(s)://host[:port][/path]``); else a
    :class:`ConfigError` naming ``where`` (the flag or variable it came from)."""
    v = value.strip()
    try:
        url = urlsplit(v)
        port = url.port  # ValueError for a port that is not a number
    except ValueError:
        url, port = None, None
    if url is None or url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(f"bad value {where}={value!r}: expected a URL such as http://localhost:4317")
    del port
    return v


_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                  "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")


def _endpoint(signal_name: str, endpoint: str | None, proto: str, environ: Mapping[str, str]) -> str:
    """Where ``signal_name`` goes, as the exporter will resolve it (for the start-up message)."""
    if endpoint:
        return endpoint if proto == "grpc" else endpoint.rstrip("/") + "/v1/" + signal_name
    own = environ.get(f"OTEL_EXPORTER_OTLP_{signal_name.upper()}_ENDPOINT")
    if own:
        return own
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if proto == "grpc":
        return base or "http://localhost:4317"
    return (base or "http://localhost:4318").rstrip("/") + "/v1/" + signal_name


def _otlp_exporter(signal_name: str, endpoint: str | None, environ: Mapping[str, str]) -> Any:
    proto = _protocol(signal_name, environ)
    kwargs: dict[str, Any] = {}
    if proto == "grpc":
        mod = "opentelemetry.exporter.otlp.proto.grpc"
        if endpoint:
            kwargs["endpoint"] = endpoint
    else:
        mod = "opentelemetry.exporter.otlp.proto.http"
        if endpoint:
            kwargs["endpoint"] = endpoint.rstrip("/") + "/v1/" + signal_name
    # gRPC spans and logs: the same bytes as the stock exporters', encoded ~5x cheaper
    # (otlp_encode) -- when the check of the exporters' internals it relies on passes.
    fast = proto == "grpc" and _fast_path()
    if signal_name == "traces":
        if fast:
            from .otlp_encode import FastOTLPSpanExporter as cls
        else:
            cls = import_module(mod + ".trace_exporter").OTLPSpanExporter
    elif signal_name == "logs":
        if fast:
            from .otlp_encode import FastOTLPLogExporter as cls
        else:
            cls = import_module(mod + "._log_exporter").OTLPLogExporter
    else:
        cls = import_module(mod + ".metric_exporter").OTLPMetricExporter
    return cls(**kwargs)


def _fast_path() -> bool:
    """May our own encoding and the direct logger be used? (:mod:`.fast_path` checks, once.)"""
    problem = fast_path.fast_path_problem()
    if problem is not None and not _said_fast_path:
        _said_fast_path.append(problem)
        _log.warning("exporting through the stock OpenTelemetry exporters (a few microseconds more per record): "
                     "the installed exporter changed what otel_blob's faster encoding relies on (%s)", problem)
    return problem is None


_said_fast_path: list[str] = []


def _resource(environ: Mapping[str, str]) -> Any:
    """Resource.create() (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES), service.name default ``otel-blob``.

    The SDK's random per-process ``service.instance.id`` is left out unless the
    operator sets one: a re-export (replay, resume) must yield identical records.
    """
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    res = Resource.create()
    attrs = dict(res.attributes)
    name = str(attrs.get(SERVICE_NAME, ""))
    if not name or name.startswith("unknown_service"):
        attrs[SERVICE_NAME] = DEFAULT_SERVICE_NAME
    if "service.instance.id" not in environ.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        attrs.pop("service.instance.id", None)
    return Resource(attrs, res.schema_url)


class ExportPipeline:
    """Tracer, logger and meter providers, their exporters and the TelemetryListener.

    ``default_exporter`` is what a signal uses when ``OTEL_<SIGNAL>_EXPORTER`` is
    not set: ``otlp`` for watch and replay (the OpenTelemetry default), ``none``
    for the demo without an endpoint. ``resource_attributes`` replace the
    resource from the environment (the helper process exports as its application).
    ``accepting(timeout)`` is the backpressure the event source honours.
    """

    def __init__(self, options: PipelineOptions, environ: Mapping[str, str], *, default_exporter: str,
                 resource_attributes: Mapping[str, Any] | None = None, queue_size: int = DEFAULT_QUEUE,
                 shutdown_timeout: float = 30.0) -> None:
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
        from opentelemetry.sdk.trace import SpanLimits, TracerProvider
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        kinds = {s: _exporter_kind(s, environ, default_exporter) for s in _SIGNALS}
        for s in _SIGNALS:
            _protocol(s, environ)  # a bad value is an error even when this signal is not exported
        for var in _ENDPOINT_VARS:  # likewise: checked as --otlp is, not retried for minutes
            if environ.get(var):
                check_endpoint(environ[var], var)
        if options.otlp:
            check_endpoint(options.otlp, "--otlp")
        self.sdk_disabled = sdk_disabled(environ)
        if options.console or self.sdk_disabled:  # --console prints instead of exporting
            kinds = {s: "none" for s in _SIGNALS}
        self.kinds = kinds
        self.exporting = any(k != "none" for k in kinds.values())
        self.destinations = {s: (f"OTLP/{'gRPC' if _protocol(s, environ) == 'grpc' else 'HTTP'} to "
                                 f"{_endpoint(s, options.otlp, _protocol(s, environ), environ)}" if k == "otlp" else k)
                             for s, k in kinds.items()}
        endpoint = options.otlp
        # Build every exporter first: a bad protocol value fails before anything starts.
        exporters: dict[str, Any] = {}
        for s, k in kinds.items():
            if k == "otlp":
                exporters[s] = _otlp_exporter(s, endpoint, environ)
            elif k == "console":
                exporters[s] = {"traces": ConsoleSpanExporter, "logs": ConsoleLogRecordExporter,
                                "metrics": ConsoleMetricExporter}[s]()
        resource = _resource(environ) if resource_attributes is None else Resource(dict(resource_attributes))
        self.shutdown_timeout = shutdown_timeout
        # A job span carries an event per blob file it made or removed, and a compaction can make
        # hundreds (the SDK's default keeps 128): we keep SPAN_EVENTS_MAX, unless the operator sets
        # OTEL_SPAN_EVENT_COUNT_LIMIT. Not unlimited: a span of 10,000 events is ~6 MB, over the
        # 4 MiB a gRPC message may have at a Collector's default, and would be refused whole.
        # What a limit drops is counted (otel_blob.events.dropped{reason=span_event_limit}).
        limits = SpanLimits() if environ.get("OTEL_SPAN_EVENT_COUNT_LIMIT") else SpanLimits(max_events=SPAN_EVENTS_MAX)
        self.tracer_provider = TracerProvider(resource=resource, id_generator=DeterministicIdGenerator(),
                                              span_limits=limits)
        self.logger_provider = LoggerProvider(resource=resource)
        readers = []
        self._metric_threads: list[threading.Thread] = []
        if "metrics" in exporters:
            before = set(threading.enumerate())
            readers.append(PeriodicExportingMetricReader(exporters["metrics"]))
            # Its export thread (the one new thread, by the SDK's name for it): see shutdown().
            self._metric_threads = [t for t in threading.enumerate()
                                    if t not in before and t.name.startswith("OtelPeriodic")]
        self.meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        # Our processors, not the SDK's batch ones: sized queues, retries while the
        # Collector is away, counted drops, and backpressure on the LOG reader.
        self.queues: list[DeliveryQueue] = []
        sizes = dict(max_queue_size=queue_size, on_drop=self._on_drop)
        if "traces" in exporters:
            sp = ReliableSpanProcessor(exporters["traces"], **sizes)
            self.tracer_provider.add_span_processor(sp)
            self.queues.append(sp.queue)
        if "logs" in exporters:
            lp = ReliableLogRecordProcessor(exporters["logs"], **sizes)
            self.logger_provider.add_log_record_processor(lp)
            self.queues.append(lp.queue)
            # Records straight onto that queue, without the SDK's per-record objects
            # (the SDK logger and the processor above take what cannot go that way).
            if _fast_path():
                self.logger_provider = DirectLoggerProvider(self.logger_provider, lp.queue)
        self.listener: EventListener | None = None
        if self.exporting:
            self.listener = TelemetryListener(
                tracer_provider=self.tracer_provider,
                logger_provider=self.logger_provider,
                meter_provider=self.meter_provider,
                severity=options.severity,
                kinds=options.events,
                file_paths=options.file_paths,
                backpressure=self.accepting,
                lag_metric=options.lag_metric,
            )
        self._shut = False

    def _on_drop(self, signal_name: str, reason: str, n: int) -> None:
        if self.listener is not None:
            self.listener.count_dropped(n, f"export_{reason}", signal_name)

    def accepting(self, timeout: float | None = 0.0) -> bool:
        """True when every export queue has room (waits up to ``timeout``; None: forever)."""
        return all_have_room(self.queues, timeout)

    def describe(self) -> str:
        """Where the telemetry goes, in one line (``logs and traces: OTLP/gRPC to http://...``)."""
        if self.sdk_disabled:
            return "nowhere (OTEL_SDK_DISABLED=true)"
        if not self.exporting:
            return "nowhere (every OTEL_<SIGNAL>_EXPORTER is none)"
        by_dest: dict[str, list[str]] = {}
        for s in _SIGNALS:
            if self.kinds[s] != "none":
                by_dest.setdefault(self.destinations[s], []).append(s)
        return "; ".join(f"{' and '.join(signals)}: {dest}" for dest, signals in by_dest.items())

    def marks(self) -> tuple[int, ...]:
        """Items handed to each export queue so far (see :class:`~otel_blob.watching.positions.Positions`)."""
        return tuple(q.enqueued for q in self.queues)

    def delivered(self) -> tuple[int, ...]:
        """Items each export queue delivered so far, in the order they were handed over."""
        return tuple(q.exported for q in self.queues)

    def dropped(self) -> int:
        return sum(sum(q.dropped.values()) for q in self.queues)

    def dropped_by_reason(self) -> dict[str, int]:
        """``{"<signal> <reason>": items}`` of every drop (``logs shutdown``: unsent when stopped)."""
        return {f"{q.signal} {reason}": n for q in self.queues for reason, n in q.dropped.items() if n}

    def flush(self, timeout_millis: int = 30000) -> bool:
        """Hand every finished span and log record to the exporters; True if they took them all."""
        ok = self.tracer_provider.force_flush(timeout_millis)
        ok = self.logger_provider.force_flush(timeout_millis) and ok
        return bool(ok)

    def shutdown(self) -> None:
        """Flush, retrying while the Collector is away, then stop -- all within ``shutdown_timeout``
        seconds (what the exporters still hold then is counted as dropped, see :meth:`dropped`)."""
        if self._shut:
            return
        self._shut = True
        end = time.monotonic() + self.shutdown_timeout

        def left_ms() -> int:
            return int(max(0.0, end - time.monotonic()) * 1000)

        self.tracer_provider.force_flush(left_ms())
        self.logger_provider.force_flush(left_ms())
        if self.listener is not None:
            self.listener.flush_metrics()  # counter sums of a batch cut short (a failure mid-file)
        for q in self.queues:
            q.shutdown(left_ms())
        for provider in (self.meter_provider, self.tracer_provider, self.logger_provider):
            try:
                if provider is self.meter_provider:
                    # Its last collection, bounded: what is left of the time, or a moment for a
                    # Collector that is up (was at least 1 s: the bound was exceeded by a second).
                    provider.shutdown(timeout_millis=max(left_ms(), _METRICS_LAST_EXPORT_MS))
                else:
                    provider.shutdown()  # our queues are already shut down: nothing waits here
            except Exception:  # pragma: no cover - exporter bugs must not change the exit code
                _log.debug("shutdown of %r failed", provider, exc_info=True)
        # The metric reader's thread may be in a retry sleep the shutdown just cut short: let it
        # end (and say "aborting retry") now, not after the caller's summary of what was lost.
        for t in self._metric_threads:
            t.join(_METRICS_LAST_EXPORT_MS / 1000)

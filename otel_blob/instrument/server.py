"""The helper process: the LOG follower and the exporters off the application's GIL.

Under ``opentelemetry-instrument`` (``OTEL_PYTHON_ROCKSDICT_MODE=auto``) or with
``mode="process"``, the instrumentation does no per-event work in the
application at all. At the first ``Rdict`` open it starts ``python -m
otel_blob.helper``, which follows the LOGs, makes the log records, spans and
metrics, and exports them with its own providers -- configured from the same
``OTEL_*`` environment the application was started with, and with the
application's resource, so its telemetry is the application's. Per event the
application pays nothing: a blob-heavy writer keeps its GIL and its core (see
bench/README.md for the numbers).

The application tells the helper what it cannot see by itself
(:mod:`~otel_blob.instrument.protocol`):

* ``watch`` / ``close`` -- a DB was opened / closed (``close`` is answered once
  the helper delivered everything that DB logged);
* ``manual`` / ``manual_done`` -- the trace context and the time window of an
  application ``flush()`` / ``compact_range()`` span, so the background job span
  the helper makes becomes its child, across the process boundary;
* end of file -- the application exited (or was killed): the helper drains every
  LOG to its end, exports, and exits. It never outlives that drain (retries
  included, ``shutdown_timeout``).

The helper answers on a pipe of its own: ``ready`` or ``error`` once, then an
``ack`` per ``close``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any

from ..export.pipeline import ExportPipeline, PipelineOptions, UsageError
from ..source.layout import WatchError
from ..watch.api import start_watch
from ..watch.loop import WatchLoop
from . import protocol as p
from .client import CLOSE_WAIT

__all__ = ["serve"]

_log = logging.getLogger("otel_blob")

MANUAL_OPS_MAX = 4096  # application calls remembered until they are done


def serve(stdin: Any = None, stdout: Any = None) -> int:
    """The helper's main loop (``python -m otel_blob.helper``)."""
    stdin = stdin or sys.stdin.buffer
    if stdout is None:
        stdout = os.fdopen(int(sys.argv[1]), "wb") if len(sys.argv) > 1 else sys.stdout.buffer
    out_lock = threading.Lock()

    def reply(msg: p.Message) -> None:
        with out_lock:
            try:
                stdout.write(p.encode(msg))
                stdout.flush()
            except (OSError, ValueError):
                pass

    # The application's Ctrl-C is for the application: we stop when its pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    logging.basicConfig(level=logging.WARNING, format="otel_blob helper %(process)d: %(levelname)s %(message)s")

    try:
        hello = p.decode(stdin.readline())
        if not isinstance(hello, p.Hello):
            raise p.ProtocolError(f"expected hello, not {hello.op}")
        if hello.version != p.VERSION:
            raise p.ProtocolError(f"the application speaks version {hello.version}, this helper {p.VERSION}")
        try:  # below the application: when both want the CPU, the application gets it
            os.nice(hello.nice)
        except OSError:
            pass
        pipeline = ExportPipeline(PipelineOptions(hello.severity, hello.events, hello.file_paths), os.environ,
                                  default_exporter="otlp", resource_attributes=hello.resource)
    except (p.ProtocolError, UsageError, ImportError) as exc:
        reply(p.Error(str(exc) or type(exc).__name__))
        return 2
    listener = pipeline.listener
    reply(p.Ready())
    if listener is None:  # every exporter is "none": nothing to do but answer
        for raw in stdin:
            try:
                msg = p.decode(raw)
            except p.ProtocolError:
                continue
            if isinstance(msg, p.Close):
                reply(p.Ack(msg.seq))
        return 0

    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    loop = WatchLoop()
    watches: dict[str, Any] = {}
    ops: dict[int, Any] = {}

    def handle(msg: p.Message) -> None:
        if isinstance(msg, p.WatchDb):
            w = watches.get(msg.log)
            if w is not None and not w.stopped:
                return
            try:
                watches[msg.log] = start_watch(msg.db, msg.log, listener, loop=loop, start="start",
                                               poll_interval=hello.poll_interval)
            except WatchError as exc:
                _log.warning("%s", exc)
        elif isinstance(msg, p.Close):
            w = watches.pop(msg.log, None)
            if w is not None:
                w.stop()
            pipeline.flush(int(CLOSE_WAIT * 1000))
            reply(p.Ack(msg.seq))
        elif isinstance(msg, p.Manual):
            sc = SpanContext(int(msg.trace_id, 16), int(msg.span_id, 16), is_remote=True,
                             trace_flags=TraceFlags(msg.flags))
            m = listener.manual_operation(msg.db, msg.kind, trace.set_span_in_context(NonRecordingSpan(sc)))
            m.start_us = msg.start_us
            ops[msg.id] = m
            while len(ops) > MANUAL_OPS_MAX:
                ops.pop(next(iter(ops)))
        elif isinstance(msg, p.ManualDone):
            m = ops.pop(msg.id, None)
            if m is not None:
                m.end_us = msg.end_us

    def read() -> None:
        for raw in stdin:
            try:
                handle(p.decode(raw))
            except Exception:
                _log.exception("bad message %r", raw[:200])
        stopping.set()

    threading.Thread(target=read, name="otel_blob-helper-stdin", daemon=True).start()
    while not stopping.wait(0.5):
        pass
    # The application is gone (or asked us to stop): every LOG to its end, then export.
    for w in list(watches.values()):
        try:
            w.stop()
        except Exception:
            _log.exception("draining %s failed", w.log_path)
    pipeline.shutdown()
    lost = pipeline.dropped()
    if lost:
        _log.warning("%d telemetry items could not be exported", lost)
    return 0

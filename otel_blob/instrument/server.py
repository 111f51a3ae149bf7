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

What the application tells it (:mod:`~otel_blob.instrument.protocol`) is read on
the watch loop's thread before each round and after each read of a LOG, before its lines
are decoded: a ``manual`` message the
application wrote before its ``flush()`` reached RocksDB is always known when the
job it caused is read, so the job span gets its parent. Each open is a DB session,
followed until RocksDB logs its end (:class:`~otel_blob.watching.sessions.SessionWatches`),
however long after ``close()``. Delivered positions go back to the application
(:class:`~otel_blob.watching.positions.Positions`): if this process dies, the
application resumes from them.

When the application is gone (its pipe closes, or it dies and we are
re-parented) the helper reads every LOG to its end -- the application's last
lines are written by then -- exports for at most ``exit_timeout`` seconds, and
exits. Its stdout and stderr are not the application's; its log is
``<state dir>/helper.log``, and what it could not deliver is appended to
``<state dir>/undelivered.jsonl`` (:mod:`~otel_blob.instrument.state`).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from ..export.pipeline import ConfigError, ExportPipeline, PipelineOptions
from ..source.identity import FileIdentity
from ..watching.loop import WatchLoop
from ..watching.positions import Positions
from ..watching.sessions import SessionWatches
from . import protocol as p
from . import state

__all__ = ["serve"]

_log = logging.getLogger("otel_blob")

MANUAL_OPS_MAX = 4096  # application calls remembered until they are done
REPORT_EVERY = 0.1  # s between two reports of delivered positions to the application


class _Answers:
    """The pipe to the application: one message per write, never blocking the helper."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.open = True

    def send(self, msg: p.Message) -> None:
        data = p.encode(msg)
        with self.lock:
            if not self.open:
                return
            try:
                while data:
                    n = os.write(self.fd, data)
                    data = data[n:]
            except BlockingIOError:
                pass  # the application is not reading: it misses this message, we do not stall
            except OSError:
                self.open = False  # the application is gone


class _ToApplication(logging.Handler):
    """The helper's warnings, in the application's log while it runs (and in helper.log always)."""

    def __init__(self, answers: _Answers) -> None:
        super().__init__(logging.WARNING)
        self.answers = answers

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.answers.send(p.Log(record.levelno, record.getMessage()))
        except Exception:
            pass


class _Messages:
    """The application's messages, read without blocking between two rounds of the loop."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.eof = False

    def first(self) -> bytes:
        """The first line, waited for (the hello); what came after it stays for :meth:`read`."""
        while b"\n" not in self.buf:
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                self.eof = True
                break
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        os.set_blocking(self.fd, False)
        return line

    def read(self) -> list[bytes]:
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
                break
            self.buf += chunk
        lines = self.buf.split(b"\n")
        self.buf = lines.pop()
        return lines


def serve(stdin_fd: int | None = None, answers_fd: int | None = None) -> int:
    """The helper's main loop (``python -m otel_blob.helper ANSWER_FD [APPLICATION_PID]``)."""
    stdin_fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
    if answers_fd is None:
        answers_fd = int(sys.argv[1]) if len(sys.argv) > 1 else sys.stdout.fileno()
    answers = _Answers(answers_fd)
    # The application names itself: a short-lived one may be gone before we get here, and
    # getppid() would then say 1 (our reaper) -- in the log, in undelivered.jsonl.
    parent = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() else os.getppid()

    # The application's Ctrl-C is for the application: we stop when its pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s otel_blob helper {os.getpid()} "
                        f"(application {parent}): %(levelname)s %(message)s")
    logging.getLogger().addHandler(_ToApplication(answers))

    messages = _Messages(stdin_fd)
    try:
        hello = p.decode(messages.first())
        if not isinstance(hello, p.Hello):
            raise p.ProtocolError(f"expected hello, not {hello.op}")
        if hello.version != p.VERSION:
            raise p.ProtocolError(f"the application speaks version {hello.version}, this helper {p.VERSION}")
        _below_the_application(hello.nice)
        pipeline = ExportPipeline(PipelineOptions(hello.severity, hello.events, hello.file_paths), os.environ,
                                  default_exporter="otlp", resource_attributes=hello.resource,
                                  shutdown_timeout=hello.exit_timeout)
    except (p.ProtocolError, ConfigError, ImportError) as exc:
        answers.send(p.Error(str(exc) or type(exc).__name__))
        return 2
    answers.send(p.Ready())
    return _Helper(hello, pipeline, answers, messages, parent, stopping).run()


def _below_the_application(nice: int) -> None:
    """Run at ``nice``: when the helper and the application both want the CPU, the application gets it.

    The helper has a session of its own (detached from the application's terminal). Where the
    kernel schedules by autogroup (``/proc/sys/kernel/sched_autogroup_enabled``, on by default in
    most distributions), a session is a group of its own, and a thread's nice value only ranks it
    within its group: the helper's group would get as much CPU as the application's, whatever the
    helper's nice (measured: a write-heavy application ran 17 % slower). The group's nice is set too.
    """
    try:
        os.nice(nice)
    except OSError:
        pass
    if nice > 0:
        try:
            with open("/proc/self/autogroup", "w") as f:
                f.write(str(nice))
        except OSError:  # no autogroup scheduling here: the thread's nice is all there is
            pass


class _Helper:
    def __init__(self, hello: p.Hello, pipeline: ExportPipeline, answers: _Answers, messages: _Messages,
                 parent: int, stopping: threading.Event) -> None:
        self.hello = hello
        self.pipeline = pipeline
        self.answers = answers
        self.messages = messages
        self.parent = parent
        self.stopping = stopping
        self.ops: dict[int, Any] = {}
        self.positions = Positions(pipeline.marks, pipeline.delivered)
        self.loop = WatchLoop(before_round=self.before_round, wake_fds=(messages.fd,))
        # The application's messages are read again after every LOG read, before its lines are
        # decoded: the context of a flush()/compact_range() is then known when its job is --
        # the application wrote it before calling RocksDB, so before RocksDB logged the job.
        self.sessions = (SessionWatches(pipeline.listener, self.loop, poll_interval=hello.poll_interval,
                                        on_checkpoint=self.positions.capture, on_read=self.read_messages)
                         if pipeline.listener is not None else None)
        self.next_report = 0.0

    def run(self) -> int:
        self.loop.call_soon(lambda: None)  # start the thread
        while not self.stopping.wait(0.5):
            if not self.loop.is_running():
                break
        self.loop.stop()
        self.loop.join()
        return self.finish()

    # -- on the loop's thread, before each round --------------------------------------

    def before_round(self) -> None:
        self.read_messages()
        if self.messages.eof or os.getppid() != self.parent:
            self.stopping.set()  # the application is gone
            self.loop.stop()
            return
        now = time.monotonic()
        if now >= self.next_report:
            self.next_report = now + REPORT_EVERY
            for key, position in self.positions.confirm().items():
                self.answers.send(p.Position(key, position))  # type: ignore[arg-type]
                if position.get("stopped"):
                    self.positions.forget(key)

    def read_messages(self) -> None:
        """Handle what the application said since the last call (on the loop's thread)."""
        for raw in self.messages.read():
            if raw.strip():
                try:
                    self.handle(p.decode(raw))
                except Exception:
                    _log.exception("bad message from the application: %r", raw[:200])

    def handle(self, msg: p.Message) -> None:
        if isinstance(msg, p.WatchDb):
            if self.sessions is None:  # every exporter is "none": nothing will ever be delivered
                self.answers.send(p.Position(msg.key, {"stopped": True}))
                return
            anchor = FileIdentity.from_json(msg.anchor) if msg.anchor else None
            self.sessions.open(msg.key, msg.db, msg.log, anchor, msg.position)
        elif isinstance(msg, p.Manual):
            listener = self.pipeline.listener
            if listener is None:
                return
            from opentelemetry import trace
            from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

            trace_id, span_id, flags = int(msg.trace_id, 16), int(msg.span_id, 16), TraceFlags(msg.flags)
            span = None
            if msg.name is not None:  # the call's own span: recorded here, with the application's ids
                parent = (SpanContext(trace_id, int(msg.parent_span_id, 16), is_remote=msg.parent_remote,
                                      trace_flags=flags) if msg.parent_span_id else None)
                span = listener.call_span(msg.name, trace_id, span_id, parent, msg.start_us * 1000,
                                          msg.attributes or {})
                sc = span.get_span_context()
            else:
                sc = SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)
            m = listener.manual_operation(msg.db, msg.kind, trace.set_span_in_context(NonRecordingSpan(sc)),
                                          cf=msg.cf)
            m.start_us = msg.start_us
            self.ops[msg.id] = (m, span)
            while len(self.ops) > MANUAL_OPS_MAX:
                _m, lost = self.ops.pop(next(iter(self.ops)))
                if lost is not None:
                    lost.end()
        elif isinstance(msg, p.ManualDone):
            m, span = self.ops.pop(msg.id, (None, None))
            if m is not None:
                m.end_us = msg.end_us
            if span is not None:
                if msg.error:
                    from opentelemetry.trace import Status, StatusCode

                    kind, _, text = msg.error.partition(": ")
                    span.add_event("exception", {"exception.type": kind, "exception.message": text},
                                   timestamp=msg.end_us * 1000)
                    span.set_status(Status(StatusCode.ERROR, msg.error))
                span.end(end_time=msg.end_us * 1000)

    # -- after the application ------------------------------------------------------------

    def finish(self) -> int:
        """Every LOG to its end (the application's last lines are written), export within the
        bound, then say what could not be delivered."""
        started = time.monotonic()
        if self.sessions is not None:
            self.sessions.stop_all(final=True)
        self.pipeline.shutdown()
        dropped = self.pipeline.dropped()
        if dropped:
            where = state.append_undelivered(state.resolve(self.hello.state_dir), {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "application_pid": self.parent, "helper_pid": os.getpid(),
                "service": self.hello.resource.get("service.name"), "dropped": dropped,
                "by_reason": self.pipeline.dropped_by_reason(), "seconds": round(time.monotonic() - started, 1)})
            _log.warning("%d telemetry items could not be delivered within %.0f s after the application exited%s",
                         dropped, self.hello.exit_timeout, f" (recorded in {where})" if where else "")
        return 0

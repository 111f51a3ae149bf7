"""The application's side of the helper process (see :mod:`otel_blob.instrument.server`).

:class:`HelperClient` starts ``python -m otel_blob.helper`` at the first open of
an ``Rdict`` -- in a session of its own, holding none of the application's
terminal or pipes -- and tells it what it cannot see by itself (which databases
were opened, the trace context of the application's ``flush()`` /
``compact_range()`` calls) in :mod:`~otel_blob.instrument.protocol` messages.
It never waits for the helper: not at an open, not at ``close()``, not in a call
(what the pipe has no room for goes out through a writer thread), and at exit at most ``EXIT_FLUSH_S``
for messages still on their way -- normally none (the helper sees the
application's end when its pipe closes).

The helper reports how far each DB session was delivered (exported, not only
read). If it cannot start or dies, ``on_failure`` gets every session it had not
finished, with its last delivered position: the instrumentation follows them
in-process from there, so nothing is lost or delivered twice.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..source.identity import FileIdentity
from ..telemetry.ids import random_id
from . import protocol as p
from . import state

__all__ = ["HelperClient", "PendingSession"]

_log = logging.getLogger("otel_blob")

# Messages not yet taken by the helper beyond this: it has stopped reading (wedged); it is
# stopped and the application follows its databases itself. (A message is ~0.3 KiB.)
OUTBOX_MAX = 16 << 20
EXIT_FLUSH_S = 0.5  # at exit, the longest wait for messages still on their way to the helper
# The pipe to the helper holds this much (Linux's default is 64 KiB, ~200 messages): what is in
# the pipe reaches the helper even after the application exited.
PIPE_SIZE = 1 << 20

_AUTO_SITE = os.path.join("opentelemetry", "instrumentation", "auto_instrumentation")
# The directory our package is in: the helper must import it wherever the application found it.
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _jsonable(v: Any) -> bool:
    if isinstance(v, (str, bool, int, float)):
        return True
    return isinstance(v, (list, tuple)) and all(isinstance(x, (str, bool, int, float)) for x in v)


def _helper_env() -> dict[str, str]:
    env = dict(os.environ)
    # opentelemetry-instrument works through PYTHONPATH's sitecustomize: the helper
    # must not instrument (or configure the SDK for) itself.
    parts = [x for x in env.get("PYTHONPATH", "").split(os.pathsep) if x and _AUTO_SITE not in x]
    env["PYTHONPATH"] = os.pathsep.join([_PACKAGE_PARENT, *parts])
    env["OTEL_PYTHON_ROCKSDICT_ENABLED"] = "false"  # belt and braces
    return env


@dataclass
class PendingSession:
    """A DB session handed to the helper and not yet reported delivered to its end."""

    key: int
    db_path: str
    log_path: str
    anchor: FileIdentity | None
    position: dict[str, Any] | None = None  # the last delivered position the helper reported


class RemoteCall:
    """An application call (``flush()``/``compact_range()``) whose span the helper records.

    :attr:`context` is the call's span context, to make current during the call (the job
    spans RocksDB runs for it become its children); :meth:`done` ends it.
    """

    __slots__ = ("client", "op_id", "context")

    def __init__(self, client: HelperClient, op_id: int, context: Any) -> None:
        self.client = client
        self.op_id = op_id
        self.context = context

    def done(self, error: BaseException | None = None) -> None:
        text = None if error is None else f"{type(error).__name__}: {error}"
        self.client._send(p.ManualDone(self.op_id, time.time_ns() // 1000, text))


class HelperClient:
    """The application's handle on its helper process (one per process).

    ``on_failure(sessions)`` is called once, with the :class:`PendingSession` s the helper
    had not finished, if it cannot start, dies or stops reading -- from the writer or reader
    thread, or from the application's thread that found the helper wedged (never under a lock
    of this client).
    """

    def __init__(self, settings: Any, resource: dict[str, Any],
                 on_failure: Callable[[list[PendingSession]], None]) -> None:
        self.settings = settings
        self._on_failure = on_failure
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._sessions: dict[int, PendingSession] = {}
        self._seq = 0
        self._failed = False
        self._failover_done = False  # on_failure has run (its sessions are followed in-process)
        self.error: str | None = None
        self.state_dir = state.resolve(settings.state_dir)
        _report_earlier_losses(self.state_dir)
        log = state.open_log(self.state_dir)
        # Answers come on a pipe of their own. The helper gets none of the application's
        # descriptors (its stdout, stderr, terminal) and a session of its own: it may go on
        # delivering after the application exited, without holding up `app | tee` or a
        # terminal, and the terminal's Ctrl-C is not for it.
        r, w = os.pipe()
        # Messages go the other way on a pipe whose read end we keep open too (and never read):
        # a write can then never fail with EPIPE -- which would be a SIGPIPE, and an application
        # that restored SIGPIPE's default action (CLI tools do, for `| head`) would be killed
        # when its helper died. The helper's death is seen by the reader of the answers.
        self._out_keep, self._out_fd = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "otel_blob.helper", str(w), str(os.getpid())],
                stdin=self._out_keep, stdout=subprocess.DEVNULL, stderr=log or subprocess.DEVNULL,
                env=_helper_env(), close_fds=True, pass_fds=(w,), start_new_session=True,
            )
        except BaseException:
            for fd in (r, self._out_keep, self._out_fd):
                os.close(fd)
            raise
        finally:
            os.close(w)
            if log is not None:
                log.close()
        self._answers = os.fdopen(r, "rb")
        self._gone = False  # the helper process has ended (or was killed)
        try:
            fcntl.fcntl(self._out_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except (OSError, AttributeError):  # above /proc/sys/fs/pipe-max-size, or not Linux: the default
            pass
        os.set_blocking(self._out_fd, False)  # written to by os.write only (never the buffered file)
        # Messages go out through a thread of their own: the application never blocks on the
        # pipe (a helper at nice 19 on busy cores may not read for a while), and never while
        # holding a lock the reader of the answers needs.
        self._out: list[bytes] = []
        self._out_bytes = 0  # queued or being written
        self._out_changed = threading.Condition(threading.Lock())
        self._out_closing = False
        self._writer = threading.Thread(target=self._write, name="otel_blob-helper-writer", daemon=True)
        self._writer.start()
        self._reader = threading.Thread(target=self._read, name="otel_blob-helper-reader", daemon=True)
        self._reader.start()
        atexit.register(self._flush_at_exit)
        s = settings
        self._send(p.Hello(p.VERSION, {k: (list(v) if isinstance(v, tuple) else v)
                                       for k, v in resource.items() if _jsonable(v)},
                           s.severity, s.events, s.file_paths, s.poll_interval, s.helper_nice,
                           s.helper_exit_timeout, self.state_dir))

    @property
    def alive(self) -> bool:
        return not self._failed

    # -- what the instrumentor calls ---------------------------------------------------

    def watch(self, key: int, db_path: str, log_path: str, anchor: FileIdentity | None) -> bool:
        """Hand a DB session to the helper; False if it has failed (follow it in-process)."""
        with self._lock:
            if self._failed:
                return False
            self._sessions[key] = PendingSession(key, db_path, log_path, anchor)
        self._send(p.WatchDb(key, db_path, log_path, anchor.to_json() if anchor is not None else None))
        return True

    def call(self, name: str, db_path: str, kind: str, cf: str | None, attributes: dict[str, Any]) -> RemoteCall:
        """A call's span, recorded by the helper: its ids are chosen here, as a child of the
        application's current span (a new trace if there is none)."""
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

        parent = trace.get_current_span().get_span_context()
        span_id = random_id(64)
        if parent.is_valid:
            trace_id, flags = parent.trace_id, parent.trace_flags
        else:
            trace_id, flags = random_id(128), TraceFlags(TraceFlags.SAMPLED)
        with self._lock:
            self._seq += 1
            op_id = self._seq
        self._send(p.Manual(op_id, os.path.abspath(db_path), kind, f"{trace_id:032x}", f"{span_id:016x}",
                            int(flags), time.time_ns() // 1000, cf, name,
                            f"{parent.span_id:016x}" if parent.is_valid else None, parent.is_remote,
                            {k: v for k, v in attributes.items() if _jsonable(v)}))
        context = trace.set_span_in_context(NonRecordingSpan(SpanContext(trace_id, span_id, False, flags)))
        return RemoteCall(self, op_id, context)

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until every session handed over was delivered to its end (or the helper failed)."""
        with self._idle:
            return self._idle.wait_for(lambda: (not self._sessions and not self._failed) or self._failover_done,
                                       timeout)

    def detach(self) -> None:
        """Let the helper go (uninstrument): it delivers what it holds and exits. No waiting."""
        with self._lock:
            self._failed = True  # nothing to fall back to: the instrumentation is off
            self._failover_done = True
            self._sessions.clear()
            self._idle.notify_all()
        with self._out_changed:  # the writer sends what is queued, then closes the pipe
            self._out_closing = True
            self._out_changed.notify_all()

    def forget_after_fork(self) -> None:
        """In a forked child: let go of the parent's pipes (so the helper sees the parent's exit)."""
        self._failed = True
        # The parent's writer thread is not here (and may have held the lock at the fork).
        self._out_changed = threading.Condition(threading.Lock())
        self._out, self._out_bytes = [], 0
        atexit.unregister(self._flush_at_exit)
        for fd in (self._out_fd, self._out_keep, self._answers.fileno()):
            try:
                os.close(fd)
            except OSError:
                pass

    # -- the pipe ----------------------------------------------------------------------

    def _send(self, msg: p.Message) -> None:
        """Write ``msg`` to the pipe now if it has room (it nearly always has), else queue it for
        the writer thread: never blocks. Written now, a ``manual`` message is in the pipe before
        the flush it announces reaches RocksDB -- before the job's LOG lines exist."""
        if self._failed:
            return
        data = p.encode(msg)
        with self._out_changed:
            if not self._out_bytes:  # nothing queued or being written: the order is kept
                try:
                    n = os.write(self._out_fd, data)
                except BlockingIOError:
                    n = 0
                except OSError:
                    n = -1
                if n == len(data):
                    return
                if n >= 0:
                    data = data[n:]
            wedged = self._out_bytes > OUTBOX_MAX
            if not wedged:
                self._out.append(data)
                self._out_bytes += len(data)
                self._out_changed.notify_all()
        if wedged:
            try:
                self.proc.send_signal(signal.SIGKILL)  # or it would deliver what we now follow ourselves
            except OSError:
                pass
            self._fail(f"it has not read {OUTBOX_MAX >> 20} MiB of messages")

    def _write(self) -> None:
        """The writer thread: what did not fit in the pipe, as the helper makes room."""
        fd = self._out_fd
        writable = select.poll()
        writable.register(fd, select.POLLOUT)
        while True:
            with self._out_changed:
                while not self._out and not self._out_closing and not self._gone:
                    self._out_changed.wait()
                chunk = b"".join(self._out)
                self._out.clear()
                if not chunk and self._out_closing:
                    self._out_fd = -1  # (a message sent meanwhile goes nowhere, not to a reused number)
            if not chunk:
                if self._out_closing:  # everything sent: the helper sees the end of its input
                    for end in (fd, self._out_keep):  # (nothing writes any more: the read end may go)
                        try:
                            os.close(end)
                        except OSError:
                            pass
                return  # (or the helper is gone)
            view = memoryview(chunk)
            try:
                while view and not self._gone:  # (gone: its sessions are followed in-process)
                    try:
                        view = view[os.write(fd, view):]
                    except BlockingIOError:
                        # until the helper reads (poll: select() refuses a descriptor >= 1024)
                        writable.poll(500)
            except (OSError, ValueError):
                self._fail("its pipe is closed")
                return
            finally:
                with self._out_changed:
                    self._out_bytes -= len(chunk)
                    self._out_changed.notify_all()

    def _flush_at_exit(self) -> None:
        """Let the last messages (a session opened just before the exit) reach the pipe; bounded."""
        with self._out_changed:
            sent = self._out_changed.wait_for(lambda: self._out_bytes <= 0 or self._failed, EXIT_FLUSH_S)
            left = 0 if sent or self._failed else self._out_bytes
        if left:
            _log.warning("%d bytes of messages to the helper process were not sent before the exit (it was not "
                         "reading): the databases opened and calls they announce are not delivered", left)

    def _read(self) -> None:
        for raw in self._answers:
            try:
                msg = p.decode(raw)
            except p.ProtocolError:
                continue
            if isinstance(msg, p.Position):
                with self._idle:
                    pending = self._sessions.get(msg.key)
                    if pending is not None:
                        if msg.position.get("stopped"):
                            del self._sessions[msg.key]
                            self._idle.notify_all()
                        else:
                            pending.position = msg.position
            elif isinstance(msg, p.Log):
                _log.log(msg.level, "helper process: %s", msg.message)
            elif isinstance(msg, p.Error):  # (Ready needs nothing: messages queue in the pipe meanwhile)
                self.error = msg.error
        code = self.proc.wait()
        self._gone = True
        with self._out_changed:  # (a writer waiting for room stops)
            self._out_changed.notify_all()
        if not self._failed:  # (failed: it was let go, or had failed before)
            # Ended while the application runs (killed, or a SIGTERM of its own): what it had
            # not finished, and every database opened from now on, is followed in-process.
            self._fail(self.error or f"it exited with code {code}")

    def _fail(self, why: str) -> None:
        with self._idle:
            if self._failed:
                return
            self._failed = True
            pending = list(self._sessions.values())
            self._sessions.clear()
        _log.warning("the helper process cannot deliver (%s); following %d database session(s) in-process from "
                     "where it left off", why, len(pending))
        try:
            self._on_failure(pending)
        except Exception:
            _log.exception("falling back to in-process watching failed")
        finally:
            with self._idle:  # a waiter (wait_for_sessions) now finds the sessions in-process
                self._failover_done = True
                self._idle.notify_all()


def _report_earlier_losses(directory: str | None) -> None:
    """Say once what helpers of earlier runs could not deliver after their application exited."""
    records, path = state.take_undelivered(directory)
    if not records:
        return
    items = sum(int(r.get("dropped", 0)) for r in records if isinstance(r.get("dropped", 0), int))
    _log.warning("%d telemetry items of %d earlier run(s) could not be delivered after the application exited "
                 "(details: %s)", items, len(records), path)

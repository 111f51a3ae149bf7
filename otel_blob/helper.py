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

The application tells the helper, one JSON line per message on the helper's
stdin, what it cannot see by itself:

* ``watch`` / ``close`` -- a DB was opened / closed (``close`` is answered once
  the helper delivered everything that DB logged, so ``Rdict.close()`` keeps its
  promise; the application waits at most :data:`CLOSE_WAIT` seconds);
* ``manual`` / ``manual_done`` -- the trace context and the time window of an
  application ``flush()`` / ``compact_range()`` span, so the background job span
  the helper makes becomes its child, across the process boundary;
* end of file -- the application exited (or was killed): the helper drains every
  LOG to its end, exports, and exits. It never outlives that drain (retries
  included, ``shutdown_timeout``); the application waits at most
  :data:`EXIT_WAIT` seconds for it.

The helper answers on a pipe of its own: ``{"ready": true}`` or ``{"error": "..."}`` once,
then ``{"ack": seq}`` per ``close``. If it cannot start or dies, the application
logs it and falls back to watching in-process (thread mode).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any, Callable

__all__ = ["HelperClient", "serve"]

_log = logging.getLogger("otel_blob")

CLOSE_WAIT = 5.0  # seconds Rdict.close() waits for the helper's drain of that DB
EXIT_WAIT = 5.0  # seconds the application's exit waits for the helper's last export
HELPER_POLL = 0.002  # the helper's LOG poll interval: a poll (two stats) costs the application nothing

_AUTO_SITE = os.path.join("opentelemetry", "instrumentation", "auto_instrumentation")


def _jsonable(v: Any) -> bool:
    if isinstance(v, (str, bool, int, float)):
        return True
    return isinstance(v, (list, tuple)) and all(isinstance(x, (str, bool, int, float)) for x in v)


def _helper_env() -> dict[str, str]:
    env = dict(os.environ)
    # opentelemetry-instrument works through PYTHONPATH's sitecustomize: the helper
    # must not instrument (or configure the SDK for) itself.
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and _AUTO_SITE not in p]
    if parts:
        env["PYTHONPATH"] = os.pathsep.join(parts)
    else:
        env.pop("PYTHONPATH", None)
    # Our package must be importable by the helper wherever the application found it.
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([here] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["OTEL_PYTHON_ROCKSDICT_ENABLED"] = "false"  # belt and braces
    return env


# ---------------------------------------------------------------------------
# The application side
# ---------------------------------------------------------------------------


class _RemoteOp:
    """What ``TelemetryListener.manual_operation`` returns, for an op the helper matches."""

    __slots__ = ("client", "op_id")

    def __init__(self, client: HelperClient, op_id: int) -> None:
        self.client = client
        self.op_id = op_id

    def done(self) -> None:
        self.client._send({"op": "manual_done", "id": self.op_id, "end_us": time.time_ns() // 1000})


class HelperClient:
    """The application's handle on its helper process (one per process).

    ``on_failure(watched)`` is called (once, from a background thread) with the
    ``(db_path, log_path)`` pairs the helper was watching if it cannot start or
    dies: the instrumentation then watches them in-process.
    """

    def __init__(self, settings: Any, resource: dict[str, Any], on_failure: Callable[[list[tuple[str, str]]], None]) -> None:
        self.settings = settings
        self._on_failure = on_failure
        self._lock = threading.Lock()
        self._acks: dict[int, threading.Event] = {}
        self._seq = 0
        self._watched: dict[str, str] = {}  # log path -> db path
        self._failed = False
        self.error: str | None = None
        # Answers come on a pipe of their own: the helper's stdout and stderr stay the
        # application's (a console exporter prints where the application would).
        r, w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "otel_blob.helper", str(w)],
                stdin=subprocess.PIPE, env=_helper_env(), close_fds=True, pass_fds=(w,),
            )
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        self._answers = os.fdopen(r, "rb")
        self._reader = threading.Thread(target=self._read, name="otel_blob-helper-reader", daemon=True)
        self._reader.start()
        s = settings
        self._send({"op": "hello", "resource": {k: (list(v) if isinstance(v, tuple) else v)
                                                for k, v in resource.items() if _jsonable(v)},
                    "severity": s.severity, "events": s.events, "file_paths": s.file_paths,
                    "poll_interval": min(s.poll_interval, HELPER_POLL), "nice": s.helper_nice})

    @property
    def alive(self) -> bool:
        return not self._failed

    # -- what the instrumentor calls ---------------------------------------------------

    def watch(self, db_path: str, log_path: str) -> None:
        with self._lock:
            self._watched[log_path] = db_path
        self._send({"op": "watch", "db": db_path, "log": log_path})

    def close(self, log_path: str) -> None:
        with self._lock:
            self._watched.pop(log_path, None)
        self._request({"op": "close", "log": log_path}, CLOSE_WAIT)

    def manual_operation(self, db_path: str, kind: str, context: Any) -> _RemoteOp:
        from opentelemetry import trace

        sc = trace.get_current_span(context).get_span_context()
        with self._lock:
            self._seq += 1
            op_id = self._seq
        if sc.is_valid:
            self._send({"op": "manual", "id": op_id, "db": os.path.abspath(db_path), "kind": kind,
                        "trace_id": f"{sc.trace_id:032x}", "span_id": f"{sc.span_id:016x}",
                        "flags": int(sc.trace_flags), "start_us": time.time_ns() // 1000})
        return _RemoteOp(self, op_id)

    def shutdown(self, wait: float = EXIT_WAIT) -> None:
        """End of the application: the helper drains, exports and exits (waited for up to ``wait`` s)."""
        try:
            self.proc.stdin.close()  # type: ignore[union-attr]
        except Exception:
            pass
        try:
            self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            _log.info("otel_blob: the helper process %d is still exporting; it exits by itself", self.proc.pid)

    def forget_after_fork(self) -> None:
        """In a forked child: let go of the parent's pipes (so the helper sees the parent's exit)."""
        self._failed = True
        for f in (self.proc.stdin, self._answers):
            try:
                os.close(f.fileno())  # type: ignore[union-attr]
            except Exception:
                pass

    # -- the pipe ----------------------------------------------------------------------

    def _send(self, msg: dict[str, Any]) -> None:
        if self._failed:
            return
        data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
        try:
            with self._lock:
                self.proc.stdin.write(data)  # type: ignore[union-attr]
                self.proc.stdin.flush()  # type: ignore[union-attr]
        except (OSError, ValueError):
            self._fail("its pipe is closed")

    def _request(self, msg: dict[str, Any], wait: float) -> bool:
        with self._lock:
            self._seq += 1
            seq = self._seq
            done = self._acks[seq] = threading.Event()
        msg["seq"] = seq
        self._send(msg)
        ok = done.wait(wait) if not self._failed else False
        with self._lock:
            self._acks.pop(seq, None)
        return ok

    def _read(self) -> None:
        for raw in self._answers:
            msg = _parse(raw)
            if msg is None:
                continue
            if "ack" in msg:
                with self._lock:
                    ev = self._acks.get(msg["ack"])
                if ev is not None:
                    ev.set()
            elif "error" in msg:  # (a "ready" needs nothing: messages queue in the pipe meanwhile)
                self.error = str(msg["error"])
        code = self.proc.wait()
        if not self._failed and (code != 0 or self.error):
            self._fail(self.error or f"it exited with code {code}")
        for ev in list(self._acks.values()):
            ev.set()

    def _fail(self, why: str) -> None:
        with self._lock:
            if self._failed:
                return
            self._failed = True
            watched = [(db, log) for log, db in self._watched.items()]
            self._watched.clear()
            for ev in self._acks.values():
                ev.set()
        _log.warning("otel_blob: the helper process cannot export (%s); watching in-process instead", why)
        try:
            self._on_failure(watched)
        except Exception:
            _log.exception("otel_blob: falling back to in-process watching failed")


# ---------------------------------------------------------------------------
# The helper side
# ---------------------------------------------------------------------------


def serve(stdin: Any = None, stdout: Any = None) -> int:
    """The helper's main loop (``python -m otel_blob.helper``)."""
    from .layout import WatchError
    from .pipeline import Telemetry, UsageError
    from .watcher import WatchLoop, start_watch

    stdin = stdin or sys.stdin.buffer
    if stdout is None:
        stdout = os.fdopen(int(sys.argv[1]), "wb") if len(sys.argv) > 1 else sys.stdout.buffer
    out_lock = threading.Lock()

    def reply(msg: dict[str, Any]) -> None:
        with out_lock:
            try:
                stdout.write((json.dumps(msg) + "\n").encode())
                stdout.flush()
            except (OSError, ValueError):
                pass

    # The application's Ctrl-C is for the application: we stop when its pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    logging.basicConfig(level=logging.WARNING, format="otel_blob helper %(process)d: %(levelname)s %(message)s")

    first = stdin.readline()
    try:
        hello = json.loads(first)
        try:  # below the application: when both want the CPU, the application gets it
            os.nice(int(hello.get("nice", 19)))
        except OSError:
            pass
        args = SimpleNamespace(severity=hello.get("severity", "info"), events=hello.get("events", "blob"),
                               file_paths=hello.get("file_paths", "full"), otlp=None, console=False)
        telemetry = Telemetry(args, os.environ, default_exporter="otlp", resource_attributes=hello.get("resource"))
    except (ValueError, UsageError, ImportError) as exc:
        reply({"error": str(exc) or type(exc).__name__})
        return 2
    poll = float(hello.get("poll_interval") or HELPER_POLL)
    listener = telemetry.listener
    reply({"ready": True})
    if listener is None:  # every exporter is "none": nothing to do but answer
        for raw in stdin:
            msg = _parse(raw)
            if msg and "seq" in msg:
                reply({"ack": msg["seq"]})
        return 0

    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    loop = WatchLoop()
    watches: dict[str, Any] = {}
    ops: dict[int, Any] = {}

    def handle(msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "watch":
            log = msg["log"]
            w = watches.get(log)
            if w is not None and not w.stopped:
                return
            try:
                watches[log] = start_watch(msg["db"], log, listener, loop=loop, start="start", poll_interval=poll)
            except WatchError as exc:
                _log.warning("%s", exc)
        elif op == "close":
            w = watches.pop(msg["log"], None)
            if w is not None:
                w.stop()
            telemetry.flush(int(CLOSE_WAIT * 1000))
            reply({"ack": msg["seq"]})
        elif op == "manual":
            sc = SpanContext(int(msg["trace_id"], 16), int(msg["span_id"], 16), is_remote=True,
                             trace_flags=TraceFlags(int(msg.get("flags", 1))))
            ctx = trace.set_span_in_context(NonRecordingSpan(sc))
            m = listener.manual_operation(msg["db"], msg["kind"], ctx)
            m.start_us = int(msg["start_us"])
            ops[msg["id"]] = m
            while len(ops) > 4096:
                ops.pop(next(iter(ops)))
        elif op == "manual_done":
            m = ops.pop(msg["id"], None)
            if m is not None:
                m.end_us = int(msg["end_us"])
        elif "seq" in msg:
            reply({"ack": msg["seq"]})

    def read() -> None:
        for raw in stdin:
            msg = _parse(raw)
            if msg is None:
                continue
            try:
                handle(msg)
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
    telemetry.shutdown()
    lost = telemetry.dropped()
    if lost:
        _log.warning("%d telemetry items could not be exported", lost)
    return 0


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        msg = json.loads(raw)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) else None


if __name__ == "__main__":
    sys.exit(serve())

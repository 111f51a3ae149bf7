"""The application's side of the helper process (see :mod:`otel_blob.instrument.server`).

:class:`HelperClient` starts ``python -m otel_blob.helper`` at the first open of
an ``Rdict``, tells it what it cannot see by itself (which databases were
opened and closed, the trace context of the application's ``flush()`` /
``compact_range()`` calls) in :mod:`~otel_blob.instrument.protocol` messages,
and falls back to in-process watching if the helper cannot start or dies.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from typing import Any, Callable

from . import protocol as p

__all__ = ["HelperClient"]

_log = logging.getLogger("otel_blob")

CLOSE_WAIT = 5.0  # seconds Rdict.close() waits for the helper's drain of that DB
EXIT_WAIT = 5.0  # seconds the application's exit waits for the helper's last export

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


class _RemoteOp:
    """What ``TelemetryListener.manual_operation`` returns, for an op the helper matches."""

    __slots__ = ("client", "op_id")

    def __init__(self, client: HelperClient, op_id: int) -> None:
        self.client = client
        self.op_id = op_id

    def done(self) -> None:
        self.client._send(p.ManualDone(self.op_id, time.time_ns() // 1000))


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
        self._send(p.Hello(p.VERSION, {k: (list(v) if isinstance(v, tuple) else v)
                                       for k, v in resource.items() if _jsonable(v)},
                           s.severity, s.events, s.file_paths, s.poll_interval, s.helper_nice))

    @property
    def alive(self) -> bool:
        return not self._failed

    # -- what the instrumentor calls ---------------------------------------------------

    def watch(self, db_path: str, log_path: str) -> None:
        with self._lock:
            self._watched[log_path] = db_path
        self._send(p.WatchDb(db_path, log_path))

    def close(self, log_path: str) -> None:
        with self._lock:
            self._watched.pop(log_path, None)
            self._seq += 1
            seq = self._seq
            done = self._acks[seq] = threading.Event()
        self._send(p.Close(log_path, seq))
        if not self._failed:
            done.wait(CLOSE_WAIT)
        with self._lock:
            self._acks.pop(seq, None)

    def manual_operation(self, db_path: str, kind: str, context: Any) -> _RemoteOp:
        from opentelemetry import trace

        sc = trace.get_current_span(context).get_span_context()
        with self._lock:
            self._seq += 1
            op_id = self._seq
        if sc.is_valid:
            self._send(p.Manual(op_id, os.path.abspath(db_path), kind, f"{sc.trace_id:032x}", f"{sc.span_id:016x}",
                                int(sc.trace_flags), time.time_ns() // 1000))
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
            _log.info("the helper process %d is still exporting; it exits by itself", self.proc.pid)

    def forget_after_fork(self) -> None:
        """In a forked child: let go of the parent's pipes (so the helper sees the parent's exit)."""
        self._failed = True
        for f in (self.proc.stdin, self._answers):
            try:
                os.close(f.fileno())  # type: ignore[union-attr]
            except Exception:
                pass

    # -- the pipe ----------------------------------------------------------------------

    def _send(self, msg: p.Message) -> None:
        if self._failed:
            return
        data = p.encode(msg)
        try:
            with self._lock:
                self.proc.stdin.write(data)  # type: ignore[union-attr]
                self.proc.stdin.flush()  # type: ignore[union-attr]
        except (OSError, ValueError):
            self._fail("its pipe is closed")

    def _read(self) -> None:
        for raw in self._answers:
            try:
                msg = p.decode(raw)
            except p.ProtocolError:
                continue
            if isinstance(msg, p.Ack):
                with self._lock:
                    ev = self._acks.get(msg.seq)
                if ev is not None:
                    ev.set()
            elif isinstance(msg, p.Error):  # (Ready needs nothing: messages queue in the pipe meanwhile)
                self.error = msg.error
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
        _log.warning("the helper process cannot export (%s); watching in-process instead", why)
        try:
            self._on_failure(watched)
        except Exception:
            _log.exception("falling back to in-process watching failed")

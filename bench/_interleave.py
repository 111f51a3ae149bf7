"""Long-lived worker subprocesses (bench/_worker.py) driven in turns, with timeouts and cleanup.

``Worker`` starts one ``python -m bench._worker`` (plain or under
``opentelemetry-instrument``) in its own session, talks JSON lines to it (stdin /
a dedicated reply pipe) and, whatever happens, ends it and everything it
started (its process group) in ``close()``. Its stdout/stderr go to a log file
whose tail is shown when it fails.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
OTEL_INSTRUMENT = os.path.join(BIN, "opentelemetry-instrument")


def default_dir() -> str | None:
    """A tmpfs for the benchmark DBs (/dev/shm), so fsync latency does not bound the writes; else the temp dir."""
    d = "/dev/shm"
    return d if os.path.isdir(d) and os.access(d, os.W_OK) else None


class WorkerError(RuntimeError):
    pass


def otel_env(endpoint: str | None, service: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker: ours without any OTEL_* of the caller, plus an
    OTLP/gRPC export to ``endpoint`` (None: no OpenTelemetry settings at all)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONUNBUFFERED"] = "1"
    if endpoint is not None:
        env.update({
            "OTEL_SERVICE_NAME": service,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_LOGS_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
        })
    env.update(extra or {})
    return env


def worker_argv(instrumented: bool, args: list[str]) -> list[str]:
    py = [sys.executable, "-m", "bench._worker", *args]
    return [OTEL_INSTRUMENT, *py] if instrumented else py


class Worker:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: str) -> None:
        self.name = name
        self.log_path = log_path
        self.ready: dict[str, Any] | None = None
        r, w = os.pipe()
        self._log = open(log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [*argv, "--reply-fd", str(w)], stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT,
                env=env, cwd=REPO, pass_fds=(w,), start_new_session=True,
            )
        except BaseException:
            os.close(r)
            os.close(w)
            self._log.close()
            raise
        os.close(w)
        self._r = r
        self._buf = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, n: int = 3000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def read(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerError(f"worker {self.name}: no reply within {timeout:.0f} s\n{self.tail()}")
            ready, _, _ = select.select([self._r], [], [], left)
            if ready:
                chunk = os.read(self._r, 65536)
                if not chunk:
                    self.proc.wait(timeout=5)
                    raise WorkerError(f"worker {self.name} exited ({self.proc.returncode})\n{self.tail()}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg = json.loads(line)
        if "error" in msg:
            raise WorkerError(f"worker {self.name}: {msg['error']}")
        return msg

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise WorkerError(f"worker {self.name} is gone\n{self.tail()}") from None

    def request(self, cmd: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        self.send(cmd)
        return self.read(timeout)

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        self.ready = self.read(timeout)
        return self.ready

    def quit(self, timeout: float = 60.0) -> dict[str, Any] | None:
        """Close the DB, let the process exit normally (atexit: drain, SDK shutdown); None if it failed."""
        if self.proc.poll() is not None:
            return None
        try:
            msg = self.request({"cmd": "quit"}, timeout)
        except WorkerError:
            return None
        try:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, OSError):
            pass
        return msg

    def close(self) -> None:
        """End the worker and its process group (helpers included) if still running; release fds."""
        try:
            if self.proc.stdin and not self.proc.stdin.closed:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=2 if self.proc.poll() is None else 0)  # quit() already waited for a normal exit
        except subprocess.TimeoutExpired:
            pass
        # Our worker's own session: whatever it started (a helper) is in this group.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.2)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for fd_close in (lambda: os.close(self._r), self._log.close):
            try:
                fd_close()
            except OSError:
                pass


class LogCounter:
    """Counts blob file events in a DB's LOG incrementally (the driver's independent count)."""

    CREATED = b'"event": "blob_file_creation"'
    DELETED = b'"event": "blob_file_deletion"'

    def __init__(self, log_path: str) -> None:
        self.fd = os.open(log_path, os.O_RDONLY)
        self.tail = b""
        self.created = 0
        self.deleted = 0

    def read(self) -> int:
        """Read what was appended; returns the number of new blob events in complete lines."""
        data = self.tail
        while True:
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                break
            data += chunk
        cut = data.rfind(b"\n") + 1
        done, self.tail = data[:cut], data[cut:]
        c, d = done.count(self.CREATED), done.count(self.DELETED)
        self.created += c
        self.deleted += d
        return c + d

    @property
    def events(self) -> int:
        return self.created + self.deleted

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass

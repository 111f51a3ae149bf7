"""Issue #13: the helper process of ``opentelemetry-instrument`` never holds up the application.

The real ``opentelemetry-instrument`` command runs a small rocksdict app in a subprocess
whose stdout and stderr are pipes, exporting to the tests' OTLP receiver. The helper
(process mode, the default under ``opentelemetry-instrument``) must:

* leave the application's pipes alone: they reach EOF when the application exits, while the
  helper -- in a session of its own, its stdout on /dev/null, its stderr in
  ``<state dir>/helper.log`` -- still retries a Collector that refuses;
* end within ``OTEL_PYTHON_ROCKSDICT_HELPER_EXIT_TIMEOUT`` and record what it could not
  deliver in ``<state dir>/undelivered.jsonl`` and its log; the next instrumented run says
  so once (a WARNING on the ``otel_blob`` logger) and renames the file ``.reported``;
* not receive the terminal's Ctrl-C (SIGINT to the application's process group), and deliver
  the application's events after the application died of it.

The apps call no ``Rdict.flush()``: RocksDB flushes by itself (a small write buffer), so the
application's own SDK holds no span of ours and its exit is the application's alone.
Synchronisation is on the processes' output, the receiver and pidfds, never on sleeps; there
is no timed assertion (the numbers are in bench/close_exit.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest

from dbutil import blob_event_lines
from faults import HELPER_PID_TRAILER, helper_pid, log_scan, wait_for_exit

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
EXIT_TIMEOUT = 3  # s: OTEL_PYTHON_ROCKSDICT_HELPER_EXIT_TIMEOUT, small so the tests are quick
BLOB_EVENTS = ("rocksdb.blob_file.created", "rocksdb.blob_file.deleted")

APP = textwrap.dedent(
    """
    import logging, os, sys
    sys.path.insert(0, os.environ["APP_TESTS"])
    if os.environ.get("APP_LOGGING"):  # an application that configures logging sees our warnings
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    import rocksdict
    from dbutil import blob_options, quiesce, write_round
    opts = blob_options()
    opts.set_write_buffer_size(64 << 10)  # RocksDB flushes by itself (no flush() call, no span of ours)
    db = rocksdict.Rdict(os.environ["APP_DB"], opts)
    for _ in range(int(os.environ.get("APP_ROUNDS", "4"))):
        write_round(db)
    quiesce(db)
    if os.environ.get("APP_WAIT"):  # stay until the terminal's Ctrl-C
        from otel_blob import RocksdictInstrumentor
        print("helper pid:", RocksdictInstrumentor().helper_pid, flush=True)
        print("ready", flush=True)
        sys.stdin.read()
    db.close()
    print("app done", flush=True)
    """
)


def start_app(tmp_path, receiver, stdin: int = subprocess.DEVNULL, app: str = APP, **extra: str) -> subprocess.Popen:
    script = tmp_path / "app.py"
    script.write_text(app + HELPER_PID_TRAILER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({
        "OTEL_SERVICE_NAME": "lifecycle-app",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_PYTHON_ROCKSDICT_STATE_DIR": str(tmp_path / "state"),
        "OTEL_PYTHON_ROCKSDICT_HELPER_EXIT_TIMEOUT": str(EXIT_TIMEOUT),
        "APP_TESTS": HERE,
        "APP_DB": str(tmp_path / "db"),
        **extra,
    })
    # A session of its own: the test can signal its process group as a terminal would.
    return subprocess.Popen([os.path.join(BIN, "opentelemetry-instrument"), sys.executable, str(script)],
                            env=env, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def communicate(p: subprocess.Popen, timeout: float = 60) -> tuple[str, str]:
    """Both pipes to EOF and the app's exit."""
    try:
        return p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(f"the instrumented app or its pipes hung (> {timeout} s): {err[-3000:]}")


def alive(pid: int) -> bool:
    return not wait_for_exit(pid, 0)


def session_and_group(pid: int) -> tuple[int, int]:
    return os.getsid(pid), os.getpgid(pid)


def blob_records(receiver) -> list[dict]:
    return [r for r in receiver.log_records() if r["event_name"] in BLOB_EVENTS]


def test_helper_detaches_retries_within_its_bound_and_the_next_run_reports_the_loss(tmp_path, otlp_receiver):
    state = tmp_path / "state"
    otlp_receiver.set_available(False, retry_after=0.2)  # the Collector refuses (UNAVAILABLE)

    # 1. The app exits; its pipes reach EOF while its helper is still running and retrying.
    p = start_app(tmp_path, otlp_receiver)
    out, err = communicate(p)
    pid = helper_pid(out)
    assert p.returncode == 0 and "app done" in out and pid, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert alive(pid), "the helper was gone before the app's pipes closed: nothing shows they were not its"
    fds = {n: os.readlink(f"/proc/{pid}/fd/{n}") for n in (1, 2)}
    assert fds == {1: "/dev/null", 2: str(state / "helper.log")}, fds
    assert session_and_group(pid) == (pid, pid), "the helper is not in a session of its own"
    refused = otlp_receiver.rejected
    assert otlp_receiver.wait_for(lambda r: r.rejected > refused, 20), "the helper did not retry after the app exited"

    # 2. It ends within its bound and records what it could not deliver.
    assert wait_for_exit(pid, EXIT_TIMEOUT + 30), "the helper outlived its bound"
    lines = (state / "undelivered.jsonl").read_text().splitlines()
    assert len(lines) == 1, lines
    rec = json.loads(lines[0])
    assert rec["helper_pid"] == pid and rec["application_pid"] == p.pid and rec["service"] == "lifecycle-app"
    assert rec["dropped"] == sum(rec["by_reason"].values()) > 0
    assert rec["by_reason"]["logs shutdown"] == blob_event_lines(str(tmp_path / "db")), rec
    log = (state / "helper.log").read_text()
    said = (f"otel_blob helper {pid} (application {p.pid}): WARNING {rec['dropped']} telemetry items could not be "
            f"delivered within {EXIT_TIMEOUT} s after the application exited (recorded in {state}/undelivered.jsonl)")
    assert said in log, log[-3000:]
    assert not blob_records(otlp_receiver)

    # 3. The next instrumented run says so, once, on the `otel_blob` logger, and renames the file.
    otlp_receiver.set_available(True)
    q = start_app(tmp_path, otlp_receiver, APP_LOGGING="1", APP_ROUNDS="1")
    out2, err2 = communicate(q)
    assert q.returncode == 0 and "app done" in out2, err2[-3000:]
    reports = [line for line in err2.splitlines() if "earlier run" in line]
    assert reports == [f"WARNING otel_blob: {rec['dropped']} telemetry items of 1 earlier run(s) could not be "
                       f"delivered after the application exited (details: {state}/undelivered.jsonl.reported)"], err2
    assert wait_for_exit(helper_pid(out2), EXIT_TIMEOUT + 30)
    assert not (state / "undelivered.jsonl").exists(), "the second run lost nothing: nothing new to report"
    assert json.loads((state / "undelivered.jsonl.reported").read_text()) == rec
    assert blob_records(otlp_receiver), "the second run's helper delivered"


def test_ctrl_c_to_the_apps_process_group_does_not_reach_the_helper(tmp_path, otlp_receiver):
    """SIGINT to the application's process group, as a terminal sends it: the app dies of
    KeyboardInterrupt with its database open; the helper, in a session of its own, goes on and
    delivers every blob file event the LOG holds (the interpreter's teardown closes the DB)."""
    p = start_app(tmp_path, otlp_receiver, stdin=subprocess.PIPE, APP_WAIT="1", APP_ROUNDS="3")
    try:
        pid = int(re.match(r"helper pid: (\d+)$", p.stdout.readline().strip()).group(1))
        assert p.stdout.readline().strip() == "ready"
        assert os.getpgid(p.pid) == p.pid  # the app leads its group: a terminal's Ctrl-C goes to it
        assert session_and_group(pid) == (pid, pid) and os.getpgid(pid) != p.pid
        os.killpg(p.pid, signal.SIGINT)
        out, err = communicate(p)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode != 0 and "KeyboardInterrupt" in err, (p.returncode, err[-3000:])
    assert "app done" not in out
    assert wait_for_exit(pid, EXIT_TIMEOUT + 30), "the helper did not finish after the app died"
    db = str(tmp_path / "db")
    expected = log_scan(db)
    assert expected, "the app made no blob file events: the test proves nothing"
    got = {("created" if r["event_name"].endswith("created") else "deleted", db,
            r["attributes"]["rocksdb.blob_file.number"])
           for r in blob_records(otlp_receiver) if r["attributes"].get("rocksdb.status", "OK") == "OK"}
    assert got == set(expected), (sorted(set(expected) - got), sorted(got - set(expected)))
    assert not (tmp_path / "state" / "undelivered.jsonl").exists()


STALLED_HELPER_APP = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, os.environ["APP_TESTS"])
    import rocksdict
    from dbutil import blob_options, write_round
    from otel_blob import RocksdictInstrumentor
    if os.environ.get("APP_MANY_FDS"):   # a server with many sockets: our pipes get numbers >= 1024
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
        held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    db = rocksdict.Rdict(os.environ["APP_DB"], blob_options())
    helper = RocksdictInstrumentor().helper_pid
    os.kill(helper, signal.SIGSTOP)   # a helper that reads nothing for a while (starved, stopped)
    for i in range(3000):             # two messages each (the call and its end): ~1.2 MB, the pipe holds 1 MiB
        db.flush()
    write_round(db)
    db.flush()
    print("calls done while the helper was stopped", flush=True)
    os.kill(helper, signal.SIGCONT)
    db.close()
    assert RocksdictInstrumentor().wait_for_sessions(60)   # an orderly exit: the helper has caught up
    print("app done", flush=True)
    """
)


@pytest.mark.parametrize("many_fds", [False, True], ids=["few_fds", "fds_over_1024"])
def test_a_helper_that_does_not_read_never_blocks_the_application(tmp_path, otlp_receiver, many_fds):
    """The application's messages to the helper go through a writer thread of its own: with the
    helper stopped, 3,000 flush() calls (1.2 MB of messages, more than the pipe holds) return as
    without it -- before, the application blocked in its flush() once the pipe was full (here:
    forever, the helper is resumed only after the calls). Resumed, the helper gets every message,
    in order: every call's span, and the job spans under the last call. With 1,100 descriptors
    open before the DB (the pipe's number over 1024) the same: select() refused such a number,
    and the full pipe was taken for a dead helper."""
    # (The helper's bound after the app's exit as by default: 3,000 messages to catch up on.)
    p = start_app(tmp_path, otlp_receiver, app=STALLED_HELPER_APP, OTEL_PYTHON_ROCKSDICT_HELPER_EXIT_TIMEOUT="30",
                  **({"APP_MANY_FDS": "1"} if many_fds else {}))
    out, err = communicate(p, timeout=120)
    assert p.returncode == 0 and "calls done while the helper was stopped" in out and "app done" in out, err[-3000:]
    assert "cannot deliver" not in err, err[-3000:]
    assert wait_for_exit(helper_pid(out), 60)
    calls = [s for s in otlp_receiver.spans() if s["name"] == "rocksdict.flush"]
    assert len(calls) == 3001, len(calls)
    jobs = [s for s in otlp_receiver.spans() if s["name"] == "rocksdb.flush"]
    assert jobs and {s["parent_span_id"] for s in jobs} <= {s["span_id"] for s in calls}
    assert blob_records(otlp_receiver)


@pytest.mark.parametrize("mode", ["auto", "thread"])
def test_sdk_disabled_instruments_nothing(tmp_path, otlp_receiver, mode):
    """OTEL_SDK_DISABLED=true switches every signal of the SDK off: the instrumentation then
    patches nothing, starts no helper and follows no LOG (before: a helper started, followed
    the LOG, exported nothing and wrote a false warning about the exporter to its log)."""
    app = APP + "print('wrapped:', hasattr(rocksdict.Rdict.flush, '__wrapped__'), flush=True)\n"
    p = start_app(tmp_path, otlp_receiver, app=app, OTEL_SDK_DISABLED="true", OTEL_PYTHON_ROCKSDICT_MODE=mode,
                  APP_LOGGING="1")
    out, err = communicate(p)
    assert p.returncode == 0 and "app done" in out, err[-3000:]
    assert "helper pid: None" in out and "wrapped: False" in out, out
    assert "otel_blob" not in err, err[-3000:]
    assert not (tmp_path / "state").exists()  # no helper, no helper.log
    assert otlp_receiver.received == []


SIGPIPE_DEFAULT_APP = textwrap.dedent(
    """
    import os, signal, sys, threading
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # as CLI tools do, so that `| head` ends them quietly
    from otel_blob.settings import Settings
    from otel_blob.instrument import protocol as p
    from otel_blob.instrument.client import HelperClient
    failed = threading.Event()
    client = HelperClient(Settings.resolve({}), {}, lambda pending: failed.set())
    pid = client.proc.pid
    with client._lock:   # the reader of the answers cannot finish taking note of the helper's death
        os.kill(pid, signal.SIGKILL)
        try:
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)   # dead: its end of the pipe is closed
        except ChildProcessError:
            pass   # dead and reaped already
        for key in range(1, 5001):   # the messages of databases opened meanwhile (> the pipe's 1 MiB)
            client._send(p.WatchDb(key, "/nonexistent/db", "/nonexistent/db/LOG", None))
        print("the application is still here", flush=True)
    assert failed.wait(30)
    print("fallback", flush=True)
    """
)


def test_the_helper_dying_never_kills_an_application_with_default_sigpipe(tmp_path):
    """An application that restored SIGPIPE's default action (Python ignores it; CLI tools put the
    default back) was killed by its next message to a helper that had died: the pipe's last
    reader was gone, the write raised SIGPIPE (3 of 6 runs of a real app, before). The client
    keeps a read end of that pipe itself: a write never meets EPIPE, the death is seen by the
    reader of the answers and the sessions are followed in-process. Deterministic here: the
    test holds the client's lock, so the messages are written after the death and before the
    client has taken note of it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_PYTHON_ROCKSDICT_STATE_DIR"] = str(tmp_path / "state")
    p = subprocess.run([sys.executable, "-c", SIGPIPE_DEFAULT_APP], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, (p.returncode, p.stderr[-3000:])
    assert p.stdout.split() == ["the", "application", "is", "still", "here", "fallback"], p.stdout
    assert "the helper process cannot deliver (it exited with code -9)" in p.stderr, p.stderr[-3000:]

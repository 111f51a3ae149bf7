"""Issue #13: every failure of ``otel-blob watch|replay`` is loud and true.

Each case runs the real command in a subprocess (real rocksdict databases, the real
OTLP exporters, the tests' OTLP receiver) and asserts its exit status, the exact line
it says on stderr and that no traceback is printed. Exit statuses
(otel_blob/cli/errors.py): 0 every event delivered, 1 a runtime failure, 2 bad usage,
3 ran to its end but telemetry was lost.

File modes do not apply to root, and tests run as root here and in CI: the cases with
an unreadable file run the CLI's ``main()`` in a Python subprocess that imports what it
needs and then drops to user ``nobody`` (as tests/test_hostile_input.py does), so the
venv need not be readable by that user.

Synchronisation is on what the processes say and on what the receiver got, never on sleeps.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from typing import Any

import pytest
import rocksdict

import otel_blob
from dbutil import blob_event_lines, blob_options, churn_and_close, quiesce, write_round
from faults import log_scan

OTEL_BLOB = os.path.join(os.path.dirname(sys.executable), "otel-blob")
BLOB_EVENTS = ("rocksdb.blob_file.created", "rocksdb.blob_file.deleted")
NOBODY = 65534
DOUBLE_PREFIX = "otel-blob: otel_blob:"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CI_OTEL"))}
    env.update(extra)
    return env


def assert_clean(stderr: str) -> None:
    """No traceback and no doubled prefix, whatever the case."""
    assert "Traceback" not in stderr, stderr
    assert DOUBLE_PREFIX not in stderr, stderr


def one_line(p: subprocess.CompletedProcess) -> str:
    """The only line on stderr (and no traceback)."""
    assert_clean(p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([OTEL_BLOB, *args], capture_output=True, text=True, env=env or clean_env(),
                          timeout=timeout)


@pytest.fixture(scope="module")
def shared_dir():
    """A directory user ``nobody`` can enter (pytest's base temp is private to its user)."""
    d = tempfile.mkdtemp(prefix="otel-blob-cli-failures-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def make_db(path: str, rounds: int = 3) -> str:
    """A closed blob DB whose LOG has creations and deletions (flushes, then a compaction)."""
    churn_and_close(rocksdict.Rdict(path, blob_options()), rounds)
    os.chmod(path, 0o755)
    for name in os.listdir(path):
        os.chmod(os.path.join(path, name), 0o644)
    return path


@pytest.fixture(scope="module")
def blob_db(shared_dir):
    """A finished DB with blob file events in its LOG (read-only for the tests)."""
    path = make_db(os.path.join(shared_dir, "db"))
    assert blob_event_lines(path) > 0 and any(k[0] == "deleted" for k in log_scan(path))
    return path


@pytest.fixture
def closed_port():
    """An endpoint that refuses connections: a port bound (so nobody else takes it) but not listening."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()


class Proc:
    """A running ``otel-blob``; stdout and stderr collected by threads, waited on by pattern."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: dict[str, list[str]] = {"out": [], "err": []}
        self.eof = {"out": False, "err": False}
        self._cond = threading.Condition()
        self._threads = [threading.Thread(target=self._read, args=(name, stream), daemon=True)
                         for name, stream in (("out", self.proc.stdout), ("err", self.proc.stderr))]
        for t in self._threads:
            t.start()

    def _read(self, name: str, stream: Any) -> None:
        for line in stream:
            with self._cond:
                self.lines[name].append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.eof[name] = True
            self._cond.notify_all()

    def wait_for(self, stream: str, pattern: str, count: int = 1, timeout: float = 20) -> list[str]:
        rx = re.compile(pattern)

        def hits() -> list[str]:
            return [line for line in self.lines[stream] if rx.search(line)]

        with self._cond:
            self._cond.wait_for(lambda: len(hits()) >= count or self.eof[stream], timeout)
            found = hits()
        assert len(found) >= count, f"never said {pattern!r} ({count}x) on std{stream}: {self.stderr}"
        return found

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        return self.finish(timeout)

    def finish(self, timeout: float = 30) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"otel-blob did not exit within {timeout} s: {self.stderr}")
        for t in self._threads:
            t.join(10)
        return rc

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines["err"])

    @property
    def stdout(self) -> str:
        return "\n".join(self.lines["out"])


def watch(*args: str, env: dict[str, str] | None = None) -> Proc:
    return Proc([OTEL_BLOB, "watch", *args], env or clean_env())


# ---------------------------------------------------------------------------
# As a user file modes apply to
# ---------------------------------------------------------------------------

# The CLI's own main() (what the console script calls), in a process that drops root
# once everything it will need is imported.
AS_USER = textwrap.dedent(
    """
    import os, sys
    uid = int(sys.argv.pop(1))
    import otel_blob.cli.main, otel_blob.cli.replay_command, otel_blob.cli.watch_command
    import otel_blob.export.pipeline, otel_blob.watching.loop, otel_blob.source.notify
    import opentelemetry.sdk._logs, opentelemetry.sdk._logs.export, opentelemetry.sdk.metrics
    import opentelemetry.sdk.metrics.export, opentelemetry.sdk.trace, opentelemetry.sdk.trace.export
    from opentelemetry.sdk.resources import Resource
    Resource.create()  # (whatever it loads, loaded while the venv is certainly readable)
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    sys.exit(sys.modules["otel_blob.cli.main"].main(sys.argv[1:]))
    """
)


def as_user_argv(*args: str) -> list[str]:
    uid = NOBODY if os.geteuid() == 0 else os.geteuid()
    return [sys.executable, "-c", AS_USER, str(uid), *args]


def run_as_user(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(as_user_argv(*args), capture_output=True, text=True, env=clean_env(), timeout=timeout)


def unreadable(path: str) -> None:
    """Mode 0 on ``path``; skips where the user the CLI runs as would read it anyway."""
    os.chmod(path, 0)
    if os.geteuid() != 0 and os.access(path, os.R_OK):
        pytest.skip("this user reads files whatever their mode")


def copy_db(src: str, dst: str) -> str:
    shutil.copytree(src, dst)
    os.chmod(dst, 0o755)
    return dst


# ---------------------------------------------------------------------------
# Telemetry lost: exit 3, one line saying what; "every event delivered" only when true
# ---------------------------------------------------------------------------

LOST_RE = re.compile(r"^otel-blob: (?:stopped by SIGTERM; )?(\d+) telemetry items could not be delivered "
                     r"\(logs shutdown (\d+), traces shutdown (\d+)\) \(exit status 3\)$")


def test_replay_to_a_refused_endpoint_exits_3_saying_what_was_lost(blob_db, closed_port):
    """Was: ran 83 s, printed `dropped 490 logs (shutdown)` and exited 0."""
    p = run("replay", "--otlp", closed_port, "--shutdown-timeout", "0.5", "--progress", "never", blob_db)
    assert p.returncode == 3, p.stderr
    assert_clean(p.stderr)
    lines = p.stderr.strip().splitlines()
    assert lines[0] == f"otel-blob: exporting traces and logs and metrics: OTLP/gRPC to {closed_port}"
    m = LOST_RE.match(lines[-1])
    assert m, lines[-1]
    total, logs, traces = map(int, m.groups())
    assert logs == blob_event_lines(blob_db), "every blob file record is counted as lost"
    assert traces > 0 and total == logs + traces
    assert "every event delivered" not in p.stderr


def test_replay_delivers_exits_0_when_the_collector_is_up(blob_db, otlp_receiver):
    p = run("replay", "--otlp", otlp_receiver.grpc_endpoint, blob_db)
    assert p.returncode == 0, p.stderr
    assert one_line(p) == f"otel-blob: exporting traces and logs and metrics: OTLP/gRPC to {otlp_receiver.grpc_endpoint}"
    records = [r for r in otlp_receiver.log_records() if r["event_name"] in BLOB_EVENTS]
    assert len(records) == blob_event_lines(blob_db)


def test_watch_stopped_while_the_collector_is_down_exits_3_and_does_not_claim_delivery(blob_db, closed_port):
    """Was: `every event delivered and flushed` printed right after the drop lines, exit 0."""
    w = watch(blob_db, "--from-start", "--otlp", closed_port, "--shutdown-timeout", "0.5")
    w.wait_for("err", r"^otel-blob: exporting traces and logs and metrics: OTLP/gRPC to ")
    rc = w.stop(signal.SIGTERM)
    assert rc == 3, w.stderr
    assert_clean(w.stderr)
    m = LOST_RE.match(w.lines["err"][-1])
    assert m and w.lines["err"][-1].startswith("otel-blob: stopped by SIGTERM; "), w.stderr
    assert int(m.group(2)) == blob_event_lines(blob_db)
    assert "every event delivered" not in w.stderr


def test_watch_stopped_with_the_collector_up_says_every_event_delivered_exits_0(blob_db, otlp_receiver):
    expected = blob_event_lines(blob_db)
    w = watch(blob_db, "--from-start", "--otlp", otlp_receiver.grpc_endpoint)
    assert otlp_receiver.wait_for(
        lambda r: len([x for x in r.log_records() if x["event_name"] in BLOB_EVENTS]) >= expected, 30)
    rc = w.stop(signal.SIGTERM)
    assert rc == 0, w.stderr
    assert_clean(w.stderr)
    assert w.lines["err"][-1] == "otel-blob: stopped by SIGTERM; every event delivered and flushed", w.stderr
    assert len([x for x in otlp_receiver.log_records() if x["event_name"] in BLOB_EVENTS]) == expected


# ---------------------------------------------------------------------------
# User errors: one line, no traceback
# ---------------------------------------------------------------------------


def test_replay_of_an_unreadable_directory_is_one_line_exit_1(blob_db, shared_dir):
    """Was: a PermissionError traceback."""
    d = copy_db(blob_db, os.path.join(shared_dir, "unreadable-dir"))
    unreadable(d)
    try:
        p = run_as_user("replay", d)
    finally:
        os.chmod(d, 0o755)
    assert p.returncode == 1, p.stderr
    assert one_line(p) == f"otel-blob: error: {d}: cannot read directory: permission denied"


def test_replay_of_an_unreadable_log_is_one_line_exit_1(blob_db, shared_dir):
    d = copy_db(blob_db, os.path.join(shared_dir, "unreadable-log"))
    log = os.path.join(d, "LOG")
    unreadable(log)
    for target in (log, d):  # named, or found in its directory
        p = run_as_user("replay", target)
        assert p.returncode == 1, (target, p.stderr)
        assert one_line(p) == f"otel-blob: error: {log}: cannot read: permission denied"


BAD_ENDPOINTS = ["not-a-url", "ftp://x:1", "http://:abc"]


@pytest.mark.parametrize("value", BAD_ENDPOINTS)
def test_a_bad_endpoint_is_refused_at_once_from_the_environment_and_the_flag(value, blob_db):
    """Was: the variable accepted and retried for ~80 s while `--otlp` was refused. Both exit 2, one line."""
    expected = f"bad value {{}}={value!r}: expected a URL such as http://localhost:4317"
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"):
        for command in (("replay", blob_db), ("watch", blob_db)):
            p = run(*command, env=clean_env(**{var: value}), timeout=20)
            assert p.returncode == 2, (var, command, p.stderr)
            assert one_line(p) == "otel-blob: error: " + expected.format(var), (var, command)
    for command in ("replay", "watch"):
        p = run(command, blob_db, "--otlp", value, timeout=20)
        assert p.returncode == 2, (command, p.stderr)
        assert one_line(p) == (f"otel-blob: error: argument --otlp: {value!r}: expected a URL such as "
                               f"http://localhost:4317 (see 'otel-blob {command} --help')")


def test_watch_of_a_missing_directory_with_exit_on_missing_exits_1_at_once(tmp_path):
    """Was: waited forever. (The subprocess timeout is the guard, not a measurement.)"""
    missing = str(tmp_path / "nonexistent")
    p = run("watch", missing, "--exit-on-missing", timeout=20)
    assert p.returncode == 1, p.stderr
    assert one_line(p) == (f"otel-blob: error: {missing}: no such database directory "
                           f"(--exit-on-missing: not waiting for it)")


@pytest.mark.parametrize("content, words", [
    ('{"version": 1, "dbs": {"/x": {"files": [{"dev": 1, "ino"', "is corrupt (not valid JSON; truncated?)"),
    ('{"version": 99, "dbs": {}}', "has version 99"),
    ('[1, 2]', "is not an otel-blob checkpoint"),
    ('{"version": 1, "dbs": {"/x": {"files": 5}}}', "is corrupt: bad entry for /x"),
])
def test_a_rejected_checkpoint_leaves_no_lock_file(tmp_path, blob_db, content, words):
    """Was: FILE.lock left behind."""
    ckpt = tmp_path / "ckpt.json"
    ckpt.write_text(content)
    p = run("watch", blob_db, "--checkpoint", str(ckpt), "--console")
    assert p.returncode == 2, p.stderr
    line = one_line(p)
    assert line.startswith(f"otel-blob: error: checkpoint {ckpt} {words}"), line
    assert sorted(os.listdir(tmp_path)) == ["ckpt.json"], "the refused checkpoint left a file behind"
    assert ckpt.read_text() == content, "a refused checkpoint must not be rewritten"


def test_a_checkpoint_in_use_is_refused_and_its_owners_lock_kept(tmp_path, blob_db):
    """The converse: the lock of the watcher that holds the checkpoint is not removed by the refused one."""
    ckpt = tmp_path / "ckpt.json"
    owner = watch(blob_db, "--checkpoint", str(ckpt), "--console")
    owner.wait_for("err", r"^otel-blob: printing one line per blob file event")
    p = run("watch", blob_db, "--checkpoint", str(ckpt), "--console")
    assert p.returncode == 2, p.stderr
    assert one_line(p) == f"otel-blob: error: checkpoint {ckpt} is in use by another otel-blob process"
    assert os.path.exists(str(ckpt) + ".lock")
    assert owner.stop() == 0, owner.stderr


def test_an_unreadable_log_in_watch_is_said_once_with_what_to_do(blob_db, shared_dir):
    """Two databases in one watch: A's LOG cannot be read, B is written to meanwhile. The watch
    loop polls every watch each round: B's events appearing round after round are rounds in
    which A was tried again -- still one line about A, saying what to do."""
    a = copy_db(blob_db, os.path.join(shared_dir, "watch-unreadable"))
    log = os.path.join(a, "LOG")
    unreadable(log)
    b = os.path.join(shared_dir, "watch-readable")
    db = rocksdict.Rdict(b, blob_options())
    os.chmod(b, 0o755)
    w = Proc(as_user_argv("watch", a, b, "--console"), clean_env())
    try:
        w.wait_for("err", r"^otel-blob: printing one line per blob file event")
        for i in range(1, 4):
            write_round(db)
            db.flush()
            w.wait_for("out", rf"^\[{re.escape(b)}\] \+ created ", count=2 * i)  # two blob files per flush
    finally:
        quiesce(db)
        db.close()
    rc = w.stop(signal.SIGTERM)
    assert_clean(w.stderr)
    about_a = [line for line in w.lines["err"] if f"{log}: " in line or "cannot read" in line]
    assert about_a == [
        f"otel-blob: cannot read the LOG of {a} (log_unreadable): {log}: permission denied -- run as a user "
        f"that may read it (the database's owner or group); it is followed as soon as it can be read"
    ], w.stderr
    # It was never read: the end says so, and the status is "telemetry lost".
    assert rc == 3, w.stderr
    assert w.lines["err"][-1] == "otel-blob: stopped by SIGTERM; LOG files lost or unreadable: log_unreadable 1 " \
                                 "(exit status 3)", w.stderr


# ---------------------------------------------------------------------------
# Where telemetry goes, said at start
# ---------------------------------------------------------------------------


def quiet_log(directory: str) -> str:
    """A RocksDB LOG with no event: a replay of it sends nothing anywhere."""
    path = os.path.join(directory, "LOG")
    with open(path, "w") as f:
        f.write("2025/01/01-00:00:00.000000 1 RocksDB version: 9.10.0\n")
    return path


@pytest.mark.parametrize("case", ["default", "configured", "http", "console", "none", "sdk_disabled"])
def test_replay_says_where_telemetry_goes_first(tmp_path, case):
    """Was: silent, sending to whatever listens on localhost:4317."""
    log = quiet_log(str(tmp_path))
    args: tuple[str, ...] = ()
    env = clean_env()
    if case == "default":
        expected = "exporting traces and logs and metrics: OTLP/gRPC to http://localhost:4317"
    elif case == "configured":
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://collector.example:4317"
        env["OTEL_METRICS_EXPORTER"] = "none"
        expected = "exporting traces and logs: OTLP/gRPC to http://collector.example:4317"
    elif case == "http":
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "https://collector.example:4318"
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
        expected = ("exporting traces: OTLP/HTTP to https://collector.example:4318/v1/traces; "
                    "logs: OTLP/HTTP to https://collector.example:4318/v1/logs; "
                    "metrics: OTLP/HTTP to https://collector.example:4318/v1/metrics")
    elif case == "console":
        args = ("--console",)
        expected = "printing one line per blob file event (--console); exporting nothing"
    elif case == "sdk_disabled":
        env.update(OTEL_SDK_DISABLED="True", OTEL_EXPORTER_OTLP_ENDPOINT="http://collector.example:4317")
        expected = "exporting nowhere (OTEL_SDK_DISABLED=true)"
    else:
        env.update(OTEL_TRACES_EXPORTER="none", OTEL_LOGS_EXPORTER="none", OTEL_METRICS_EXPORTER="none")
        expected = "exporting nowhere (every OTEL_<SIGNAL>_EXPORTER is none)"
    p = run("replay", *args, "--shutdown-timeout", "0", log, env=env)
    assert p.returncode == 0, p.stderr
    assert_clean(p.stderr)
    assert p.stderr.splitlines()[0] == f"otel-blob: {expected}", p.stderr


def test_sdk_disabled_exports_nothing_and_warns_of_nothing(blob_db, otlp_receiver):
    """OTEL_SDK_DISABLED=true: the SDK's providers drop everything. Was: our direct log path
    still went to the exporter's queue check, and a false warning said the exporter had changed."""
    p = run("replay", "--otlp", otlp_receiver.grpc_endpoint, blob_db, env=clean_env(OTEL_SDK_DISABLED="true"))
    assert p.returncode == 0, p.stderr
    assert one_line(p) == "otel-blob: exporting nowhere (OTEL_SDK_DISABLED=true)"
    assert otlp_receiver.received == []


# ---------------------------------------------------------------------------
# Readable output
# ---------------------------------------------------------------------------


def test_console_summary_says_sizes_unknown_instead_of_zero(blob_db, tmp_path):
    """Was: "0 bytes of files created" when the sizes were unknown (a replay: the LOG alone)."""
    p = run("replay", "--console", blob_db)
    assert p.returncode == 0, p.stderr
    summary = p.stdout[p.stdout.index("Summary: "):]
    assert "file sizes unknown (from the LOG alone; --stat-blob-files reads them from the disk)" in summary, summary
    assert "0 bytes of files" not in summary
    # The contrast: a live DB watched with --stat-blob-files knows its files' sizes.
    live = str(tmp_path / "live")
    db = rocksdict.Rdict(live, blob_options())
    w = watch(live, "--console", "--stat-blob-files")
    w.wait_for("err", r"^otel-blob: printing one line per blob file event")
    write_round(db)
    db.flush()
    quiesce(db)
    w.wait_for("out", r"^\+ created .* size=[1-9][\d,]*$", count=2)
    assert w.stop() == 0, w.stderr
    db.close()
    m = re.search(r"^  bytes: .* ([\d,]+) bytes of files created", w.stdout, re.M)
    assert m and int(m.group(1).replace(",", "")) > 0, w.stdout


def test_watch_stats_has_a_readable_repr(tmp_path):
    """Was: `<WatchStats object at 0x…>`."""
    path = str(tmp_path / "db")
    db = rocksdict.Rdict(path, blob_options())
    w = otel_blob.watch(db, otel_blob.EventListener())
    write_round(db)
    db.flush()
    quiesce(db)
    db.close()
    w.stop()
    text = repr(w.stats)
    assert " object at 0x" not in text
    created, deleted = w.stats.blob_files_created, w.stats.blob_files_deleted
    assert created > 0
    assert re.fullmatch(r"WatchStats\(lines=\d+, events=\d+, .*\)", text), text
    assert f"blob_files_created={created}" in text and f"events={w.stats.events}" in text
    assert ("blob_files_deleted" in text) == (deleted > 0)


def test_no_doubled_prefix_when_a_listener_fails(tmp_path, caplog):
    """The CLI prefixes every line with `otel-blob: `; library messages must not add `otel_blob: `
    (was `otel-blob: otel_blob: …`). A listener that raises is the library's own message.
    (Every CLI case in this file also checks its stderr for the doubled prefix.)"""

    class Broken(otel_blob.EventListener):
        def on_blob_file_created(self, info: Any) -> None:
            raise RuntimeError("boom")

    path = str(tmp_path / "db")
    db = rocksdict.Rdict(path, blob_options())
    w = otel_blob.watch(db, Broken())
    write_round(db)
    db.flush()
    quiesce(db)
    db.close()
    with caplog.at_level(logging.WARNING, logger="otel_blob"):
        w.stop()
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("otel_blob")]
    assert w.stats.listener_errors > 0 and any("failed" in m for m in messages), caplog.text
    doubled = [m for m in messages if m.startswith("otel_blob:")]
    assert not doubled, doubled[0][:120]

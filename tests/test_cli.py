"""The ``otel-blob`` console script, driven in subprocesses like an operator would.

Synchronisation is on what the processes say (the watcher's "watching" line on
stderr, the OTLP receiver's records), never on sleeps.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from typing import Any

import pytest
import rocksdict

from dbutil import BlobDirWatch, blob_options, churn_and_close, quiesce, write_round

OTEL_BLOB = os.path.join(os.path.dirname(sys.executable), "otel-blob")
CREATED = "rocksdb.blob_file.created"
DELETED = "rocksdb.blob_file.deleted"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CI_OTEL"))}
    env.update(extra)
    return env


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([OTEL_BLOB, *args], capture_output=True, text=True, env=env or clean_env(),
                          timeout=timeout)


class Watcher:
    """A running ``otel-blob watch``; its stderr is collected by a thread."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([OTEL_BLOB, "watch", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env or clean_env())
        self.err: list[str] = []
        self._cond = threading.Condition()
        self._out: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()
        self._to = threading.Thread(target=lambda: self._out.extend(self.proc.stdout), daemon=True)
        self._to.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self._cond:
                self.err.append(line)
                self._cond.notify_all()
        with self._cond:
            self.err.append("<eof>")
            self._cond.notify_all()

    def wait_err(self, pattern: str, timeout: float = 20) -> str:
        rx = re.compile(pattern)
        with self._cond:
            ok = self._cond.wait_for(lambda: any(rx.search(l) for l in self.err) or "<eof>" in self.err, timeout)
            hit = [l for l in self.err if rx.search(l)]
        assert ok and hit, f"watcher never said {pattern!r}; stderr: {''.join(self.err)}"
        return hit[0]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self._t.join(5)
        self._to.join(5)
        return rc

    @property
    def stdout(self) -> str:
        return "".join(self._out)

    @property
    def stderr(self) -> str:
        return "".join(l for l in self.err if l != "<eof>")


def blob_records(rcv: Any) -> list[dict[str, Any]]:
    return [r for r in rcv.log_records() if r["event_name"] in (CREATED, DELETED)]


def ok_numbers(records: list[dict[str, Any]], event: str) -> Counter:
    return Counter(r["attributes"]["rocksdb.blob_file.number"] for r in records
                   if r["event_name"] == event and r["attributes"].get("rocksdb.status") == "OK")


def comparable(r: dict[str, Any]) -> tuple:
    """A record minus what only says when/how it was sent (observed time, transport)."""
    keep = {k: v for k, v in r.items() if k not in ("observed_time_unix_nano", "transport")}
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in keep.items()))


# ---------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------

LINE_CREATED = re.compile(r"^\+ created  \d{6}\.blob  cf=default job=\d+ reason=(flush|compaction:\w+)  "
                          r"blobs=\d+ bytes=[\d,]+ size=[\d,]+$", re.M)
LINE_DELETED = re.compile(r"^- deleted  \d{6}\.blob  cf=default job=\d+ reason=\S+  size=[\d,]+$", re.M)


def test_demo_lines_and_summary():
    p = run("demo")
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    created, deleted = LINE_CREATED.findall(p.stdout), LINE_DELETED.findall(p.stdout)
    assert "flush" in created and any(r.startswith("compaction") for r in created), p.stdout
    assert deleted, p.stdout
    m = re.search(r"^Summary: (\d+) blob files created, (\d+) deleted", p.stdout, re.M)
    assert m and int(m.group(1)) == len(created) and int(m.group(2)) == len(deleted), p.stdout
    for label in ("created by reason:", "deleted by reason:", "bytes:", "jobs:"):
        assert label in p.stdout
    assert "nothing exported" in p.stdout
    # The README's form runs the same program.
    q = subprocess.run([sys.executable, "-m", "otel_blob.demo", "--rounds", "2"], capture_output=True, text=True,
                       env=clean_env(), timeout=60)
    assert q.returncode == 0 and "Summary:" in q.stdout, q.stderr


def test_demo_exports_when_an_endpoint_is_configured(otlp_receiver):
    p = run("demo", "--rounds", "2", env=clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.grpc_endpoint,
                                                    OTEL_SERVICE_NAME="demo-svc"))
    assert p.returncode == 0, p.stderr
    n_created = len(LINE_CREATED.findall(p.stdout))
    # The process flushed its exporters before exiting: the records are all there.
    recs = blob_records(otlp_receiver)
    assert len([r for r in recs if r["event_name"] == CREATED]) == n_created
    assert {r["resource"]["service.name"] for r in recs} == {"demo-svc"}
    assert otlp_receiver.spans()


# ---------------------------------------------------------------------------
# watch
# ---------------------------------------------------------------------------


def test_watch_waits_for_the_db_and_drains_on_sigterm(tmp_path, otlp_receiver):
    path = str(tmp_path / "db")
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.http_endpoint,
                    OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf", OTEL_RESOURCE_ATTRIBUTES="deployment.environment=t")
    w = Watcher(path, env=env)
    w.wait_err("waiting for the database directory")
    os.mkdir(path)
    with BlobDirWatch(path) as gt:
        db = rocksdict.Rdict(path, blob_options())
        w.wait_err(r"watching .* from the start")
        churn_and_close(db)
        # No waiting for the export: SIGTERM must drain the LOG and flush the exporters.
        rc = w.stop()
        truth = gt.collect()
    assert rc == 0, w.stderr
    assert "Traceback" not in w.stderr
    recs = blob_records(otlp_receiver)
    assert truth.deleted, "the workload deleted no blob file"
    created, deleted = ok_numbers(recs, CREATED), ok_numbers(recs, DELETED)
    assert set(created) == set(truth.created) and max(created.values()) == 1
    assert set(deleted) == set(truth.deleted) and max(deleted.values()) == 1
    res = recs[0]["resource"]
    assert res["service.name"] == "otel-blob" and res["deployment.environment"] == "t"
    assert all(r["time_unix_nano"] for r in recs)


def test_watch_console_and_directory_disappearing(tmp_path):
    path = str(tmp_path / "db")
    db = rocksdict.Rdict(path, blob_options())
    w = Watcher(path, "--console", "--from-start", "--exit-on-missing", "--poll-interval", "0.01")
    w.wait_err("watching")
    write_round(db)
    db.flush()
    quiesce(db)
    db.close()
    del db
    import shutil

    shutil.rmtree(path)
    rc = w.proc.wait(30)
    w._t.join(5)
    w._to.join(5)
    assert rc == 1
    assert "database directory disappeared" in w.stderr and "Traceback" not in w.stderr
    assert re.search(r"^\+ created  \d{6}\.blob  cf=default job=\d+ reason=flush", w.stdout, re.M), w.stdout
    assert "Summary: " in w.stdout


def test_kill9_resume_from_checkpoint_with_rotations(tmp_path, otlp_receiver):
    path = str(tmp_path / "db")
    ckpt = str(tmp_path / "state" / "ckpt.json")
    os.mkdir(tmp_path / "state")
    os.mkdir(path)
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.grpc_endpoint, OTEL_BLOB_CHECKPOINT=ckpt,
                    OTEL_BLOB_CHECKPOINT_INTERVAL="0.05", OTEL_BLOB_POLL_INTERVAL="0.01")
    opts = blob_options(max_log_file_size=16 << 10)

    def rounds(db: Any, n: int, prefix: bytes) -> None:
        for _ in range(n):
            write_round(db, 60, prefix)
            db.flush()
        db.compact_range(None, None)
        quiesce(db)

    with BlobDirWatch(path) as gt:
        db = rocksdict.Rdict(path, opts)
        w1 = Watcher(path, "--from-start", env=env)
        w1.wait_err("watching .* from the start")
        rounds(db, 3, b"a")
        # Some records exported and a checkpoint written: then the watcher dies hard.
        assert otlp_receiver.wait_for(lambda r: len(blob_records(r)) >= 4, 20)
        assert otlp_receiver.wait_for(lambda r: os.path.exists(ckpt), 20)
        assert w1.stop(signal.SIGKILL) == -signal.SIGKILL
        first = len(blob_records(otlp_receiver))

        # While it is down: more blob files, LOG rotations, a close and reopen (new LOG, new session).
        old_logs = {n for n in os.listdir(path) if n.startswith("LOG.old.")}
        rounds(db, 3, b"b")
        db.close()
        db = rocksdict.Rdict(path, opts)
        rounds(db, 2, b"c")
        rotated = {n for n in os.listdir(path) if n.startswith("LOG.old.")} - old_logs
        assert len(rotated) >= 2, "the LOG did not rotate while the watcher was down"

        w2 = Watcher(path, "--from-start", env=env)  # the checkpoint wins over --from-start
        w2.wait_err("watching .* from checkpoint")
        rounds(db, 2, b"d")
        db.close()
        assert w2.stop() == 0, w2.stderr
        truth = gt.collect()

    recs = blob_records(otlp_receiver)
    assert len(recs) > first
    # Exactly once, except records re-sent after the kill, which must be identical to the first send.
    by_key: dict[tuple, list[dict]] = {}
    for r in recs:
        key = (r["event_name"], r["attributes"]["rocksdb.blob_file.number"], r["attributes"].get("rocksdb.status"),
               r["attributes"].get("rocksdb.db.session_id"), r["time_unix_nano"])
        by_key.setdefault(key, []).append(r)
    dups = {k: v for k, v in by_key.items() if len(v) > 1}
    for k, v in dups.items():
        assert len(v) == 2 and comparable(v[0]) == comparable(v[1]), f"re-sent record differs: {k}"
    assert len(dups) <= first, "more duplicates than records sent before the kill"
    unique = [v[0] for v in by_key.values()]
    created, deleted = ok_numbers(unique, CREATED), ok_numbers(unique, DELETED)
    assert set(created) == set(truth.created), (sorted(set(truth.created) - set(created)), sorted(set(created) - set(truth.created)))
    assert set(deleted) == set(truth.deleted)
    # Blob files of jobs that started before the checkpoint keep their reason.
    assert not [r for r in unique if r["event_name"] == CREATED and r["attributes"]["rocksdb.blob_file.reason"] == "unknown"]
    data = json.load(open(ckpt))
    assert data["version"] == 1 and os.path.abspath(path) in data["dbs"]


@pytest.mark.parametrize("content, words", [
    ('{"version": 1, "dbs": {"/x": {"files": [{"dev": 1, "ino"', "corrupt"),
    ("", "empty"),
    ('{"version": 99, "dbs": {}}', "version"),
    ('[1, 2]', "not an otel-blob checkpoint"),
])
def test_bad_checkpoint_is_a_clear_error(tmp_path, content, words):
    path = str(tmp_path / "db")
    rocksdict.Rdict(path, blob_options()).close()
    ckpt = tmp_path / "ckpt.json"
    ckpt.write_text(content)
    p = run("watch", path, "--checkpoint", str(ckpt), "--console")
    assert p.returncode == 2
    assert words in p.stderr and str(ckpt) in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


# ---------------------------------------------------------------------------
# replay
# ---------------------------------------------------------------------------


def test_replay_equals_live(tmp_path, otlp_receiver):
    path = str(tmp_path / "db")
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.grpc_endpoint)
    w = Watcher(path, env=env)
    w.wait_err("waiting for the database directory")
    db = rocksdict.Rdict(path, blob_options(max_log_file_size=32 << 10))
    w.wait_err("watching")
    churn_and_close(db)
    db = rocksdict.Rdict(path, blob_options(max_log_file_size=32 << 10))  # a second session
    write_round(db)
    db.flush()
    quiesce(db)
    db.close()
    assert w.stop() == 0, w.stderr
    live_logs, live_spans = otlp_receiver.log_records(), otlp_receiver.spans()
    assert any(r["event_name"] == DELETED for r in live_logs)
    assert len([n for n in os.listdir(path) if n.startswith("LOG.old.")]) >= 2
    otlp_receiver.clear()

    p = run("replay", path, env=env)  # every LOG file of the DB, oldest first
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr and "\r" not in p.stderr  # no progress bar off a terminal
    replay_logs, replay_spans = otlp_receiver.log_records(), otlp_receiver.spans()
    assert sorted(map(comparable, replay_logs)) == sorted(map(comparable, live_logs))

    def span_key(s: dict) -> tuple:
        return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in s.items() if k != "transport"))

    assert sorted(map(span_key, replay_spans)) == sorted(map(span_key, live_spans))
    assert all(r["trace_id"] != "0" * 32 for r in replay_logs if r["attributes"].get("rocksdb.job.id", 0) != 0)

    # Twice the same LOG: identical records (what Loki and Tempo deduplicate).
    otlp_receiver.clear()
    logs = sorted(os.path.join(path, n) for n in os.listdir(path) if n.startswith("LOG"))
    p = run("replay", *reversed(logs), env=env)  # any order on the command line: replayed in file order
    assert p.returncode == 0, p.stderr
    assert sorted(map(comparable, otlp_receiver.log_records())) == sorted(map(comparable, replay_logs))


def test_replay_console(tmp_path):
    path = str(tmp_path / "db")
    db = rocksdict.Rdict(path, blob_options())
    write_round(db)
    db.flush()
    quiesce(db)
    db.close()
    p = run("replay", os.path.join(path, "LOG"), "--console")
    assert p.returncode == 0, p.stderr
    assert re.search(r"^\+ created  \d{6}\.blob  cf=default job=\d+ reason=flush  blobs=\d+ bytes=[\d,]+ size=\?",
                     p.stdout, re.M), p.stdout


# ---------------------------------------------------------------------------
# usage errors: one line on stderr, a non-zero exit, never a traceback
# ---------------------------------------------------------------------------


def test_bad_arguments_and_paths(tmp_path):
    not_db = tmp_path / "notdb"
    not_db.mkdir()
    (not_db / "hello.txt").write_text("hi")
    a_file = tmp_path / "file"
    a_file.write_text("not a log\n")
    db = str(tmp_path / "db")
    rocksdict.Rdict(db, blob_options()).close()
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    cases = [
        ((), {}, "command"),
        (("watch",), {}, "DB_DIR"),
        (("watch", db, "--poll-interval", "abc"), {}, "poll-interval"),
        (("watch", db, "--bogus"), {}, "--bogus"),
        (("watch", db), {"OTEL_BLOB_POLL_INTERVAL": "fast"}, "OTEL_BLOB_POLL_INTERVAL"),
        (("watch", db), {"OTEL_BLOB_FROM_START": "maybe"}, "OTEL_BLOB_FROM_START"),
        (("watch", db, "--console"), {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        (("watch", db), {"OTEL_LOGS_EXPORTER": "zipkin"}, "OTEL_LOGS_EXPORTER"),
        (("watch", db, "--otlp", "localhost"), {}, "--otlp"),
        (("watch", str(not_db)), {}, "not a RocksDB database directory"),
        (("watch", str(a_file)), {}, "not a directory"),
        (("watch", db, "--checkpoint", str(tmp_path / "nodir" / "c.json")), {}, "does not exist"),
        (("replay", str(tmp_path / "missing.LOG")), {}, "no such file"),
        (("replay", str(a_file)), {}, "not a RocksDB info LOG"),
        (("replay", fifo), {}, "not a regular file"),
        (("replay", str(not_db)), {}, "no LOG"),
        (("demo", "--rounds", "0"), {}, "--rounds"),
    ]
    for args, extra, words in cases:
        p = run(*args, env=clean_env(**extra), timeout=20)
        assert p.returncode != 0, (args, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr, (args, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1, (args, p.stderr)
        assert words in lines[0] and lines[0].startswith("otel-blob: "), (args, lines[0])


def test_unreadable_log_file(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    log = tmp_path / "LOG"
    log.write_text("2025/01/01-00:00:00.000000 1 RocksDB version: 9\n")
    log.chmod(0)
    p = run("replay", str(log))
    assert p.returncode == 1 and "permission denied" in p.stderr and len(p.stderr.strip().splitlines()) == 1

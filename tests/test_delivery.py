"""Delivery under pressure: bursts, Collector outages, and drops that are counted.

Scenarios of docs/reliability.md ("Bursts", "Collector outage"). The pipeline under
test is otel_blob's own (otel_blob/export.py: sized queues, retries, backpressure on
the LOG reader), as the sidecar CLI and the instrumentation's helper process use it;
the exporters are the real OTLP ones and the receiver decodes the real protobuf.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from types import SimpleNamespace

import pytest
import rocksdict

import otel_blob
from dbutil import blob_options, quiesce, write_round
from faults import (
    HELPER_PID_TRAILER,
    DirsTruth,
    PeakRss,
    account,
    assert_exact,
    children_peak_rss_kb,
    events_from_otlp,
    helper_pid,
    node_name,
    record,
    wait_for_exit,
)
from otel_blob.export import DeliveryQueue
from otel_blob.export.pipeline import ExportPipeline, PipelineOptions

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
OUTAGE_ENV = "OTEL_BLOB_OUTAGE_SECONDS"


def _telemetry(receiver, monkeypatch, **kw) -> ExportPipeline:
    # The OTLP exporters read their settings from os.environ, as in the CLI and the helper.
    for var, value in {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true",
                       "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_METRICS_EXPORTER": "none",
                       "OTEL_EXPORTER_OTLP_TIMEOUT": "2"}.items():
        monkeypatch.setenv(var, value)
    return ExportPipeline(PipelineOptions(), os.environ, default_exporter="otlp", **kw)


def _wait_until(predicate, timeout: float) -> bool:
    """Poll a condition of another thread's making (the exporter's retry schedule)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


# ---------------------------------------------------------------------------
# The queue itself: drops are counted by reason and reach the dropped metric
# ---------------------------------------------------------------------------


class _HeldExporter:
    """An exporter that takes batches only when released (a Collector that hangs)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.taken: list = []
        self.calls = threading.Event()

    def export(self, batch):
        self.calls.set()
        self.release.wait()
        self.taken.extend(batch)
        return SimpleNamespace(name="SUCCESS")

    def shutdown(self):
        self.release.set()


def test_full_queue_drops_are_counted_and_reported():
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from otel_blob.telemetry import TelemetryListener

    reader = InMemoryMetricReader()
    listener = TelemetryListener(meter_provider=MeterProvider(metric_readers=[reader]))
    exp = _HeldExporter()
    q = DeliveryQueue(exp, "logs", max_queue_size=100, max_export_batch_size=10, schedule_delay=0.01,
                      on_drop=lambda s, r, n: listener.count_dropped(n, f"export_{r}", s))
    q.put(0)
    assert exp.calls.wait(5)  # the worker holds the first batch (1 item) in the exporter
    for i in range(1, 150):
        q.put(i)
    assert q.backlog == 100 and not q.has_room(0)
    assert q.dropped == {"queue_full": 50}
    exp.release.set()
    assert q.force_flush(10_000)
    assert exp.taken == list(range(100))  # oldest first, the newest 50 dropped, nothing twice
    q.shutdown()
    points = [p for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
              for m in sm.metrics if m.name == "otel_blob.events.dropped" for p in m.data.data_points]
    assert [(dict(p.attributes), p.value) for p in points] == [({"reason": "export_queue_full", "signal": "logs"}, 50)]
    assert listener.stats.dropped == 50


def test_exports_run_with_instrumentation_suppressed():
    """The exporter's own HTTP/gRPC calls are not traced (an instrumented requests or grpc
    would otherwise make a span per export, exported in turn: a loop)."""
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled

    seen = []

    class _Probe(_HeldExporter):
        def export(self, batch):
            seen.append(is_instrumentation_enabled())
            return super().export(batch)

    exp = _Probe()
    exp.release.set()
    q = DeliveryQueue(exp, "logs", schedule_delay=0.01)
    q.put(1)
    assert q.force_flush(10_000)
    q.shutdown()
    assert seen == [False] and is_instrumentation_enabled()


def test_refused_batches_are_retried_until_taken(otlp_receiver, monkeypatch):
    """The Collector answers UNAVAILABLE: the same batch is retried, then delivered once."""
    t = _telemetry(otlp_receiver, monkeypatch)
    q_logs = next(q for q in t.queues if q.signal == "logs")
    q_logs.retry_first = 0.05
    otlp_receiver.set_available(False)
    logger = t.logger_provider.get_logger("t")
    from opentelemetry._logs import LogRecord

    for i in range(20):
        logger.emit(LogRecord(body=f"r{i}", attributes={"i": i}))
    # The exporter gives a batch up after its own retries (OTEL_EXPORTER_OTLP_TIMEOUT=2 s); we retry it.
    assert _wait_until(lambda: q_logs.failed_exports >= 2, 30)
    assert not t.flush(200) and q_logs.backlog == 20 and not q_logs.dropped and not otlp_receiver.log_records()
    otlp_receiver.set_available(True)
    assert t.flush(30_000)
    bodies = sorted(r["body"] for r in otlp_receiver.log_records())
    assert bodies == sorted(f"r{i}" for i in range(20))
    t.shutdown()
    assert t.dropped() == 0


# ---------------------------------------------------------------------------
# Bursts: 10,000 blob files in one flush
# ---------------------------------------------------------------------------


def _burst_db(path: str) -> None:
    opts = blob_options(blob_file_size=1, gc=False)  # one blob file per value
    opts.set_write_buffer_size(64 << 20)
    db = rocksdict.Rdict(path, opts)
    for i in range(10_000):
        db[b"k%06d" % i] = os.urandom(300)
    db.flush()
    quiesce(db)
    db.close()


def test_burst_ten_thousand_live_and_replay_nothing_dropped(request, tmp_path, otlp_receiver, monkeypatch):
    """Live: a watch following the LOG while RocksDB makes 10,000 blob files in one flush
    (a poll can return thousands of events at once), exported through the package's
    pipeline with its default sizes. Replay: the same LOG through ``otel-blob replay``
    (the whole burst at once; backpressure). Both: every event, once, none dropped."""
    path = str(tmp_path / "db")
    os.mkdir(path)
    with DirsTruth(path) as gt, PeakRss() as rss:
        t = _telemetry(otlp_receiver, monkeypatch)
        w = otel_blob.watch(path, t.listener, from_start=True)
        _burst_db(path)
        w.stop()
        t.shutdown()
        expected = gt.expected()
    live = events_from_otlp(otlp_receiver.log_records(), path)
    assert sum(expected.values()) >= 10_000
    rep = record(account("burst: 10,000 blob files in one flush, otel_blob pipeline (live)", node_name(request),
                         expected, live, peak_rss_kb=rss.kb, pipeline_dropped=t.dropped(), paused_polls=w.stats.paused))
    assert_exact(rep)
    assert t.dropped() == 0

    otlp_receiver.clear()
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.grpc_endpoint,
           "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_METRICS_EXPORTER": "none"}
    proc = subprocess.run([os.path.join(BIN, "otel-blob"), "replay", path], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    replayed = events_from_otlp(otlp_receiver.log_records(), path)
    rep = record(account("burst: same LOG through `otel-blob replay` (backpressure)", node_name(request),
                         expected, replayed, peak_rss_kb=children_peak_rss_kb()))
    assert_exact(rep)
    assert not EXPORT_DROP.search(proc.stderr), proc.stderr  # (the 10,000-event span keeps 2,048: said, counted)


# A drop by an export queue ("dropped 86 logs (queue_full)"), not the span event limit's own line.
EXPORT_DROP = re.compile(r"dropped \d+ (logs|traces)|could not be delivered")

BURST_APP = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, os.environ["APP_TESTS"])
    import rocksdict
    from dbutil import blob_options, quiesce
    opts = blob_options(blob_file_size=1, gc=False)
    opts.set_write_buffer_size(64 << 20)
    db = rocksdict.Rdict(os.environ["APP_DB"], opts)
    for i in range(10_000):
        db[b"k%06d" % i] = os.urandom(300)
    db.flush()
    quiesce(db)
    db.close()
    print("app done")
    """
)


def _run_instrumented(tmp_path, receiver, app: str, *, stdin=None, **env_extra: str) -> subprocess.Popen:
    script = tmp_path / "app.py"
    script.write_text(app + HELPER_PID_TRAILER)
    env = {
        **os.environ,
        "OTEL_PYTHON_ROCKSDICT_STATE_DIR": str(tmp_path / "state"),
        "OTEL_SERVICE_NAME": "delivery-app",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "APP_TESTS": HERE,
        "APP_DB": str(tmp_path / "db"),
        **env_extra,
    }
    return subprocess.Popen([os.path.join(BIN, "opentelemetry-instrument"), sys.executable, str(script)],
                            env=env, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _finish(popen: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """The app's output once it exited and its helper process delivered and exited too."""
    try:
        out, err = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        out, err = popen.communicate()
        pytest.fail(f"the instrumented app hung (> {timeout} s): {err[-3000:]}")
    assert wait_for_exit(helper_pid(out), timeout), "the helper process outlived its bound"
    return out, err


def _helper_log(tmp_path) -> str:
    try:
        return (tmp_path / "state" / "helper.log").read_text()
    except OSError:
        return ""


def test_burst_ten_thousand_instrumented_default_sdk_settings(request, tmp_path, otlp_receiver):
    """`opentelemetry-instrument` with no queue settings at all (the SDK's 2,048 default
    would drop most of this burst): the helper process's own queues take it whole."""
    os.mkdir(tmp_path / "db")
    with DirsTruth(str(tmp_path / "db")) as gt:
        out, err = _finish(_run_instrumented(tmp_path, otlp_receiver, BURST_APP), 300)
        expected = gt.expected()
    assert "app done" in out, err[-3000:]
    delivered = events_from_otlp(otlp_receiver.log_records(), str(tmp_path / "db"))
    rep = record(account("burst: 10,000 blob files, `opentelemetry-instrument` defaults (helper process)",
                         node_name(request), expected, delivered, peak_rss_kb=children_peak_rss_kb()))
    assert_exact(rep)
    log = err + _helper_log(tmp_path)
    assert "Queue full" not in log and not EXPORT_DROP.search(log), log


# ---------------------------------------------------------------------------
# Collector outage
# ---------------------------------------------------------------------------

OUTAGE_APP = textwrap.dedent(
    """
    import os, sys, time, select
    sys.path.insert(0, os.environ["APP_TESTS"])
    import rocksdict
    from dbutil import blob_options, quiesce, write_round
    db = rocksdict.Rdict(os.environ["APP_DB"], blob_options())
    # Rounds of writes + a flush until the test closes our stdin; one line per second
    # with the writes/s of that second (the app's throughput during the outage).
    n, t0 = 0, time.monotonic()
    print("started", flush=True)
    while not select.select([sys.stdin], [], [], 0)[0]:
        write_round(db)
        db.flush()
        n += 1
        now = time.monotonic()
        if now - t0 >= 1.0:
            print(f"rounds/s {n / (now - t0):.1f}", flush=True)
            n, t0 = 0, now
    quiesce(db)
    db.close()
    print("app done", flush=True)
    """
)


def test_collector_outage_instrumented_app_loses_nothing(request, tmp_path, otlp_receiver):
    """The receiver answers UNAVAILABLE for $OTEL_BLOB_OUTAGE_SECONDS (default 30) while an
    instrumented app keeps writing: the helper retries the refused batches, stops reading
    the LOG while its queue is full (the LOG is the buffer) and delivers everything once
    the Collector is back. Exactly once against the file system."""
    outage = float(os.environ.get(OUTAGE_ENV, "30"))
    os.mkdir(tmp_path / "db")
    with DirsTruth(str(tmp_path / "db")) as gt:
        popen = _run_instrumented(tmp_path, otlp_receiver, OUTAGE_APP, stdin=subprocess.PIPE)
        try:
            assert popen.stdout.readline().strip() == "started"
            otlp_receiver.wait_for(lambda r: r.log_records(), timeout=30)  # telemetry flows
            phases = {}
            for phase, seconds in (("before", 3.0), ("outage", outage), ("after", 3.0)):
                otlp_receiver.set_available(phase != "outage")
                end = time.monotonic() + seconds
                got = []
                while time.monotonic() < end:  # the scenario's duration, read from the app's output
                    line = popen.stdout.readline()
                    gt.expected()  # keep the kernel's inotify queue drained over a long run
                    if line.startswith("rounds/s"):
                        got.append(float(line.split()[1]))
                phases[phase] = got
            popen.stdin.close()  # the app's cue to close its DB and exit
            popen.stdin = None
        finally:
            out, err = _finish(popen, 120)
        expected = gt.expected()
    assert "app done" in out, err[-3000:]
    delivered = events_from_otlp(otlp_receiver.log_records(), str(tmp_path / "db"))
    rep = record(account(f"collector outage: receiver UNAVAILABLE {outage:.0f} s, instrumented app writing",
                         node_name(request), expected, delivered, peak_rss_kb=children_peak_rss_kb(),
                         app_rounds_per_s={p: sorted(r)[len(r) // 2] if r else None for p, r in phases.items()}))
    assert_exact(rep)
    assert "could not be delivered" not in err + _helper_log(tmp_path)


def test_outage_longer_than_the_log_keeps_loss_bounded_and_reported(request, tmp_path, otlp_receiver, monkeypatch):
    """The Collector stays away while RocksDB rolls its LOG and deletes old ones
    (keep_log_file_num=2): the watch stops reading when the export queue is full, so
    memory stays bounded by the queue; the LOG files RocksDB deleted unread are
    reported (file_lost); once the Collector is back everything still on disk or in
    the queue is delivered, once. Nothing is dropped silently."""
    from faults import log_scan

    path = str(tmp_path / "db")
    os.mkdir(path)
    opts = blob_options()
    opts.set_max_log_file_size(32 << 10)
    opts.set_keep_log_file_num(2)
    queue = 64
    with DirsTruth(path) as gt:
        t = _telemetry(otlp_receiver, monkeypatch, queue_size=queue, shutdown_timeout=30)
        backlogs = []
        db = rocksdict.Rdict(path, opts)
        otlp_receiver.set_available(False)
        w = otel_blob.watch(db, t.listener, loop=None)
        for _ in range(40):
            write_round(db)
            db.flush()
            w.poll()  # what the watcher thread does every poll interval
            backlogs.append(max(q.backlog for q in t.queues))
        quiesce(db)
        db.close()
        assert w.stats.paused > 0  # it did stop reading
        assert max(backlogs) <= queue  # memory bounded by the queue, whatever the LOG holds
        otlp_receiver.set_available(True)
        w.stop()
        t.shutdown()
        expected = gt.expected()
    delivered = events_from_otlp(otlp_receiver.log_records(), path)
    lost_files = w.stats.skipped.get("file_lost", 0)
    rep = record(account("collector outage longer than the LOG keeps (keep_log_file_num=2, queue 64)",
                         node_name(request), expected, delivered, reported_lost=lost_files,
                         max_backlog=max(backlogs), pipeline_dropped=t.dropped()))
    assert rep.duplicates == 0 and rep.unexpected == 0 and t.dropped() == 0
    assert rep.dropped > 0 and lost_files > 0  # the loss happened, and it was reported
    # Everything RocksDB still had in a LOG on disk was delivered: the loss is only what it deleted.
    still_logged = log_scan(path)
    assert all(delivered[k] >= 1 for k in still_logged if k in expected)

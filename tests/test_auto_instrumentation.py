"""End to end: the real ``opentelemetry-instrument`` command runs a small rocksdict
app in a subprocess; the real OTLP exporters (gRPC and HTTP/protobuf) send to a
receiver started by the test, which decodes the protobuf."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from faults import HELPER_PID_TRAILER, helper_pid, wait_for_exit

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)

APP = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[2])
    import rocksdict
    from opentelemetry import trace
    from dbutil import blob_options, quiesce, write_round

    db = rocksdict.Rdict(sys.argv[1], blob_options())
    import os
    # Children started by the open (the helper, if any: its command line once it has exec'd, below).
    kids = open(f"/proc/self/task/{os.getpid()}/children").read().split()
    with trace.get_tracer("app").start_as_current_span("app.maintenance"):
        for _ in range(3):
            write_round(db)
            db.flush()
        db.compact_range(None, None)
    quiesce(db)
    db.close()  # returns at once; then wait, as an orderly shutdown may, for the session's delivery
    from otel_blob import RocksdictInstrumentor
    assert RocksdictInstrumentor().wait_for_sessions(60)  # (the helper, if any, is past its start-up)
    print("children:", [open(f"/proc/{k}/cmdline").read().replace(chr(0), " ") for k in kids])
    # The helper's niceness (field 19 of /proc/<pid>/stat; its name, field 2, has no spaces).
    print("nice:", [int(open(f"/proc/{k}/stat").read().split()[18]) for k in kids])
    # Its scheduling group's (a session of its own is a group where the kernel schedules by autogroup).
    if os.path.exists("/proc/self/autogroup"):
        print("autogroup nice:", [int(open(f"/proc/{k}/autogroup").read().split()[-1]) for k in kids])
    print("app done")
    """
)


def run_app(tmp_path, receiver, protocol: str, **env_extra: str) -> subprocess.CompletedProcess:
    app = tmp_path / "app.py"
    app.write_text(APP + HELPER_PID_TRAILER)
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": "blob-app",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_PYTHON_ROCKSDICT_STATE_DIR": str(tmp_path / "state"),
        **env_extra,
    }
    proc = subprocess.run(
        [os.path.join(BIN, "opentelemetry-instrument"), sys.executable, str(app), str(tmp_path / "db"), HERE],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0 and "app done" in proc.stdout, proc.stderr[-3000:]
    assert wait_for_exit(helper_pid(proc.stdout), 60)  # it delivered what followed the app's exit
    return proc


@pytest.mark.parametrize("protocol,mode", [("grpc", "auto"), ("http/protobuf", "auto"), ("grpc", "thread")])
def test_opentelemetry_instrument_exports_blob_telemetry(tmp_path, otlp_receiver, protocol, mode):
    proc = run_app(tmp_path, otlp_receiver, protocol, OTEL_PYTHON_ROCKSDICT_MODE=mode)
    # auto under opentelemetry-instrument: the LOG is followed by a helper process.
    assert ("-m otel_blob.helper" in proc.stdout) == (mode == "auto"), proc.stdout
    # It runs at nice 19 (the default): it takes only the CPU the application leaves.
    assert ("nice: [19]" in proc.stdout) == (mode == "auto"), proc.stdout
    if mode == "auto" and os.path.exists("/proc/self/autogroup"):
        assert "autogroup nice: [19]" in proc.stdout, proc.stdout
    # The SDK flushed at exit: everything is already here, no waiting needed.
    logs = otlp_receiver.log_records()
    spans = otlp_receiver.spans()
    blob_logs = [r for r in logs if r["event_name"].startswith("rocksdb.blob_file.")]
    assert blob_logs, proc.stderr[-2000:]
    created = [r for r in blob_logs if r["event_name"] == "rocksdb.blob_file.created"]
    deleted = [r for r in blob_logs if r["event_name"] == "rocksdb.blob_file.deleted"]
    assert created and deleted
    a = created[0]["attributes"]
    assert a["rocksdb.event"] == "rocksdb.blob_file.created" and a["db.system.name"] == "rocksdb"
    assert a["rocksdb.db.path"] == str(tmp_path / "db") and a["rocksdb.column_family"] == "default"
    assert a["file.name"] == "%06d.blob" % a["rocksdb.blob_file.number"]
    for key in ("rocksdb.db.session_id", "rocksdb.job.id", "rocksdb.blob_file.reason",
                "rocksdb.blob_file.blob_count", "rocksdb.blob_file.blob_bytes", "rocksdb.status", "file.path"):
        assert key in a, key
    assert created[0]["resource"]["service.name"] == "blob-app"
    # Every blob file on disk at the end was reported created.
    on_disk = {int(n[:-5]) for n in os.listdir(tmp_path / "db") if n.endswith(".blob")}
    assert on_disk <= {r["attributes"]["rocksdb.blob_file.number"] for r in created}

    jobs = {s["span_id"]: s for s in spans if s["name"] in ("rocksdb.flush", "rocksdb.compaction")}
    assert {s["name"] for s in jobs.values()} == {"rocksdb.flush", "rocksdb.compaction"}
    # Each creation record carries the context of its job span, which has the span event.
    for r in created:
        job = jobs.get(r["span_id"])
        assert job is not None, f"log record not tied to a job span: {r['attributes']}"
        assert r["trace_id"] == job["trace_id"]
        assert job["attributes"]["rocksdb.job.id"] == r["attributes"]["rocksdb.job.id"]
        numbers = [e["attributes"].get("rocksdb.blob_file.number") for e in job["events"]
                   if e["name"] == "rocksdb.blob_file.created"]
        assert r["attributes"]["rocksdb.blob_file.number"] in numbers

    # The app's flush() calls are spans, parents of the flush jobs they caused, in the app's trace.
    app_span = next(s for s in spans if s["name"] == "app.maintenance")
    manual = {s["span_id"]: s for s in spans if s["name"] == "rocksdict.flush"}
    assert len(manual) == 3 and all(s["trace_id"] == app_span["trace_id"] for s in manual.values())
    # Recorded by the helper (the app only makes their context current), yet the app's children,
    # under our scope and the app's resource.
    assert all(s["parent_span_id"] == app_span["span_id"] and s["scope"] == "otel_blob"
               and s["resource"]["service.name"] == "blob-app" for s in manual.values())
    flush_jobs = [s for s in jobs.values() if s["name"] == "rocksdb.flush"]
    assert flush_jobs and all(s["parent_span_id"] in manual for s in flush_jobs)
    compact_call = next(s for s in spans if s["name"] == "rocksdict.compact_range")
    assert any(s["parent_span_id"] == compact_call["span_id"] for s in jobs.values() if s["name"] == "rocksdb.compaction")


def test_disabled_instrumentation_records_nothing(tmp_path, otlp_receiver):
    run_app(tmp_path, otlp_receiver, "grpc", OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="rocksdict")
    assert otlp_receiver.spans(), "the app's own span should still be exported"
    names = {s["name"] for s in otlp_receiver.spans()}
    assert not names & {"rocksdb.flush", "rocksdb.compaction", "rocksdict.flush"}
    assert not [r for r in otlp_receiver.log_records() if r["event_name"].startswith("rocksdb.")]

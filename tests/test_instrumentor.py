"""RocksdictInstrumentor used explicitly, with in-memory SDK exporters."""

from __future__ import annotations

import logging

import pytest
import rocksdict
from opentelemetry.instrumentation.utils import suppress_instrumentation

from dbutil import blob_options, quiesce, write_round
from memory_sdk import MemorySdk
from otel_blob import RocksdictInstrumentor


@pytest.fixture
def sdk():
    s = MemorySdk()
    inst = RocksdictInstrumentor()
    yield s, inst
    if inst.is_instrumented_by_opentelemetry:
        inst.uninstrument()


def workload(path: str) -> None:
    db = rocksdict.Rdict(path, blob_options())
    for _ in range(2):
        write_round(db)
        db.flush()
    quiesce(db)
    db.close()


def test_every_event_of_the_session_is_delivered_after_close(tmp_path, sdk):
    s, inst = sdk
    inst.instrument(**s.kwargs())
    workload(str(tmp_path / "db"))
    # close() waits for nothing; the session's watch ends when RocksDB logs its shutdown.
    assert inst.wait_for_sessions(30)
    records = s.blob_records()
    created = [r for r in records if r.event_name == "rocksdb.blob_file.created"]
    on_disk = {int(n[:-5]) for n in (tmp_path / "db").iterdir() for n in [n.name] if n.endswith(".blob")}
    assert on_disk and on_disk <= {r.attributes["rocksdb.blob_file.number"] for r in created}


def test_uninstrument_restores_rocksdict_exactly(tmp_path, sdk):
    s, inst = sdk
    before = {k: rocksdict.Rdict.__dict__.get(k) for k in ("__init__", "close", "flush", "compact_range")}
    inst.instrument(**s.kwargs())
    assert rocksdict.Rdict.__dict__.get("flush") is not before["flush"]
    inst.uninstrument()
    after = {k: rocksdict.Rdict.__dict__.get(k) for k in before}
    assert after == before
    workload(str(tmp_path / "db"))
    assert not s.blob_records() and not s.spans.get_finished_spans()


def test_suppressed_instrumentation_records_nothing(tmp_path, sdk):
    s, inst = sdk
    inst.instrument(**s.kwargs())
    with suppress_instrumentation():
        workload(str(tmp_path / "db"))
    assert inst.wait_for_sessions(30)
    assert not s.blob_records()
    assert not [sp for sp in s.spans.get_finished_spans() if sp.name.startswith(("rocksdb.", "rocksdict."))]


def test_disabled_by_env_var(tmp_path, sdk, monkeypatch):
    s, inst = sdk
    monkeypatch.setenv("OTEL_PYTHON_ROCKSDICT_ENABLED", "false")
    inst.instrument(**s.kwargs())
    workload(str(tmp_path / "db"))
    assert not s.blob_records()


def test_kwarg_beats_env_and_bad_env_falls_back(tmp_path, sdk, monkeypatch, caplog):
    s, inst = sdk
    monkeypatch.setenv("OTEL_PYTHON_ROCKSDICT_SEVERITY", "info")
    monkeypatch.setenv("OTEL_PYTHON_ROCKSDICT_POLL_INTERVAL", "soon")
    with caplog.at_level(logging.WARNING, logger="otel_blob"):
        inst.instrument(severity="debug", **s.kwargs())
    assert "OTEL_PYTHON_ROCKSDICT_POLL_INTERVAL" in caplog.text
    assert inst.settings.poll_interval == 0.01 and inst.settings.severity == "debug"
    workload(str(tmp_path / "db"))
    assert inst.wait_for_sessions(30)
    recs = [r for r in s.blob_records() if r.attributes.get("rocksdb.status") == "OK"]
    assert recs and {r.severity_text for r in recs} == {"DEBUG"}


def test_manual_flush_span_is_parent_of_the_flush_job(tmp_path, sdk):
    s, inst = sdk
    inst.instrument(**s.kwargs())
    tracer = s.tracer_provider.get_tracer("app")
    db = rocksdict.Rdict(str(tmp_path / "db"), blob_options())
    with tracer.start_as_current_span("app"):
        write_round(db)
        db.flush()
    quiesce(db)
    db.close()
    assert inst.wait_for_sessions(30)
    spans = s.spans.get_finished_spans()
    app = next(sp for sp in spans if sp.name == "app")
    call = next(sp for sp in spans if sp.name == "rocksdict.flush")
    job = next(sp for sp in spans if sp.name == "rocksdb.flush")
    assert call.parent.span_id == app.context.span_id
    assert job.parent.span_id == call.context.span_id
    assert job.context.trace_id == app.context.trace_id


def test_a_watch_that_fails_to_start_does_not_break_the_app(tmp_path, sdk, monkeypatch, caplog):
    s, inst = sdk
    inst.instrument(**s.kwargs())
    import otel_blob.instrument.instrumentor as mod

    def boom(*a, **k):
        raise OSError("simulated")

    monkeypatch.setattr(mod, "identity_of", boom)
    with caplog.at_level(logging.ERROR, logger="otel_blob"):
        workload(str(tmp_path / "db"))  # must not raise
    assert "could not start following" in caplog.text


def test_mode_and_helper_nice_settings():
    from otel_blob.settings import Settings

    env = {"OTEL_PYTHON_ROCKSDICT_MODE": "process", "OTEL_PYTHON_ROCKSDICT_HELPER_NICE": "12"}
    s = Settings.resolve({}, env)
    assert (s.mode, s.helper_nice) == ("process", 12)
    assert Settings.resolve({"helper_nice": 0, "mode": "thread"}, env).helper_nice == 0
    bad = Settings.resolve({}, {"OTEL_PYTHON_ROCKSDICT_HELPER_NICE": "20", "OTEL_PYTHON_ROCKSDICT_MODE": "fork"})
    assert (bad.mode, bad.helper_nice) == ("auto", 19)


def test_manual_spans_follow_database_conventions_and_name_their_column_family(tmp_path, sdk):
    from otel_blob import __version__
    from otel_blob.telemetry import SCHEMA_URL

    s, inst = sdk
    inst.instrument(**s.kwargs())
    path = str(tmp_path / "db")
    db = rocksdict.Rdict(path, blob_options())
    users = db.create_column_family("users", blob_options())
    write_round(db)
    db.flush()
    for i in range(40):
        users[b"u%03d" % i] = b"v" * 1024
    users.flush()
    again = db.get_column_family("users")
    again.compact_range(None, None)
    quiesce(db)
    del users, again
    db.close()
    assert inst.wait_for_sessions(30)
    calls = [sp for sp in s.spans.get_finished_spans() if sp.name.startswith("rocksdict.")]
    seen = [(sp.name, sp.attributes["db.operation.name"], sp.attributes["rocksdb.column_family"]) for sp in calls]
    assert seen == [("rocksdict.flush", "flush", "default"), ("rocksdict.flush", "flush", "users"),
                    ("rocksdict.compact_range", "compact_range", "users")]
    for sp in calls:
        assert sp.attributes["db.system.name"] == "rocksdb" and sp.attributes["db.namespace"] == path
    # One instrumentation scope for everything we emit: name, version, schema of the conventions.
    scopes = {(sp.instrumentation_scope.name, sp.instrumentation_scope.version, sp.instrumentation_scope.schema_url)
              for sp in s.spans.get_finished_spans() if sp.name.startswith(("rocksdict.", "rocksdb."))}
    scopes |= {(r.instrumentation_scope.name, r.instrumentation_scope.version, r.instrumentation_scope.schema_url)
               for r in s.logs.get_finished_logs()}
    data = s.metrics.get_metrics_data()
    scopes |= {(sm.scope.name, sm.scope.version, sm.scope.schema_url)
               for rm in data.resource_metrics for sm in rm.scope_metrics if sm.scope.name != "opentelemetry-sdk"}
    assert scopes == {("otel_blob", __version__, SCHEMA_URL)}


def test_excluded_databases_are_neither_followed_nor_traced(tmp_path, sdk):
    s, inst = sdk
    inst.instrument(exclude_dbs=[str(tmp_path / "scratch-*")], **s.kwargs())
    workload(str(tmp_path / "scratch-1"))
    workload(str(tmp_path / "kept"))
    assert inst.wait_for_sessions(30)
    paths = {r.attributes.get("rocksdb.db.path") for r in s.blob_records()}
    assert paths == {str(tmp_path / "kept")}
    traced = {sp.attributes.get("rocksdb.db.path") for sp in s.spans.get_finished_spans()}
    assert traced == {str(tmp_path / "kept")}

"""TelemetryListener: the mapping of events onto OTel log records, spans and metrics.

In-memory exporters everywhere; hand-built Info values for the exact mapping and
real rocksdict workloads for the whole path (``w.stop()`` drains: no sleeps).
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
import rocksdict
from opentelemetry import context as otel_context
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import otel_blob
from dbutil import Recorder, blob_history, blob_options, quiesce, write_round
from otel_blob.decode import (
    BatchInfo,
    BlobFileCreationInfo,
    BlobFileDeletionInfo,
    CompactionJobInfo,
    FlushJobInfo,
    LineSkippedInfo,
    LogDecoder,
    TableFileCreationInfo,
    TableFileDeletionInfo,
    WatchInfo,
)
from otel_blob.watching.listener import deliver
from otel_blob.telemetry import DeterministicIdGenerator, TelemetryListener, details_attributes, hash_path

DB = "/data/db1"
SID = "SESSION1"
T0 = 1_700_000_000_000_000  # RocksDB time_micros


class Otel:
    def __init__(self, id_generator: Any = None) -> None:
        self.spans = InMemorySpanExporter()
        self.tp = TracerProvider(**({"id_generator": id_generator} if id_generator else {}))
        self.tp.add_span_processor(SimpleSpanProcessor(self.spans))
        self.logs = InMemoryLogRecordExporter()
        self.lp = LoggerProvider(shutdown_on_exit=False)
        self.lp.add_log_record_processor(SimpleLogRecordProcessor(self.logs))
        self.reader = InMemoryMetricReader()
        self.mp = MeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)

    def listener(self, **kw: Any) -> TelemetryListener:
        return TelemetryListener(tracer_provider=self.tp, logger_provider=self.lp, meter_provider=self.mp, **kw)

    def records(self) -> list[Any]:
        return [r.log_record for r in self.logs.get_finished_logs()]

    def finished(self, name: str | None = None) -> list[Any]:
        return [s for s in self.spans.get_finished_spans() if name is None or s.name == name]

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        data = self.reader.get_metrics_data()
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                if sm.scope.name == "opentelemetry-sdk":
                    continue  # SDK 1.41's own metrics (otel.sdk.metric_reader.*), opt-in from 1.42
                for m in sm.metrics:
                    out[m.name] = [(dict(dp.attributes), dp) for dp in m.data.data_points]
        return out

    def total(self, name: str) -> float:
        return sum(dp.value for _, dp in self.metrics().get(name, []))

    def hist_count(self, name: str) -> int:
        return sum(dp.count for _, dp in self.metrics().get(name, []))


@pytest.fixture
def otel() -> Otel:
    return Otel()


# -- hand-built events ------------------------------------------------------------


def flush_started(job: int, t: int, reason: str = "Write Buffer Full", db: str = DB, session: str = SID) -> FlushJobInfo:
    return FlushJobInfo(job, db, "default", session, t, reason, False, t, {"num_memtables": 1, "flush_reason": reason})


def flush_finished(job: int, t: int, start: int, db: str = DB) -> FlushJobInfo:
    return FlushJobInfo(
        job, db, "default", SID, t, "Write Buffer Full", True, start,
        {"lsm_state": [1, 0, 0], "blob_file_head": 7, "blob_file_tail": 9, "output_compression": "Snappy"},
    )


def created(job: int, number: int, t: int, size: int | None = 5000, status: str = "OK", db: str = DB, reason: str = "flush") -> BlobFileCreationInfo:
    return BlobFileCreationInfo(
        job, db, "default", f"{db}/{number:06d}.blob", number, reason, 10, 4096,
        "abc123", "crc32c", status, size, t, SID,
    )


def deleted(job: int, number: int, t: int, status: str = "OK", size: int | None = 5000, created_micros: int | None = None, db: str = DB) -> BlobFileDeletionInfo:
    return BlobFileDeletionInfo(job, db, f"{db}/{number:06d}.blob", number, status, t, SID, size, "default", created_micros)


def feed(listener: TelemetryListener, *infos: Any) -> None:
    for info in infos:
        assert deliver(listener, info)


def batch(db: str = DB) -> BatchInfo:
    return BatchInfo(db, 1, 1)


def test_created_record_carries_the_contract(otel):
    L = otel.listener()
    before = time.time_ns()
    feed(L, WatchInfo(DB, DB + "/LOG"), flush_started(4, T0), created(4, 9, T0 + 100),
         flush_finished(4, T0 + 500, T0), batch())
    (rec,) = otel.records()
    (span,) = otel.finished("rocksdb.flush")
    assert rec.event_name == "rocksdb.blob_file.created"
    a = dict(rec.attributes)
    assert a == {
        "db.system.name": "rocksdb",
        "rocksdb.event": "rocksdb.blob_file.created",
        "rocksdb.db.path": DB,
        "rocksdb.db.session_id": SID,
        "rocksdb.column_family": "default",
        "rocksdb.job.id": 4,
        "rocksdb.blob_file.number": 9,
        "rocksdb.blob_file.reason": "flush",
        "rocksdb.blob_file.blob_count": 10,
        "rocksdb.blob_file.blob_bytes": 4096,
        "rocksdb.blob_file.checksum": "abc123",
        "rocksdb.blob_file.checksum_func": "crc32c",
        "rocksdb.status": "OK",
        "file.path": DB + "/000009.blob",
        "file.name": "000009.blob",
        "file.size": 5000,
    }
    assert rec.timestamp == (T0 + 100) * 1000
    assert before <= rec.observed_timestamp <= time.time_ns()
    assert rec.severity_number == SeverityNumber.INFO and rec.severity_text == "INFO"
    assert "000009.blob" in rec.body and "reason=flush" in rec.body and "\n" not in rec.body
    # The record belongs to the job span; the span has the same attributes as an event.
    assert rec.trace_id == span.context.trace_id and rec.span_id == span.context.span_id
    assert span.start_time == T0 * 1000 and span.end_time == (T0 + 500) * 1000
    assert span.parent is None
    (ev,) = span.events
    assert ev.name == "rocksdb.blob_file.created" and dict(ev.attributes) == a and ev.timestamp == (T0 + 100) * 1000
    sa = span.attributes
    assert sa["rocksdb.flush.reason"] == "Write Buffer Full" and sa["rocksdb.job.id"] == 4
    assert sa["rocksdb.flush.num_memtables"] == 1 and "rocksdb.flush.flush_reason" not in sa
    assert sa["rocksdb.job.lsm_state"] == (1, 0, 0)
    assert sa["rocksdb.job.blob_file_head"] == 7 and sa["rocksdb.job.blob_file_tail"] == 9
    assert sa["rocksdb.flush.output_compression"] == "Snappy"
    assert L.stats.records_emitted == 1 and L.stats.spans_started == 1 and L.stats.dropped == 0


def test_debug_severity_and_failed_deletion_is_warn(otel):
    L = otel.listener(severity="debug")
    err = f"IO error: No such file or directory: while unlink() file: {DB}/000009.blob: No such file or directory"
    feed(L, created(0, 9, T0), deleted(0, 9, T0 + 5, status=err), batch())
    ok, bad = otel.records()
    assert ok.severity_number == SeverityNumber.DEBUG and ok.severity_text == "DEBUG"
    assert "error.type" not in ok.attributes
    assert bad.severity_number == SeverityNumber.WARN and bad.severity_text == "WARN"
    assert bad.attributes["error.type"] == "IO error"
    assert bad.attributes["rocksdb.status"] == err
    assert bad.event_name == "rocksdb.blob_file.deleted" and bad.attributes["rocksdb.event"] == "rocksdb.blob_file.deleted"
    # A failed deletion does not end the file's life.
    assert otel.total("rocksdb.blob_file.deleted") == 0
    assert otel.total("rocksdb.blob_file.live") == 1


def test_deletions_of_the_batch_are_span_events_later_ones_keep_the_context(otel):
    L = otel.listener()
    feed(L, flush_started(5, T0), created(5, 20, T0 + 10), created(5, 21, T0 + 20))
    # compaction 6 finishes; RocksDB logs its deletions right after, in the same batch
    comp_start = CompactionJobInfo(6, DB, "default", SID, T0 + 1000, "ForcedBlobGC", False, T0 + 1000,
                                   {"compaction_reason": "ForcedBlobGC", "files_L0": [3, 4], "score": 1.5})
    comp_end = CompactionJobInfo(6, DB, "default", SID, T0 + 2000, "ForcedBlobGC", True, T0 + 1000,
                                 {"output_level": 6, "num_blob_output_files": 1, "total_blob_output_size": 777,
                                  "lsm_state": [0, 1], "table_properties": {"data_size": 5, "deep": {"x": 1}}})
    feed(L, flush_finished(5, T0 + 30, T0), batch(), comp_start, created(6, 22, T0 + 1500, reason="compaction"),
         comp_end, deleted(6, 20, T0 + 2100, created_micros=T0 + 10))
    assert not otel.finished("rocksdb.compaction"), "the span must stay open until the batch is delivered"
    feed(L, batch())
    (comp,) = otel.finished("rocksdb.compaction")
    assert comp.end_time == (T0 + 2000) * 1000 and comp.start_time == (T0 + 1000) * 1000
    assert [e.name for e in comp.events] == ["rocksdb.blob_file.created", "rocksdb.blob_file.deleted"]
    sa = comp.attributes
    assert sa["rocksdb.compaction.reason"] == "ForcedBlobGC"
    assert sa["rocksdb.compaction.files_L0"] == (3, 4)
    assert sa["rocksdb.compaction.output_level"] == 6
    assert sa["rocksdb.compaction.num_blob_output_files"] == 1
    assert sa["rocksdb.compaction.total_blob_output_size"] == 777
    assert sa["rocksdb.compaction.table_properties.data_size"] == 5
    assert not any(k.startswith("rocksdb.compaction.table_properties.deep") for k in sa)
    # a deletion of job 6 in a later batch: the record carries the ended span's context
    feed(L, deleted(6, 21, T0 + 3000, created_micros=T0 + 20))
    recs = otel.records()
    late = recs[-1]
    assert late.span_id == comp.context.span_id and late.trace_id == comp.context.trace_id
    assert len(otel.finished("rocksdb.compaction")[0].events) == 2
    in_batch = [r for r in recs if r.attributes["rocksdb.blob_file.number"] == 20 and r.event_name.endswith("deleted")][0]
    assert in_batch.span_id == comp.context.span_id
    assert in_batch.attributes["rocksdb.blob_file.lifetime_s"] == pytest.approx(2090 / 1e6)
    assert otel.hist_count("rocksdb.blob_file.lifetime") == 2


def test_job_zero_and_unknown_job_have_no_span_context_even_inside_an_app_span(otel):
    L = otel.listener()
    tracer = otel.tp.get_tracer("app")
    with tracer.start_as_current_span("app-work"):  # e.g. w.stop() called inside a span
        feed(L, created(3, 9, T0), deleted(0, 9, T0 + 5))
    for rec in otel.records():
        assert rec.trace_id == 0 and rec.span_id == 0, rec.body
    assert not otel.finished("rocksdb.flush")


def test_unfinished_job_ends_with_error_at_watch_stop(otel):
    L = otel.listener()
    feed(L, flush_started(7, T0), created(7, 30, T0 + 40), batch())
    assert not otel.finished()
    feed(L, WatchInfo(DB, DB + "/LOG", stopped=True))
    (span,) = otel.finished("rocksdb.flush")
    assert span.status.status_code == StatusCode.ERROR and span.status.description == "unfinished"
    assert span.end_time == (T0 + 40) * 1000  # the last RocksDB time seen
    assert L.stats.spans_unfinished == 1


def test_kinds_blob_vs_all(otel):
    blob = otel.listener(kinds="blob")
    table_c = TableFileCreationInfo(8, DB, "default", DB + "/000031.sst", 31, 2000, "flush", "OK", T0 + 5, SID, 30)
    table_d = TableFileDeletionInfo(8, DB, DB + "/000012.sst", 12, "OK", T0 + 60, SID)
    seq = [flush_started(8, T0), created(8, 30, T0 + 2), table_c, flush_finished(8, T0 + 50, T0), table_d, batch(),
           flush_started(9, T0 + 100), flush_finished(9, T0 + 150, T0 + 100), batch()]
    feed(blob, *seq)
    spans = otel.finished("rocksdb.flush")
    assert [s.attributes["rocksdb.job.id"] for s in spans] == [8], "blob mode: only jobs with blob files"
    assert [e.name for e in spans[0].events] == ["rocksdb.blob_file.created"]
    assert spans[0].start_time == T0 * 1000
    other = Otel()
    feed(other.listener(kinds="all"), *seq)
    spans = other.finished("rocksdb.flush")
    assert [s.attributes["rocksdb.job.id"] for s in spans] == [8, 9]
    assert [e.name for e in spans[0].events] == [
        "rocksdb.blob_file.created", "rocksdb.table_file.created", "rocksdb.table_file.deleted"]
    tc = dict(spans[0].events[1].attributes)
    assert tc["rocksdb.table_file.number"] == 31 and tc["rocksdb.table_file.oldest_blob_file_number"] == 30
    assert tc["file.size"] == 2000 and tc["rocksdb.event"] == "rocksdb.table_file.created"


def test_manual_operation_parents_the_job_span(otel):
    L = otel.listener(kinds="all")
    tracer = otel.tp.get_tracer("app")
    with tracer.start_as_current_span("rocksdict.flush") as app:
        op = L.manual_operation(DB, "flush", otel_context.get_current())
        t = time.time_ns() // 1000
        op.done()
    feed(L, flush_started(11, t, reason="Manual Flush"),
         flush_started(12, t, reason="Write Buffer Full"),  # same time, not manual: no parent
         flush_started(13, op.end_us + 10_000_000, reason="Manual Flush"),  # too late: no parent
         FlushJobInfo(14, "/other/db", "default", SID, t, "Manual Flush", False, t, {}),  # other DB
         WatchInfo(DB, DB + "/LOG", stopped=True), WatchInfo("/other/db", "x", stopped=True))
    by_job = {s.attributes["rocksdb.job.id"]: s for s in otel.finished("rocksdb.flush")}
    assert by_job[11].parent is not None and by_job[11].parent.span_id == app.context.span_id
    assert by_job[11].context.trace_id == app.context.trace_id
    for j in (12, 13, 14):
        assert by_job[j].parent is None and by_job[j].context.trace_id != app.context.trace_id
    assert L.stats.manual_parents == 1


def test_manual_compact_range_parents_flush_and_compaction(otel):
    L = otel.listener(kinds="all")
    tracer = otel.tp.get_tracer("app")
    with tracer.start_as_current_span("rocksdict.compact_range") as app:
        with L.manual_operation(DB, "compact_range", otel_context.get_current()):
            t = time.time_ns() // 1000
    feed(L, flush_started(1, t, reason="Manual Compaction"),
         CompactionJobInfo(2, DB, "default", SID, t + 1, "ManualCompaction", False, t + 1, {}),
         flush_started(3, t + 2, reason="Manual Flush"),  # a flush op's reason: not this op
         WatchInfo(DB, DB + "/LOG", stopped=True))
    spans = {s.attributes["rocksdb.job.id"]: s for s in otel.finished() if s.name.startswith("rocksdb.")}
    assert spans[1].parent.span_id == app.context.span_id
    assert spans[2].parent.span_id == app.context.span_id
    assert spans[3].parent is None


def test_manual_operations_are_bounded(otel):
    L = otel.listener()
    for _ in range(1000):
        L.manual_operation(DB, "flush", otel_context.get_current()).done()
    assert L.pending_operations() <= 256


def test_metrics_follow_the_events(otel):
    L = otel.listener()
    feed(L, WatchInfo(DB, DB + "/LOG", existing_blob_files={1: 100, 2: 200, 3: None}),
         created(0, 4, T0, size=400),
         created(0, 2, T0 + 1, size=200),   # already counted at start: not live twice
         created(0, 5, T0 + 2, size=None),
         deleted(0, 1, T0 + 10, size=100),
         deleted(0, 4, T0 + 20, size=400, created_micros=T0),
         deleted(0, 2, T0 + 30, status="IO error: gone"),  # failed: still live
         deleted(0, 99, T0 + 40, size=None),  # never seen: counted deleted, live unchanged
         batch())  # counters reach the SDK once per batch
    assert otel.total("rocksdb.blob_file.created") == 3
    assert otel.total("rocksdb.blob_file.created.bytes") == 600
    assert otel.total("rocksdb.blob_file.deleted") == 3
    assert otel.total("rocksdb.blob_file.deleted.bytes") == 500
    # live = existing {1,2,3} + created {4,5} - deleted {1,4}
    assert otel.total("rocksdb.blob_file.live") == 3
    assert otel.total("rocksdb.blob_file.live.bytes") == 200
    assert otel.hist_count("rocksdb.blob_file.size") == 2
    assert otel.hist_count("rocksdb.blob_file.lifetime") == 1
    (lt,) = otel.metrics()["rocksdb.blob_file.lifetime"]
    assert lt[1].sum == pytest.approx(20 / 1e6)
    m = otel.metrics()
    assert {frozenset(a) for a, _ in m["rocksdb.blob_file.created"]} == {
        frozenset({"rocksdb.db.path", "rocksdb.column_family", "rocksdb.blob_file.reason"})}
    for name, points in m.items():
        for attrs, _ in points:
            assert "rocksdb.blob_file.number" not in attrs, name
    assert otel.hist_count("otel_blob.export.lag") == 7
    # a second watch of the same DB reconciles with the directory instead of adding again
    feed(L, WatchInfo(DB, DB + "/LOG", existing_blob_files={2: 200, 3: None, 5: None, 6: 60}))
    assert otel.total("rocksdb.blob_file.live") == 4
    assert otel.total("rocksdb.blob_file.live.bytes") == 260



def test_no_lag_histogram_for_a_replay(otel):
    # A replay's events are history: observed minus event time would be their age.
    L = otel.listener(lag_metric=False)
    feed(L, created(0, 4, T0, size=400), deleted(0, 4, T0 + 20, size=400, created_micros=T0), batch())
    assert otel.hist_count("otel_blob.export.lag") == 0
    assert otel.hist_count("rocksdb.blob_file.size") == 1 and otel.hist_count("rocksdb.blob_file.lifetime") == 1
    assert len(otel.records()) == 2

def _points(o: Otel) -> dict[tuple[str, frozenset], Any]:
    """Every data point by (metric, attributes): sums, or histogram count/sum/min/max/buckets (lag: count)."""
    out: dict[tuple[str, frozenset], Any] = {}
    for name, points in o.metrics().items():
        for attrs, dp in points:
            if hasattr(dp, "bucket_counts"):
                out[name, frozenset(attrs.items())] = (
                    dp.count if name == "otel_blob.export.lag" else (dp.count, dp.sum, dp.min, dp.max, tuple(dp.bucket_counts)))
            else:
                out[name, frozenset(attrs.items())] = dp.value
    return out


OTHER = "/data/db2"
THIRD = "/data/db3"


def _mixed_batches() -> list[list[Any]]:
    """Two DBs, several reasons, files made and removed within one batch, failures, unknown sizes."""
    def c(n: int, t: int, **kw: Any) -> Any:
        return created(0, n, T0 + t, **kw)

    def d(n: int, t: int, **kw: Any) -> Any:
        return deleted(0, n, T0 + t, **kw)

    return [
        [c(4, 1, size=400), c(5, 2, size=500, reason="compaction"), c(6, 3, size=None), d(4, 4, size=400),
         c(7, 5, size=70, db=OTHER), d(1, 6, size=100), c(8, 7, status="IO error: disk full")],
        [d(5, 10, size=None), d(6, 11, size=60), d(7, 12, size=70, db=OTHER), c(9, 13, size=900, reason="recovery"),
         d(2, 14, status="IO error: gone"), c(10, 15, size=1000, db=OTHER), d(10, 16, size=1000, db=OTHER),
         c(11, 17, size=10, db=THIRD), d(11, 18, size=10, db=THIRD)],
    ]


def _start(L: TelemetryListener) -> None:
    feed(L, WatchInfo(DB, DB + "/LOG", existing_blob_files={1: 100, 2: 200, 3: None}),
         WatchInfo(OTHER, OTHER + "/LOG", existing_blob_files={}))


def test_batched_metric_sums_equal_one_add_per_event():
    batched, per_event = Otel(), Otel()
    L, R = batched.listener(), per_event.listener()
    _start(L)
    _start(R)
    for events in _mixed_batches():
        for info in events:
            feed(L, info)
            feed(R, info)
            R.flush_metrics()  # the reference: every event's sums reach the SDK at once
        feed(L, batch(), batch(OTHER), batch(THIRD))
        feed(R, batch(), batch(OTHER), batch(THIRD))
        # After every batch: the same data points, the same sums and histograms.
        assert _points(batched) == _points(per_event)
    assert L.stats.dropped == 0
    p = _points(batched)
    own = frozenset({("rocksdb.db.path", DB), ("rocksdb.column_family", "default")})
    other = frozenset({("rocksdb.db.path", OTHER), ("rocksdb.column_family", "default")})
    flush = own | {("rocksdb.blob_file.reason", "flush")}
    assert p["rocksdb.blob_file.created", flush] == 2  # 4, 6 (8 failed)
    assert p["rocksdb.blob_file.created.bytes", flush] == 400
    assert p["rocksdb.blob_file.created", own | {("rocksdb.blob_file.reason", "compaction")}] == 1
    assert p["rocksdb.blob_file.deleted", own] == 4  # 4, 1, 5, 6 (2 failed)
    assert p["rocksdb.blob_file.deleted.bytes", own] == 400 + 100 + 500 + 60
    # live: found at start {1,2,3} (no cf) - {1}; created {4,5,6,9} - {4,5,6}
    start = frozenset({("rocksdb.db.path", DB)})
    assert p["rocksdb.blob_file.live", start] == 2 and p["rocksdb.blob_file.live.bytes", start] == 200
    assert p["rocksdb.blob_file.live", own] == 1 and p["rocksdb.blob_file.live.bytes", own] == 900
    # OTHER: 7 and 10 made and removed; THIRD: 11 made and removed within one batch: the points exist, at 0
    assert p["rocksdb.blob_file.live", other] == 0 and p["rocksdb.blob_file.live.bytes", other] == 0
    third = frozenset({("rocksdb.db.path", THIRD), ("rocksdb.column_family", "default")})
    assert p["rocksdb.blob_file.live", third] == 0 and p["rocksdb.blob_file.live.bytes", third] == 0
    assert p["rocksdb.blob_file.deleted.bytes", other] == 1070
    assert p["rocksdb.blob_file.size", flush][0] == 1
    assert p["otel_blob.export.lag", start] == 10


def test_nothing_is_lost_when_a_watch_stops_mid_batch(otel):
    L = otel.listener()
    _start(L)
    first, second = _mixed_batches()
    feed(L, *first, batch(), batch(OTHER), *second)  # the second batch's BatchInfo never comes
    feed(L, WatchInfo(DB, DB + "/LOG", stopped=True))
    p = _points(otel)
    own = frozenset({("rocksdb.db.path", DB), ("rocksdb.column_family", "default")})
    assert p["rocksdb.blob_file.deleted", own] == 4
    assert p["rocksdb.blob_file.deleted.bytes", own] == 1060
    assert p["rocksdb.blob_file.created", own | {("rocksdb.blob_file.reason", "recovery")}] == 1
    assert p["rocksdb.blob_file.live", own] == 1 and p["rocksdb.blob_file.live.bytes", own] == 900
    # the other DB's watch still runs: its sums wait for its batch, its stop or flush_metrics()
    other = frozenset({("rocksdb.db.path", OTHER), ("rocksdb.column_family", "default")})
    L.flush_metrics()
    p = _points(otel)
    assert p["rocksdb.blob_file.deleted.bytes", other] == 1070
    assert p["rocksdb.blob_file.created", other | {("rocksdb.blob_file.reason", "flush")}] == 2
    assert p["rocksdb.blob_file.live", other] == 0
    # nothing pending: neither another flush nor the stop adds anything
    L.flush_metrics()
    feed(L, WatchInfo(OTHER, OTHER + "/LOG", stopped=True))
    assert _points(otel) == p
    assert L.stats.dropped == 0


def test_skipped_lines_are_counted(otel):
    L = otel.listener()
    feed(L, LineSkippedInfo(DB, "malformed_json", "x"), LineSkippedInfo(DB, "malformed_json", "y"),
         LineSkippedInfo(DB, "line_too_long", "z"))
    points = {a["reason"]: dp.value for a, dp in otel.metrics()["otel_blob.lines.skipped"]}
    assert points == {"malformed_json": 2, "line_too_long": 1}


@pytest.mark.parametrize("mode", ["hash", "none"])
def test_file_paths_leave_no_path_anywhere(otel, mode):
    L = otel.listener(file_paths=mode, kinds="all")
    err = f"IO error: while unlink() file: {DB}/000009.blob: No such file or directory"
    feed(L, WatchInfo(DB, DB + "/LOG", existing_blob_files={9: 10}), flush_started(4, T0), created(4, 10, T0 + 1),
         TableFileCreationInfo(4, DB, "default", DB + "/000011.sst", 11, 2000, "flush", "OK", T0 + 2, SID),
         flush_finished(4, T0 + 3, T0), deleted(4, 10, T0 + 4), deleted(0, 9, T0 + 5, status=err), batch(),
         LineSkippedInfo(DB, "malformed_json", "x"))
    texts: list[str] = []
    recs = otel.records()
    assert len(recs) == 3
    for r in recs:
        texts.append(r.body)
        texts.extend(str(v) for v in r.attributes.values())
        assert r.attributes["file.name"].endswith(".blob")
    spans = otel.finished()
    assert spans
    for s in spans:
        texts.extend(str(v) for v in s.attributes.values())
        for e in s.events:
            texts.extend(str(v) for v in e.attributes.values())
    for points in otel.metrics().values():
        for attrs, _ in points:
            texts.extend(str(v) for v in attrs.values())
    leaks = [t for t in texts if "/data" in t or "db1" in t]
    assert not leaks
    if mode == "hash":
        assert recs[0].attributes["file.path"] == hash_path(DB + "/000010.blob")
        assert recs[0].attributes["rocksdb.db.path"] == hash_path(DB)
        assert len(hash_path(DB)) == 16
    else:
        assert all("file.path" not in r.attributes and "rocksdb.db.path" not in r.attributes for r in recs)


def test_garbage_never_raises(otel):
    L = otel.listener()
    garbage = [
        BlobFileCreationInfo(None, None, None, None, None, None, None, None, None, None, None, None, None, None),
        BlobFileDeletionInfo(None, None, None, None, None, None, None),
        BlobFileCreationInfo(1, DB, None, None, "x", None, "n", None, None, None, "OK", "big", "t", None),
        FlushJobInfo(None, None, None, None, None, None, False),
        FlushJobInfo(3, DB, None, None, "t", None, True, None, None),
        CompactionJobInfo(2, DB, None, None, None, None, False, None, {"a": [1, "x"], "b": 1 << 70, "c": None}),
        WatchInfo(None, None, existing_blob_files=None),
        WatchInfo(DB, "x", existing_blob_files={"a": "b"}),
        BatchInfo(None, 0, 0),
        LineSkippedInfo(None, None, None),
        TableFileCreationInfo(None, None, None, None, None, None, None, None, None, None),
    ]
    for info in garbage:
        getattr(L, otel_blob.decode.callback_of(info))(info)  # must not raise
    for info in garbage:
        assert deliver(L, info)
    assert L.stats.callback_errors > 0 and L.stats.dropped == L.stats.callback_errors
    assert otel.total("otel_blob.events.dropped") == L.stats.dropped
    # and it still works afterwards
    feed(L, created(0, 50, T0))
    assert otel.records()[-1].attributes["rocksdb.blob_file.number"] == 50


def test_details_attributes_only_otel_types():
    out = details_attributes("compaction", {
        "files_L0": [1, 2], "files_L1": [], "mixed": [1, "a"], "nested_list": [[1]], "big": 1 << 64,
        "neg": -1, "f": 1.5, "b": True, "s": "x", "none": None, "compaction_reason": "X",
        "props": {"a": 1, "deep": {"b": 2}, "l": ["x", "y"]}, "lsm_state": [0, 1],
    }, {})
    assert out == {
        "rocksdb.compaction.files_L0": [1, 2], "rocksdb.compaction.neg": -1, "rocksdb.compaction.f": 1.5,
        "rocksdb.compaction.b": True, "rocksdb.compaction.s": "x", "rocksdb.compaction.props.a": 1,
        "rocksdb.compaction.props.l": ["x", "y"], "rocksdb.job.lsm_state": [0, 1],
    }


def test_path_attr_follows_file_paths(otel):
    assert otel.listener().path_attr(DB) == DB
    assert otel.listener(file_paths="hash").path_attr(DB) == hash_path(DB)
    assert otel.listener(file_paths="none").path_attr(DB) is None


def test_invalid_options_are_refused(otel):
    for kw in ({"severity": "loud"}, {"kinds": "some"}, {"file_paths": "short"}):
        with pytest.raises(ValueError):
            otel.listener(**kw)


# -- real databases ----------------------------------------------------------------


def _workload(path: str, listener: Any, manual_tracer: Any = None, telemetry: TelemetryListener | None = None) -> tuple[Recorder, Any]:
    rec = Recorder()
    db = rocksdict.Rdict(path, blob_options(gc=True))
    w = otel_blob.watch(db, [rec, listener])
    app_spans = []
    for _ in range(4):
        write_round(db)
        if manual_tracer is not None:
            with manual_tracer.start_as_current_span("rocksdict.flush") as s:
                with telemetry.manual_operation(path, "flush", otel_context.get_current()):
                    db.flush()
            app_spans.append(s)
        else:
            db.flush()
    if manual_tracer is not None:
        with manual_tracer.start_as_current_span("rocksdict.compact_range") as s:
            with telemetry.manual_operation(path, "compact_range", otel_context.get_current()):
                db.compact_range(None, None)
        app_spans.append(s)
    else:
        db.compact_range(None, None)
    quiesce(db)
    db.close()
    w.stop()
    return rec, app_spans


def test_real_workload(otel, tmp_path):
    path = str(tmp_path / "db")
    os.mkdir(path)
    L = otel.listener(kinds="all")
    rec, _ = _workload(path, L)
    assert L.stats.dropped == 0
    created_ok = [e for e in rec.created if e.ok]
    deleted_ok = [e for e in rec.deleted if e.ok]
    assert created_ok and deleted_ok, "the workload made and removed no blob files: the test proves nothing"
    recs = otel.records()
    assert len(recs) == len(rec.created) + len(rec.deleted)
    spans = {s.context.span_id: s for s in otel.finished()}
    jobs = {(s.attributes["rocksdb.job.id"]): s for s in spans.values()}
    assert {s.name for s in spans.values()} >= {"rocksdb.flush", "rocksdb.compaction"}
    blob_events = [x for x in rec.events if type(x) in (BlobFileCreationInfo, BlobFileDeletionInfo)]
    for r, e in zip(recs, blob_events):
        assert r.attributes["rocksdb.blob_file.number"] == e.file_number
        assert r.timestamp == e.time_micros * 1000
        assert r.attributes["rocksdb.event"] == r.event_name
        assert r.attributes["rocksdb.db.path"] == path and r.attributes["rocksdb.db.session_id"] == e.session_id
        if e.job_id and e.job_id in jobs:
            span = jobs[e.job_id]
            assert r.span_id == span.context.span_id and r.trace_id == span.context.trace_id
            assert span.start_time <= r.timestamp
        elif e.job_id == 0:
            assert r.span_id == 0
    # every creation is a span event of the job that made it
    for e in rec.created:
        span = jobs[e.job_id]
        assert any(ev.name == "rocksdb.blob_file.created" and ev.attributes["rocksdb.blob_file.number"] == e.file_number
                   for ev in span.events)
    # span times are RocksDB's
    for info in rec.events:
        if isinstance(info, (FlushJobInfo, CompactionJobInfo)) and info.finished:
            span = jobs[info.job_id]
            assert span.end_time == info.time_micros * 1000 and span.start_time == info.start_micros * 1000
    comp = [s for s in spans.values() if s.name == "rocksdb.compaction" and "rocksdb.compaction.num_blob_output_files" in s.attributes]
    assert comp and all(isinstance(s.attributes["rocksdb.compaction.reason"], str) for s in comp)
    # metrics agree with the events
    assert otel.total("rocksdb.blob_file.created") == len(created_ok)
    assert otel.total("rocksdb.blob_file.deleted") == len(deleted_ok)
    assert otel.total("rocksdb.blob_file.created.bytes") == sum(e.file_size or 0 for e in created_ok)
    assert otel.total("rocksdb.blob_file.deleted.bytes") == sum(e.file_size or 0 for e in deleted_ok)
    live = {e.file_number for e in created_ok} - {e.file_number for e in deleted_ok}
    assert otel.total("rocksdb.blob_file.live") == len(live) == len([n for n in os.listdir(path) if n.endswith(".blob")])
    assert otel.hist_count("rocksdb.blob_file.lifetime") == len([e for e in deleted_ok if e.created_micros])


def test_real_manual_operations_are_parents(otel, tmp_path):
    path = str(tmp_path / "db")
    os.mkdir(path)
    L = otel.listener(kinds="all")
    tracer = otel.tp.get_tracer("app")
    rec, app_spans = _workload(path, L, manual_tracer=tracer, telemetry=L)
    manual = [s for s in otel.finished() if s.name in ("rocksdb.flush", "rocksdb.compaction")
              and (s.attributes.get("rocksdb.flush.reason") in ("Manual Flush", "Manual Compaction")
                   or s.attributes.get("rocksdb.compaction.reason") == "ManualCompaction")]
    flushes = [s for s in manual if s.attributes.get("rocksdb.flush.reason") == "Manual Flush"]
    assert len(flushes) == 4
    app_ids = {s.context.span_id: s for s in app_spans}
    for s in manual:
        assert s.parent is not None and s.parent.span_id in app_ids, s.attributes
        assert s.context.trace_id == app_ids[s.parent.span_id].context.trace_id
    assert {app_ids[s.parent.span_id].name for s in flushes} == {"rocksdict.flush"}
    assert L.stats.manual_parents == len(manual)


def test_deterministic_ids_for_replays(tmp_path):
    path = str(tmp_path / "db")
    lines = blob_history(path)

    def replay(db_name: str) -> tuple[list[tuple[int, int, str]], list[tuple[int, int, str]]]:
        o = Otel(id_generator=DeterministicIdGenerator())
        L = o.listener(kinds="all")
        deliver(L, WatchInfo(db_name, "LOG"))
        for info in LogDecoder(db_name).feed_lines(lines):
            deliver(L, info)
        deliver(L, BatchInfo(db_name, len(lines), 0))
        deliver(L, WatchInfo(db_name, "LOG", stopped=True))
        spans = sorted((s.context.trace_id, s.context.span_id, s.name) for s in o.finished())
        recs = [(r.trace_id, r.span_id, r.body) for r in o.records()]
        return spans, recs

    a, b = replay(path), replay(path)
    assert a[0] and a[1]
    assert a == b
    c = replay(path + "-elsewhere")
    assert {x[1] for x in c[0]}.isdisjoint({x[1] for x in a[0]})
    # no seed: random ids
    gen = DeterministicIdGenerator()
    assert gen.generate_span_id() != gen.generate_span_id()

"""The tests' OTLP receiver (tests/otlp_receiver.py), lightened for benchmarks.

The test receiver keeps every request and re-serialises it (for its raw-body
view): over a benchmark that is hundreds of MB and CPU stolen from the workers.
These subclasses decode the same gRPC requests with the same protobuf messages
but keep only what the benchmark needs:

* :class:`CountingReceiver` -- blob file log records, spans and span events per ``service.name``;
* :class:`LagReceiver` -- per blob file log record: service, event name, file number,
  ``time_unix_nano``, ``observed_time_unix_nano`` (and a client-side arrival time).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from otlp_receiver import OtlpReceiver, _MESSAGES  # noqa: E402

BLOB_EVENTS = ("rocksdb.blob_file.created", "rocksdb.blob_file.deleted")


def _service(resource: Any) -> str:
    for kv in resource.attributes:
        if kv.key == "service.name":
            return kv.value.string_value
    return ""


def _int_attr(attrs: Any, key: str) -> int | None:
    for kv in attrs:
        if kv.key == key:
            return kv.value.int_value
    return None


class _LightReceiver(OtlpReceiver):
    def __init__(self) -> None:
        super().__init__()
        self._stats_lock = threading.Lock()
        self.requests_seen: Counter[str] = Counter()

    def _handle_grpc(self, signal: str, request: Any, context: Any) -> Any:  # type: ignore[override]
        with self._stats_lock:
            self.requests_seen[signal] += 1
            if signal == "logs":
                self._on_logs(request)
            elif signal == "traces":
                self._on_traces(request)
        with self._changed:
            self._changed.notify_all()
        return _MESSAGES[signal][1]()  # type: ignore[index]

    def _on_logs(self, request: Any) -> None:
        pass

    def _on_traces(self, request: Any) -> None:
        pass


class CountingReceiver(_LightReceiver):
    def __init__(self) -> None:
        super().__init__()
        self.blob_records: Counter[str] = Counter()  # service -> blob file log records
        # service -> (event name, file number) -> records: what was missed or repeated, by file
        self.blob_files: dict[str, Counter[tuple[str, int | None]]] = {}
        self.spans: Counter[str] = Counter()
        self.span_events: Counter[str] = Counter()

    def _on_logs(self, request: Any) -> None:
        for rl in request.resource_logs:
            svc = _service(rl.resource)
            n = 0
            files = self.blob_files.setdefault(svc, Counter())
            for sl in rl.scope_logs:
                for lr in sl.log_records:
                    if lr.event_name in BLOB_EVENTS:
                        n += 1
                        files[(lr.event_name, _int_attr(lr.attributes, "rocksdb.blob_file.number"))] += 1
            self.blob_records[svc] += n

    def _on_traces(self, request: Any) -> None:
        for rs in request.resource_spans:
            svc = _service(rs.resource)
            for ss in rs.scope_spans:
                self.spans[svc] += len(ss.spans)
                self.span_events[svc] += sum(len(s.events) for s in ss.spans)

    def count(self, service: str) -> int:
        with self._stats_lock:
            return self.blob_records[service]

    def files(self, service: str) -> Counter[tuple[str, int | None]]:
        with self._stats_lock:
            return Counter(self.blob_files.get(service, ()))


class LagReceiver(_LightReceiver):
    def __init__(self) -> None:
        super().__init__()
        # service -> list of (event_name, file number, time_unix_nano, observed_time_unix_nano, arrival ns)
        self.records: dict[str, list[tuple[str, int | None, int, int, int]]] = {}

    def _on_logs(self, request: Any) -> None:
        now = time.time_ns()
        for rl in request.resource_logs:
            out = self.records.setdefault(_service(rl.resource), [])
            for sl in rl.scope_logs:
                for lr in sl.log_records:
                    if lr.event_name in BLOB_EVENTS:
                        out.append((lr.event_name, _int_attr(lr.attributes, "rocksdb.blob_file.number"),
                                    lr.time_unix_nano, lr.observed_time_unix_nano, now))

    def take(self, service: str) -> list[tuple[str, int | None, int, int, int]]:
        with self._stats_lock:
            return list(self.records.get(service, ()))

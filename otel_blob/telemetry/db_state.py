"""DbState: everything a TelemetryListener knows of one DB, the parts side by side.

One per DB name the listener was told of. It is touched only by the callbacks of
that DB's watch -- except its metric sums, which ``flush_metrics()`` may hand to
the SDK from any thread (they have their own lock).
"""

from __future__ import annotations

from typing import Any

from .live import LiveFiles
from .metrics import DbMetrics
from .spans import OpenJobs

__all__ = ["DbState"]


class DbState:
    """One DB: its open jobs, metric sums, counted live files and the latest RocksDB time seen."""

    __slots__ = ("name", "display", "last_ns", "jobs", "metrics", "live", "_lag")

    def __init__(self, name: str, display: str | None, lag: Any) -> None:
        self.name = name
        self.display = display  # rocksdb.db.path as exported (path, hash or None)
        self.last_ns: int | None = None  # the latest RocksDB time seen: where an unfinished job's span ends
        self.jobs = OpenJobs()
        self.metrics = DbMetrics(display)
        self.live = LiveFiles()
        self._lag = lag  # the otel_blob.export.lag histogram, or None (a replay: lag would be the history's age)

    def seen(self, event_ns: int | None, observed_ns: int) -> None:
        """An event of RocksDB time ``event_ns`` (None: unknown) was read at ``observed_ns``."""
        if event_ns is not None:
            if self.last_ns is None or event_ns > self.last_ns:
                self.last_ns = event_ns
            if self._lag is not None:
                lag = (observed_ns - event_ns) / 1e9
                self._lag.record(lag if lag > 0 else 0.0, self.metrics.db_attrs)

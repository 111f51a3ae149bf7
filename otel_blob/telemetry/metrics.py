"""The listener's instruments, and the counter sums it hands to the SDK once per batch.

Metric cost: an SDK ``add()`` takes a lock and hashes the attributes, and a batch of
RocksDB's LOG holds thousands of blob events over a handful of attribute sets. So
counters and up-down counters are summed per (instrument, attribute set) in
:class:`DbMetrics` while a batch is delivered and handed to the SDK with one
``add()`` each when the batch ends (``on_batch_delivered``), when a watch starts or
stops, or on ``TelemetryListener.flush_metrics()``; histograms still record every
value. What a collection exports after a batch is what one ``add()`` per event
gives; a collection in the middle of a batch sees that batch later.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

__all__ = ["DbMetrics", "Instruments"]

_SIZE_BUCKETS = [float(1 << n) for n in range(10, 34, 2)]  # 1 KiB .. 8 GiB, x4
_LIFETIME_BUCKETS = [1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200, 21600, 43200, 86400, 259200, 604800, 2592000]
_LAG_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]


class Instruments:
    """Every instrument of a listener (docs/telemetry.md "Metrics"), made in this order."""

    __slots__ = ("created", "deleted", "created_bytes", "deleted_bytes", "live", "live_bytes",
                 "size", "lifetime", "skipped", "dropped", "lag")

    def __init__(self, meter: Any) -> None:
        self.created = meter.create_counter("rocksdb.blob_file.created", "{file}", "Blob files created")
        self.deleted = meter.create_counter("rocksdb.blob_file.deleted", "{file}", "Blob files deleted")
        self.created_bytes = meter.create_counter("rocksdb.blob_file.created.bytes", "By", "Bytes of blob files created")
        self.deleted_bytes = meter.create_counter("rocksdb.blob_file.deleted.bytes", "By", "Bytes of blob files deleted")
        self.live = meter.create_up_down_counter("rocksdb.blob_file.live", "{file}", "Blob files present")
        self.live_bytes = meter.create_up_down_counter("rocksdb.blob_file.live.bytes", "By", "Bytes of blob files present")
        self.size = meter.create_histogram(
            "rocksdb.blob_file.size", "By", "Size of created blob files", explicit_bucket_boundaries_advisory=_SIZE_BUCKETS
        )
        self.lifetime = meter.create_histogram(
            "rocksdb.blob_file.lifetime", "s", "Blob file lifetime, creation to deletion",
            explicit_bucket_boundaries_advisory=_LIFETIME_BUCKETS,
        )
        self.skipped = meter.create_counter("otel_blob.lines.skipped", "{line}", "LOG lines or files that could not be used")
        self.dropped = meter.create_counter("otel_blob.events.dropped", "{event}", "Events lost by the telemetry listener")
        self.lag = meter.create_histogram(
            "otel_blob.export.lag", "s", "Observed time minus RocksDB event time",
            explicit_bucket_boundaries_advisory=_LAG_BUCKETS,
        )


class _Sums:
    """The sums of one attribute set not yet added. None: not touched since the last
    flush -- so a batch whose +1 and -1 cancel still adds 0, and the data point exists
    as it would with one ``add()`` per event."""

    __slots__ = ("attrs", "created", "created_bytes", "deleted", "deleted_bytes", "live", "live_bytes")

    def __init__(self, attrs: dict[str, Any]) -> None:
        self.attrs = attrs
        self.created: int | None = None
        self.created_bytes: int | None = None
        self.deleted: int | None = None
        self.deleted_bytes: int | None = None
        self.live: int | None = None
        self.live_bytes: int | None = None


class DbMetrics:
    """One DB's metric attribute sets and the counter sums not yet handed to the SDK.

    The attribute dicts are made once per (column family, reason) and reused: the
    pending sums are keyed by their identity (a row keeps its dict alive). Callbacks
    add from the DB's watch; :meth:`flush` may run on another thread
    (``flush_metrics()``): the sums have a lock.
    """

    __slots__ = ("db_attrs", "_attr_sets", "_pending", "_lock")

    def __init__(self, db_shown: str | None) -> None:
        self.db_attrs: dict[str, Any] = {} if db_shown is None else {"rocksdb.db.path": db_shown}
        self._attr_sets: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._pending: dict[int, _Sums] = {}
        self._lock = threading.Lock()

    def renew_lock(self) -> None:
        """A new lock (in a forked child: the parent's may be held by a thread that is gone)."""
        self._lock = threading.Lock()

    def attributes(self, cf: str | None, reason: str | None) -> dict[str, Any]:
        """The attribute set of the DB, ``cf`` and ``reason`` (None: left out): one dict per set."""
        key = (cf, reason)
        attrs = self._attr_sets.get(key)
        if attrs is None:
            attrs = dict(self.db_attrs)
            if cf is not None:
                attrs["rocksdb.column_family"] = cf
            if reason is not None:
                attrs["rocksdb.blob_file.reason"] = reason
            self._attr_sets[key] = attrs
        return attrs

    def _sums(self, attrs: dict[str, Any]) -> _Sums:
        # the caller holds the lock
        row = self._pending.get(id(attrs))
        if row is None:
            row = self._pending[id(attrs)] = _Sums(attrs)
        return row

    def created(self, attrs: dict[str, Any], size: Any) -> None:
        """A blob file created (``size``: its bytes, if an int)."""
        self._add(attrs, "created", "created_bytes", 1, size)

    def deleted(self, attrs: dict[str, Any], size: Any) -> None:
        """A blob file deleted (``size``: its bytes, if an int)."""
        self._add(attrs, "deleted", "deleted_bytes", 1, size)

    def live(self, attrs: dict[str, Any], files: int | None, nbytes: int | None) -> None:
        """Add ``files`` to the live files and ``nbytes`` to the live bytes (None: untouched)."""
        self._add(attrs, "live", "live_bytes", files, nbytes)

    def _add(self, attrs: dict[str, Any], files_sum: str, bytes_sum: str, files: int | None, nbytes: Any) -> None:
        # A sum stays None (no point reported) until something is added; bytes only if an int
        # (an unknown size is not 0 bytes).
        with self._lock:
            row = self._sums(attrs)
            if files is not None:
                before = getattr(row, files_sum)
                setattr(row, files_sum, files if before is None else before + files)
            if type(nbytes) is int:
                before = getattr(row, bytes_sum)
                setattr(row, bytes_sum, nbytes if before is None else before + nbytes)

    def flush(self, instruments: Instruments, failed: Callable[[str], None]) -> None:
        """One ``add()`` per pending (instrument, attribute set) sum; never raises (``failed`` counts)."""
        if not self._pending:
            return
        with self._lock:
            pending, self._pending = self._pending, {}
        ins = instruments
        for row in pending.values():
            attrs = row.attrs
            for instrument, total in ((ins.created, row.created), (ins.created_bytes, row.created_bytes),
                                      (ins.deleted, row.deleted), (ins.deleted_bytes, row.deleted_bytes),
                                      (ins.live, row.live), (ins.live_bytes, row.live_bytes)):
                if total is not None:
                    try:
                        instrument.add(total, attrs)
                    except Exception:
                        failed("flush_metrics")

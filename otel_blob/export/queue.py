"""Span and log record processors that never drop silently: sized, retrying, with backpressure.

The SDK's ``BatchSpanProcessor`` / ``BatchLogRecordProcessor`` hold 2,048 items and
drop the oldest when full; their exporter gives a batch up after ~10 s of retries.
For a LOG follower that is the wrong trade: the LOG on disk already *is* a durable
buffer, so the right answer to a slow or absent Collector is to stop reading the
LOG until the exporter has caught up, not to read on and throw records away.

:class:`ReliableLogRecordProcessor` / :class:`ReliableSpanProcessor`:

* keep what was handed to them in a queue of ``max_queue_size`` items and export it
  in batches of ``max_export_batch_size`` on one worker thread;
* retry a batch the exporter refused (Collector down, timeouts) with capped
  exponential back-off, *the same batch*, until it is taken or the processor is
  shut down -- so a 30 s outage costs nothing;
* tell the event source to wait: :meth:`DeliveryQueue.has_room` is False while the
  backlog is above ``high_water`` (a quarter of the queue by default). The watcher
  then leaves the LOG unread (see ``EventListener.accepting``); replay blocks;
* drop only when the queue is full (a single LOG read larger than the headroom, or
  a source that ignores ``has_room``) or when shut down with items still unsent;
  every drop is counted by reason in :attr:`DeliveryQueue.dropped`, logged
  (rate-limited) and reported to ``on_drop`` (the telemetry listener's
  ``otel_blob.events.dropped`` metric).

Memory is bounded by ``max_queue_size`` items (a blob log record is ~2-3 KB).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import Counter, deque
from typing import Any, Callable, Sequence

from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk._logs import LogRecordProcessor
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

__all__ = ["DEFAULT_QUEUE", "DeliveryQueue", "ReliableLogRecordProcessor", "ReliableSpanProcessor", "all_have_room"]

_log = logging.getLogger("otel_blob")

DEFAULT_QUEUE = 32768  # items per signal; a 10,000-event burst read in one poll fits; ~100 MB at worst
DEFAULT_BATCH = 1024
DEFAULT_DELAY = 0.2  # seconds between exports when the queue holds less than a batch
RETRY_FIRST = 0.5  # seconds before the first retry of a refused batch
RETRY_MAX = 8.0
ABORT_GRACE = 0.5  # s a shutdown out of time waits for the aborted export call to return


def _ok(result: Any) -> bool:
    # LogExportResult / SpanExportResult: both name their success SUCCESS.
    return getattr(result, "name", None) == "SUCCESS"


class DeliveryQueue:
    """The engine of both processors: a bounded queue, one export thread, retries.

    ``signal`` names the queue in logs and drop reports (``logs``/``traces``).
    ``on_drop(signal, reason, count)`` is called (from any thread) for every drop.
    """

    def __init__(
        self,
        exporter: Any,
        signal: str,
        *,
        max_queue_size: int = DEFAULT_QUEUE,
        max_export_batch_size: int = DEFAULT_BATCH,
        schedule_delay: float = DEFAULT_DELAY,
        high_water: int | None = None,
        retry_first: float = RETRY_FIRST,
        retry_max: float = RETRY_MAX,
        on_drop: Callable[[str, str, int], None] | None = None,
        size_of: Callable[[Any], int] | None = None,
        max_batch_bytes: int = 3 << 20,
    ) -> None:
        if max_queue_size < 1 or max_export_batch_size < 1:
            raise ValueError("queue and batch sizes must be positive")
        self.exporter = exporter
        self.signal = signal
        self.max_queue_size = max_queue_size
        self.max_export_batch_size = min(max_export_batch_size, max_queue_size)
        self.schedule_delay = schedule_delay
        self.high_water = max_queue_size // 4 if high_water is None else high_water
        self.retry_first = retry_first
        self.retry_max = retry_max
        self.on_drop = on_drop
        self.size_of = size_of  # an item's encoded size, about (None: batches by count only)
        self.max_batch_bytes = max_batch_bytes
        self.enqueued = 0
        self.exported = 0
        self.failed_exports = 0  # export calls that did not succeed (each is retried)
        self.dropped: Counter[str] = Counter()  # reason -> items
        self._queue: deque[Any] = deque()
        self._inflight = 0  # items taken by the worker and not yet accepted by the exporter
        self._cond = threading.Condition()
        self._closing = False  # shutdown began: no new items, no retries after the deadline
        self._deadline = float("inf")
        self._flush_requested = False
        self._exporter_shut = False
        self._thread = threading.Thread(target=self._run, name=f"otel_blob-export-{signal}", daemon=True)
        self._thread.start()

    # -- the producer side --------------------------------------------------------

    def put(self, item: Any) -> None:
        with self._cond:
            if self._closing:
                reason = "shutdown"
            elif len(self._queue) + self._inflight >= self.max_queue_size:
                reason = "queue_full"
            else:
                self._queue.append(item)
                self.enqueued += 1
                if len(self._queue) >= self.max_export_batch_size:
                    self._cond.notify_all()
                return
        self._drop(reason, 1)

    @property
    def backlog(self) -> int:
        """Items handed over and not yet accepted by the exporter."""
        return len(self._queue) + self._inflight

    def has_room(self, timeout: float | None = 0.0) -> bool:
        """True when the backlog is at most ``high_water``; waits up to ``timeout`` (None: forever)."""
        with self._cond:
            if self.backlog <= self.high_water:
                return True
            if timeout is not None and timeout <= 0:
                return False
            self._cond.notify_all()  # export now rather than after the schedule delay
            end = None if timeout is None else time.monotonic() + timeout
            # (A worker that died -- a bug -- would never make room: do not wait for it forever.)
            while self.backlog > self.high_water and not self._closing and self._thread.is_alive():
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is None else min(left, 1.0))
            return self.backlog <= self.high_water

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export everything queued; True when the exporter took it all within the timeout."""
        end = time.monotonic() + timeout_millis / 1000
        with self._cond:
            self._flush_requested = True
            self._cond.notify_all()
            while self.backlog and self._thread.is_alive():
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 1.0))
            self._flush_requested = False
            return self.backlog == 0

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Export what is queued (retrying up to the timeout), then stop; the rest counts as dropped."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._deadline = time.monotonic() + timeout_millis / 1000
            self._cond.notify_all()
        self._thread.join(max(0.0, self._deadline - time.monotonic()))
        if self._thread.is_alive():
            # Out of time while the exporter is in a call or in its own retry back-off (the
            # SDK's exporters retry inside export() for up to OTEL_EXPORTER_OTLP_TIMEOUT):
            # its shutdown aborts both (gRPC: the channel closes), so the bound holds.
            self._shutdown_exporter()
            self._thread.join(ABORT_GRACE)
        with self._cond:
            left = len(self._queue) + self._inflight
            self._queue.clear()
            self._inflight = 0
        if left:
            self._drop("shutdown", left)
        self._shutdown_exporter()

    def _shutdown_exporter(self) -> None:
        if self._exporter_shut:
            return
        self._exporter_shut = True
        try:
            self.exporter.shutdown()
        except Exception:
            _log.debug("%s exporter shutdown failed", self.signal, exc_info=True)

    # -- the worker -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closing and (not self._queue or time.monotonic() >= self._deadline):
                    return
                if len(self._queue) < self.max_export_batch_size and not self._closing and not self._flush_requested:
                    self._cond.wait(self.schedule_delay)
                if not self._queue:
                    continue
                n = min(self.max_export_batch_size, len(self._queue))
                if self.size_of is not None:
                    # Cut the batch where a request would pass max_batch_bytes (at least one item):
                    # a gRPC message is at most 4 MiB at a Collector's default, and an oversized
                    # request is refused whole, again and again.
                    total = 0
                    for i in range(n):
                        total += self.size_of(self._queue[i])
                        if total > self.max_batch_bytes and i:
                            n = i
                            break
                batch = [self._queue.popleft() for _ in range(n)]
                self._inflight = n
            self._export(batch)

    def _export(self, batch: list[Any]) -> None:
        delay = self.retry_first
        while True:
            # As the SDK's own processors do: the exporter's HTTP/gRPC calls are not traced.
            with suppress_instrumentation():
                try:
                    ok = _ok(self.exporter.export(batch))
                except Exception:
                    _log.debug("%s exporter raised", self.signal, exc_info=True)
                    ok = False
            with self._cond:
                if ok:
                    self.exported += len(batch)
                    self._inflight = 0
                    self._cond.notify_all()
                    return
                self.failed_exports += 1
                if self._closing and time.monotonic() + delay > self._deadline:
                    # Shutting down and out of time: the caller counts (and says) what is left.
                    self._queue.extendleft(reversed(batch))
                    self._inflight = 0
                    self._cond.notify_all()
                    return
                if self.failed_exports <= 3 or self.failed_exports % 100 == 0:
                    _log.warning("exporting %d %s failed (failure %d); retrying in %.1f s, "
                                 "%d waiting", len(batch), self.signal, self.failed_exports, delay, self.backlog)
                self._cond.wait(delay)  # a shutdown wakes us early; then the deadline decides
            delay = min(delay * 2, self.retry_max)

    def _drop(self, reason: str, n: int) -> None:
        with self._cond:
            self.dropped[reason] += n
            total = sum(self.dropped.values())
        if total <= n or total // 1000 != (total - n) // 1000:
            _log.warning("dropped %d %s (%s); %d dropped in all", n, self.signal, reason, total)
        if self.on_drop is not None:
            try:
                self.on_drop(self.signal, reason, n)
            except Exception:
                _log.debug("on_drop failed", exc_info=True)

    def stats(self) -> dict[str, Any]:
        return {"enqueued": self.enqueued, "exported": self.exported, "backlog": self.backlog,
                "failed_exports": self.failed_exports, "dropped": dict(self.dropped)}


class ReliableLogRecordProcessor(LogRecordProcessor):
    """A LogRecordProcessor on a :class:`DeliveryQueue` (see the module docstring)."""

    def __init__(self, exporter: Any, **kwargs: Any) -> None:
        self.queue = DeliveryQueue(exporter, "logs", **kwargs)

    def on_emit(self, log_record: Any) -> None:
        # As the SDK's batch processor does: a readable copy without the (possibly
        # large) context, so the queue holds only what is exported.
        try:
            from opentelemetry.sdk._logs import ReadableLogRecord

            api_record = copy.copy(log_record.log_record)
            api_record.context = Context()
            item = ReadableLogRecord(log_record=api_record, resource=log_record.resource,
                                     instrumentation_scope=log_record.instrumentation_scope,
                                     limits=log_record.limits)
        except Exception:  # an SDK without ReadableLogRecord hands over what it gave us
            item = log_record
        self.queue.put(item)

    emit = on_emit  # SDKs before 1.39 call emit()

    def shutdown(self) -> None:
        self.queue.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.queue.force_flush(timeout_millis)


def span_size(span: Any) -> int:
    """About a span's encoded size: a job span is mostly its span events (~600 bytes each)."""
    return 1024 + 800 * len(span.events)


class ReliableSpanProcessor(SpanProcessor):
    """A SpanProcessor on a :class:`DeliveryQueue`: sampled spans are queued when they end,
    exported in requests of at most ``max_batch_bytes``."""

    def __init__(self, exporter: Any, **kwargs: Any) -> None:
        self.queue = DeliveryQueue(exporter, "traces", size_of=span_size, **kwargs)

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and span.context.trace_flags.sampled:
            self.queue.put(span)

    def shutdown(self) -> None:
        self.queue.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.queue.force_flush(timeout_millis)


def all_have_room(queues: Sequence[DeliveryQueue], timeout: float | None = 0.0) -> bool:
    """``has_room`` of several queues (the wait is shared)."""
    end = None if timeout is None else time.monotonic() + timeout
    for q in queues:
        left = None if end is None else max(0.0, end - time.monotonic())
        if not q.has_room(left):
            return False
    return True

"""The application's own calls that make RocksDB run a job: the parents of job spans.

``Rdict.flush()`` / ``Rdict.compact_range()`` run inside the application's span
(``rocksdict.flush``, ``rocksdict.compact_range``). The job they cause shows up in
the LOG a little later, on the watcher's thread, with a manual reason and a RocksDB
start time inside the call: :class:`ManualCalls` remembers the calls so that job's
span becomes a child of the application's span, in the same trace.

Calls are registered from any application thread while the watcher matches jobs on
its own: the registry has its own lock (never held while anything is exported).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from opentelemetry.context import Context

__all__ = ["MANUAL_OPS_MAX", "MANUAL_OP_TTL_US", "MANUAL_SLACK_US", "ManualCalls", "ManualOp"]

_MANUAL_FLUSH_REASONS = frozenset({"Manual Flush"})
_COMPACT_RANGE_REASONS = frozenset({"ManualCompaction", "Manual Compaction"})
_MANUAL_REASONS = _MANUAL_FLUSH_REASONS | _COMPACT_RANGE_REASONS
MANUAL_SLACK_US = 50_000  # the job's started event may be stamped a little after the call returned
MANUAL_OPS_MAX = 256  # calls remembered (the oldest is dropped)
MANUAL_OP_TTL_US = 120_000_000  # a finished call is forgotten 2 min after it returned


def _op_group(kind: str) -> str:
    k = kind.lower()
    if "compact" in k:
        return "compact_range"
    if "flush" in k:
        return "flush"
    return "any"


class ManualOp:
    """One application call (``Rdict.flush()`` / ``compact_range()``) in progress.

    Call :meth:`done` when the call returns (or use it as a context manager).
    ``cf``: the column family the call acts on (None: not known -- then a job of any
    column family of the DB may be its child).
    """

    __slots__ = ("db_path", "kind", "group", "context", "start_us", "end_us", "cf")

    def __init__(self, db_path: str, kind: str, context: Context, cf: str | None = None) -> None:
        self.db_path = db_path
        self.kind = kind
        self.cf = cf
        self.group = _op_group(kind)
        self.context = context
        self.start_us = time.time_ns() // 1000
        self.end_us: int | None = None

    def done(self) -> None:
        if self.end_us is None:
            self.end_us = time.time_ns() // 1000

    def __enter__(self) -> ManualOp:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.done()

    def matches(self, db_path: str, group: str, when_us: int, cf: str | None = None) -> bool:
        if db_path != self.db_path or when_us < self.start_us:
            return False
        if self.cf is not None and cf is not None and cf != self.cf:
            return False  # a job of another column family (a concurrent call, RocksDB's flush at close)
        if self.end_us is not None and when_us > self.end_us + MANUAL_SLACK_US:
            return False
        return self.group == "any" or self.group == group

    def __repr__(self) -> str:
        return f"<ManualOp {self.kind} {self.db_path} [{self.start_us}, {self.end_us}]>"


class ManualCalls:
    """The registry: the latest :data:`MANUAL_OPS_MAX` calls, finished ones until their TTL."""

    __slots__ = ("_ops", "_lock")

    def __init__(self) -> None:
        self._ops: deque[ManualOp] = deque(maxlen=MANUAL_OPS_MAX)
        self._lock = threading.Lock()

    def renew_lock(self) -> None:
        """A new lock (in a forked child: the parent's may be held by a thread that is gone)."""
        self._lock = threading.Lock()

    def register(self, db_path: str, kind: str, context: Context, cf: str | None = None) -> ManualOp:
        """Remember a call starting now (``db_path`` absolute), forgetting expired ones."""
        op = ManualOp(db_path, kind, context, cf)
        now = op.start_us
        with self._lock:
            ops = self._ops
            while ops and ops[0].end_us is not None and ops[0].end_us + MANUAL_OP_TTL_US < now:
                ops.popleft()
            ops.append(op)  # maxlen: the oldest is dropped
        return op

    def parent(self, db_name: str, reason: Any, when_us: Any, cf: str | None = None) -> Context | None:
        """The context of the latest call that caused a job of ``db_name`` (column family
        ``cf``) with RocksDB ``reason`` started at ``when_us``, or None (not a manual reason,
        no such call)."""
        if reason not in _MANUAL_REASONS or not self._ops or when_us is None:
            return None
        group = "flush" if reason in _MANUAL_FLUSH_REASONS else "compact_range"
        with self._lock:
            for op in reversed(self._ops):
                if op.matches(db_name, group, when_us, cf):
                    return op.context
        return None

    def __len__(self) -> int:
        with self._lock:
            return len(self._ops)

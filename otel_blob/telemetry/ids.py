"""Deterministic trace and span ids for job spans.

A job span's ids are a hash of (DB path, session id, job id, span name), so
replaying the same LOG twice yields the same trace and span ids -- and the same
ids on the log records -- and a re-export after a crash does not make new traces.
The CLI and the helper process install :class:`DeterministicIdGenerator` in the
TracerProvider they own; the listener seeds it just before it starts a job span
(:func:`seeded_ids`, a thread-local: any other span of the process, started on any
thread, gets random ids).
"""

from __future__ import annotations

import hashlib
import random
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import IdGenerator

__all__ = ["DeterministicIdGenerator", "seeded_ids"]

_seed = threading.local()


@contextmanager
def seeded_ids(key: tuple[Any, ...] | None) -> Iterator[None]:
    """Within this block, spans started on this thread by a TracerProvider using
    :class:`DeterministicIdGenerator` get ids derived from ``key``."""
    _seed.key = key
    try:
        yield
    finally:
        _seed.key = None


def _digest(key: tuple[Any, ...], what: bytes) -> bytes:
    h = hashlib.sha256(what)
    h.update(repr(key).encode("utf-8", "surrogateescape"))
    return h.digest()


class DeterministicIdGenerator(IdGenerator):
    """Trace and span ids from a hash of the span's key (see :func:`seeded_ids`).

    :class:`~otel_blob.telemetry.TelemetryListener` seeds every job span with
    ``(db path, session id, job id, span name)``; a span started without a seed
    (any other span of the process) gets random ids.
    """

    def generate_trace_id(self) -> int:
        key = getattr(_seed, "key", None)
        if key is not None:
            tid = int.from_bytes(_digest(key, b"trace")[:16], "big")
            if tid != trace.INVALID_TRACE_ID:
                return tid
        return _random_nonzero(128)

    def generate_span_id(self) -> int:
        key = getattr(_seed, "key", None)
        if key is not None:
            sid = int.from_bytes(_digest(key, b"span")[:8], "big")
            if sid != trace.INVALID_SPAN_ID:
                return sid
        return _random_nonzero(64)


def _random_nonzero(bits: int) -> int:
    # 0 is the invalid id: never hand it out.
    while True:
        v = random.getrandbits(bits)
        if v:
            return v

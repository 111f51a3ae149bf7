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

from opentelemetry.sdk.trace.id_generator import IdGenerator

__all__ = ["DeterministicIdGenerator", "given_ids", "random_id", "seeded_ids"]

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


@contextmanager
def given_ids(trace_id: int, span_id: int) -> Iterator[None]:
    """Within this block, a span started on this thread (by a TracerProvider using
    :class:`DeterministicIdGenerator`) gets exactly these ids (the trace id only when it has
    no parent): a span the application announced with its own ids, recorded by the helper."""
    _seed.given = (trace_id, span_id)
    try:
        yield
    finally:
        _seed.given = None


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
        return _seeded_id(0, b"trace", 16)

    def generate_span_id(self) -> int:
        return _seeded_id(1, b"span", 8)


def _seeded_id(index: int, label: bytes, nbytes: int) -> int:
    """The id given for this span (``given[index]``), or one hashed from its seed, or a random one."""
    given = getattr(_seed, "given", None)
    if given is not None:
        return given[index]
    key = getattr(_seed, "key", None)
    if key is not None:
        value = int.from_bytes(_digest(key, label)[:nbytes], "big")
        if value:  # 0 is the invalid id (INVALID_TRACE_ID, INVALID_SPAN_ID)
            return value
    return random_id(nbytes * 8)


def random_id(bits: int) -> int:
    """A random trace (128 bits) or span (64 bits) id; never 0, the invalid id."""
    while True:
        v = random.getrandbits(bits)
        if v:
            return v

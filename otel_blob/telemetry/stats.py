"""TelemetryStats: what a TelemetryListener did, as plain counters.

Its own module because the parts count into it (spans.py: spans started, ended,
unfinished, open jobs evicted; file_events.py: records, span events; job_events.py:
manual parents; listener.py: drops) and the listener imports the parts.
"""

from __future__ import annotations

__all__ = ["TelemetryStats"]


class TelemetryStats:
    """Counters of a TelemetryListener (approximate under concurrency; they only grow).

    ``jobs_evicted``: open jobs forgotten to keep the open-job table of a DB bounded
    (spans.OPEN_JOBS_MAX); those that had a span also count in ``spans_unfinished``.
    """

    __slots__ = (
        "records_emitted",
        "span_events",
        "spans_started",
        "spans_ended",
        "spans_unfinished",
        "manual_parents",
        "callback_errors",
        "dropped",
        "lines_skipped",
        "jobs_evicted",
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        return f"TelemetryStats({self.as_dict()})"

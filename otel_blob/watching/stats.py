"""What a watch counts, and how it warns without flooding a log."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

__all__ = ["RateLimitedWarning", "WatchStats"]

_log = logging.getLogger("otel_blob")


class WatchStats:
    """Counters of one watch (read them any time; they only grow)."""

    def __init__(self) -> None:
        self.lines = 0
        self.events = 0
        self.blob_files_created = 0
        self.blob_files_deleted = 0
        self.listener_errors = 0
        self.polls = 0
        self.paused = 0  # polls that left the LOG unread because the listener had no room
        self.blob_files_evicted = 0  # live blob files the decoder forgot to stay bounded (LogDecoder.evicted)
        self.skipped: Counter[str] = Counter()  # reason -> count
        # At stop: the DB session being read had not logged its end (None: not stopped, or no session seen).
        self.open_at_stop: bool | None = None
        # At stop: a LOG file was being read (False: the LOG stayed missing or unreadable to the end).
        self.following_at_stop: bool | None = None

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "events": self.events,
            "blob_files_created": self.blob_files_created,
            "blob_files_deleted": self.blob_files_deleted,
            "listener_errors": self.listener_errors,
            "paused": self.paused,
            "blob_files_evicted": self.blob_files_evicted,
            "skipped": dict(self.skipped),
            "open_at_stop": self.open_at_stop,
        }

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items() if v or k in ("lines", "events"))
        return f"WatchStats({fields})"


class RateLimitedWarning:
    """Logs the first few occurrences of each kind, then one in every 1,000."""

    def __init__(self, first: int = 5) -> None:
        self.first = first
        self.seen: Counter[str] = Counter()

    def __call__(self, kind: str, msg: str, *args: Any) -> None:
        n = self.seen[kind] = self.seen[kind] + 1
        if n <= self.first or n % 1000 == 0:
            _log.warning(msg + (" (occurrence %d)" % n if n > self.first else ""), *args)

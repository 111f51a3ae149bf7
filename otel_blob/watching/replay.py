"""Replay: finished LOG files through the same watch, decoder and listeners as a live watch."""

from __future__ import annotations

from typing import Callable, Sequence

from ..source.files import LogFiles
from .listener import EventListener
from .stats import WatchStats
from .db_watch import Watch

__all__ = ["replay"]


def replay(db_name: str, log_name: str, files: Sequence[str], listener: EventListener, *,
           should_stop: Callable[[], bool] = lambda: False,
           on_read: Callable[[str, int], None] | None = None) -> WatchStats:
    """Deliver the events of ``files`` (one LOG's files, oldest first) to ``listener``.

    ``db_name`` is the database the events are reported for, ``log_name`` the LOG they
    come from (``WatchInfo.log_path``). History is not on disk any more: blob file sizes
    come from the LOG only, and no directory is scanned. A listener's backpressure
    is waited for as long as it takes (nothing is dropped however slow the exporter);
    ``should_stop`` is asked between batches.
    """
    source = LogFiles(files, on_read=on_read)
    w = Watch(db_name, log_name, listener, source=source, stat_files=False, scan_dir=False, drain_wait=None)
    try:
        while source.behind and not should_stop():
            w.step(wait=None)
    finally:
        if source.behind:  # stopped (a signal) or failed: deliver what was read, read no further
            source.close()
        w.stop()
    return w.stats

"""How a command ends: exit statuses, one-line failures, and the truth about losses.

Exit statuses: 0 every event delivered; 1 a runtime failure (a file that cannot be
read, a database directory that disappeared with ``--exit-on-missing``); 2 bad
usage (a flag, a value, a path); 3 the command ran to its end but telemetry was
lost -- items the exporters could not deliver in time, or LOG files that could
not be read or were deleted before they were read (the summary line says which).
"""

from __future__ import annotations

from typing import Any, Iterable

from ..export.pipeline import ConfigError, ExportPipeline
from .console import say

__all__ = ["EXIT_DROPPED", "EXIT_OK", "EXIT_RUNTIME", "EXIT_USAGE", "ConfigError", "RuntimeFailure", "UsageError",
           "loss_summary", "say_destination"]

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_DROPPED = 0, 1, 2, 3
# Skips that are lost events, not bad lines: a LOG that could not be read, or was gone first.
_LOST_FILES = ("log_unreadable", "not_a_file", "file_lost")


class UsageError(Exception):
    """Bad flag, value or path: one line on stderr, exit 2."""


class RuntimeFailure(Exception):
    """Something failed while running: one line on stderr, exit 1."""


def say_destination(args: Any, pipeline: ExportPipeline) -> None:
    """Where the telemetry goes, said once at start (an endpoint nobody meant is seen at once)."""
    if getattr(args, "console", False):
        say("printing one line per blob file event (--console); exporting nothing")
    else:
        say(f"exporting {pipeline.describe()}")


def loss_summary(pipeline: ExportPipeline, stats: Iterable[Any]) -> str:
    """What was lost, in one line ("" when nothing was)."""
    parts = []
    dropped = pipeline.dropped()
    if dropped:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(pipeline.dropped_by_reason().items()))
        parts.append(f"{dropped} telemetry items could not be delivered ({reasons})")
    files: dict[str, int] = {}
    for st in stats:
        for reason in _LOST_FILES:
            if reason != "file_lost" and st.following_at_stop:
                continue  # unreadable for a while, then read from its start: nothing lost
            files[reason] = files.get(reason, 0) + st.skipped.get(reason, 0)
    if any(files.values()):
        parts.append("LOG files lost or unreadable: " + ", ".join(f"{k} {v}" for k, v in files.items() if v))
    return "; ".join(parts) + (f" (exit status {EXIT_DROPPED})" if parts else "")

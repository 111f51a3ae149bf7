"""The helper process's state directory: its log, and what it could not deliver.

Once the application has exited, the helper has no terminal and no pipe to
speak to (it must not hold the application's: ``app | tee log`` would wait for
it). What it says goes to ``<state dir>/helper.log``; what it could not deliver
within its time is appended to ``<state dir>/undelivered.jsonl``, which the next
instrumented run reports once in its own log and then renames
``undelivered.jsonl.reported``.

The directory: ``OTEL_PYTHON_ROCKSDICT_STATE_DIR``, else
``$XDG_STATE_HOME/otel_blob``, else ``~/.local/state/otel_blob``; created
private (0700). Where none can be written, the helper's messages are dropped
and nothing is recorded for the next run.
"""

from __future__ import annotations

import json
import os
from typing import IO, Any

__all__ = ["LOG_NAME", "UNDELIVERED", "append_undelivered", "open_log", "resolve", "take_undelivered"]

LOG_NAME = "helper.log"
UNDELIVERED = "undelivered.jsonl"
LOG_MAX = 1 << 20  # bytes; beyond, helper.log is moved to helper.log.1 (one old file kept)


def resolve(configured: str | None) -> str | None:
    """The state directory, created if needed; None if it cannot be written."""
    if configured:
        directory = configured
    else:
        base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
        directory = os.path.join(base, "otel_blob")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError:
        return None
    return directory if os.access(directory, os.W_OK | os.X_OK) else None


def open_log(directory: str | None) -> IO[bytes] | None:
    """``helper.log`` for appending (rolled over beyond :data:`LOG_MAX`), or None."""
    if directory is None:
        return None
    path = os.path.join(directory, LOG_NAME)
    try:
        if os.path.getsize(path) > LOG_MAX:
            os.replace(path, path + ".1")
    except OSError:
        pass
    try:
        return open(path, "ab", buffering=0)
    except OSError:
        return None


def append_undelivered(directory: str | None, record: dict[str, Any]) -> str | None:
    """Add one line to ``undelivered.jsonl``; its path, or None if it could not be written."""
    if directory is None:
        return None
    path = os.path.join(directory, UNDELIVERED)
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
    except OSError:
        return None
    return path


def take_undelivered(directory: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """The records earlier helpers left (they are then renamed ``.reported``), and where they are now."""
    if directory is None:
        return [], None
    path = os.path.join(directory, UNDELIVERED)
    done = path + ".reported"
    try:
        os.replace(path, done)  # atomic: a helper appending now starts a new file
        with open(done, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return [], None
    records = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records, done

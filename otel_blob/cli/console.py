"""What ``otel-blob`` prints: one line per blob file event, a summary, messages on stderr."""

from __future__ import annotations

import os
import sys
import threading
from collections import Counter
from typing import Any, TextIO

from ..watching.listener import EventListener

__all__ = ["PROG", "LinePrinter", "say"]

PROG = "otel-blob"
JOBS_COUNTED_MAX = 1_000_000  # distinct jobs the summary counts; beyond, it says "at least"


def say(msg: str) -> None:
    """One line on stderr, prefixed with the program's name."""
    try:
        sys.stderr.write(f"{PROG}: {msg}\n")
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass


def _n(value: Any) -> str:
    return "?" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def _label(kind: str, job_reason: str | None) -> str:
    """A job as the lines show it: ``flush``, ``compaction:ForcedBlobGC``, ``unknown``."""
    return f"{kind}:{job_reason}" if kind == "compaction" and job_reason else kind


class LinePrinter(EventListener):
    """One readable line per blob file event, plus totals for :meth:`summary`.

    ``+ created  000012.blob  cf=default job=4 reason=flush  blobs=64 bytes=66,294 size=66,410``

    Everything it prints comes from the event itself (the decoder tells a deletion
    which kind of job made it); it keeps only counters.
    """

    def __init__(self, out: TextIO, *, show_db: bool = False) -> None:
        self.out = out
        self.show_db = show_db
        self.lock = threading.Lock()
        self.created: Counter[str] = Counter()
        self.deleted: Counter[str] = Counter()
        self.failed = 0
        self.blob_bytes = 0
        self.size_created = 0
        self.size_deleted = 0
        self.sizes_unknown = 0  # files whose size on disk was not known (history, --stat-blob-files off)
        self.job_kinds: Counter[str] = Counter()
        self.blob_jobs: set[tuple[str, str | None, int | None]] = set()

    def _write(self, text: str) -> None:
        with self.lock:
            try:
                self.out.write(text + "\n")
                self.out.flush()
            except (BrokenPipeError, ValueError):
                pass

    def _prefix(self, info: Any) -> str:
        return f"[{info.db_name}] " if self.show_db else ""

    def _job_begin(self, info: Any) -> None:
        with self.lock:
            self.job_kinds[type(info).__name__.replace("JobInfo", "").lower()] += 1

    on_flush_begin = on_compaction_begin = on_recovery_begin = _job_begin

    def _touched(self, info: Any) -> None:
        if len(self.blob_jobs) < JOBS_COUNTED_MAX:
            self.blob_jobs.add((info.db_name, info.session_id, info.job_id))

    def on_blob_file_created(self, info: Any) -> None:
        reason = _label(info.reason, info.job_reason)
        with self.lock:
            self.created[reason] += 1
            self.blob_bytes += info.total_blob_bytes or 0
            if info.file_size is None:
                self.sizes_unknown += 1
            else:
                self.size_created += info.file_size
            self._touched(info)
        status = "" if info.ok else f"  status={info.status}"
        self._write(
            f"{self._prefix(info)}+ created  {os.path.basename(info.file_path)}  cf={_n(info.cf_name)} "
            f"job={_n(info.job_id)} reason={reason}  blobs={_n(info.total_blob_count)} "
            f"bytes={_n(info.total_blob_bytes)} size={_n(info.file_size)}{status}"
        )

    def on_blob_file_deleted(self, info: Any) -> None:
        name = os.path.basename(info.file_path)
        if not info.ok:
            with self.lock:
                self.failed += 1
            self._write(f"{self._prefix(info)}! delete failed  {name}  job={_n(info.job_id)}  status={info.status}")
            return
        reason = _label(info.reason, info.job_reason)
        with self.lock:
            self.deleted[reason] += 1
            if info.file_size is None:
                self.sizes_unknown += 1
            else:
                self.size_deleted += info.file_size
            self._touched(info)
        never = "" if info.created_micros is not None else "  (creation not seen)"
        self._write(
            f"{self._prefix(info)}- deleted  {name}  cf={_n(info.cf_name)} job={_n(info.job_id)} "
            f"reason={reason}  size={_n(info.file_size)}{never}"
        )

    def summary(self) -> str:
        with self.lock:
            nc, nd = sum(self.created.values()), sum(self.deleted.values())

            def by(c: Counter[str]) -> str:
                return ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))) or "-"

            jobs = ", ".join(f"{v} {k}{'es' if k == 'flush' and v != 1 else '' if v == 1 else 's'}"
                             for k, v in sorted(self.job_kinds.items())) or "none seen"
            touched = len(self.blob_jobs)
            touched_text = f"{'at least ' if touched >= JOBS_COUNTED_MAX else ''}{touched:,}"
            if self.sizes_unknown and not (self.size_created or self.size_deleted):
                sizes = "file sizes unknown (from the LOG alone; --stat-blob-files reads them from the disk)"
            else:
                sizes = f"{self.size_created:,} bytes of files created, {self.size_deleted:,} bytes of files deleted"
                if self.sizes_unknown:
                    sizes += f" ({self.sizes_unknown:,} files of unknown size not counted)"
            lines = [
                f"Summary: {nc} blob files created, {nd} deleted"
                + (f", {self.failed} failed deletions" if self.failed else ""),
                f"  created by reason:  {by(self.created)}",
                f"  deleted by reason:  {by(self.deleted)}",
                f"  bytes:              {self.blob_bytes:,} blob bytes written, {sizes}",
                f"  jobs:               {jobs}; {touched_text} touched blob files",
            ]
        return "\n".join(lines)

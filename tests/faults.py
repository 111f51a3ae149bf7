"""Ground truth and scenario reports for the fault suite (tests/test_reliability.py).

The ground truth is independent of the code under test:

* the **file system** -- inotify (tests/ground_truth.py) records every ``*.blob`` file
  that appeared in or disappeared from a DB directory;
* the **LOG** -- a plain regular-expression scan of the LOG files still on disk
  (``LOG``, ``LOG.old.*``) for ``blob_file_creation`` / ``blob_file_deletion`` lines.
  No otel_blob code is used: a LOG parser bug cannot hide itself.

An *event* is ``(kind, db, file_number)`` with kind ``created`` or ``deleted``
(a successful deletion: RocksDB's failed re-deletions after a reopen are not a
file's life ending). :func:`account` compares what was delivered with the truth
and returns a :class:`ScenarioReport`; :func:`record` appends it as one JSON line
to the file named by ``OTEL_BLOB_RELIABILITY_REPORT`` (when set), so the figures
of docs/reliability.md come from a suite run.
"""

from __future__ import annotations

import json
import os
import queue
import re
import resource
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import pytest

from ground_truth import BlobDirWatch, BlobFileTruth

__all__ = [
    "BlobDirWatch",
    "DirsTruth",
    "Lines",
    "LogRollCounter",
    "Event",
    "ScenarioReport",
    "account",
    "events_from_otlp",
    "events_from_recorder",
    "events_from_truth",
    "log_scan",
    "node_name",
    "PeakRss",
    "record",
]

Event = tuple[str, str, int]  # (created|deleted, absolute db path, file number)

REPORT_ENV = "OTEL_BLOB_RELIABILITY_REPORT"

# -- the LOG, read without otel_blob ------------------------------------------------

_EVENT_RE = re.compile(rb'"event": "blob_file_(creation|deletion)"')
_NUMBER_RE = re.compile(rb'"file_number": (\d+)')
_STATUS_RE = re.compile(rb'"status": "([^"]*)"')
_LOG_NAME_RE = re.compile(r"^(?:.*_)?LOG(?:\.old\.\d+)?$")


def log_files(log_dir: str) -> list[str]:
    """The info LOG files in ``log_dir`` (live and rolled), any naming scheme."""
    return sorted(os.path.join(log_dir, n) for n in os.listdir(log_dir) if _LOG_NAME_RE.match(n))


def log_scan(db_path: str, log_dir: str | None = None) -> Counter[Event]:
    """Blob file events written in the LOG files still present (regex only)."""
    db = os.path.abspath(db_path)
    out: Counter[Event] = Counter()
    for path in log_files(log_dir or db):
        with open(path, "rb") as f:
            for line in f:
                m = _EVENT_RE.search(line)
                if not m:
                    continue
                n = _NUMBER_RE.search(line)
                if not n:
                    continue
                if m.group(1) == b"creation":
                    out["created", db, int(n.group(1))] += 1
                else:
                    s = _STATUS_RE.search(line)
                    if s is None or s.group(1) == b"OK":
                        out["deleted", db, int(n.group(1))] += 1
    return out


# -- the file system ----------------------------------------------------------------

def events_from_truth(db_path: str, truth: BlobFileTruth) -> Counter[Event]:
    """Every blob file that appeared is one creation, every one that went one deletion."""
    db = os.path.abspath(db_path)
    out: Counter[Event] = Counter()
    for n, times in truth.created.items():
        out["created", db, n] += times
    for n, times in truth.deleted.items():
        out["deleted", db, n] += times
    return out


class DirsTruth:
    """inotify ground truth for several DB directories, kept apart (file numbers
    repeat across DBs): ``expected()`` is the blob file events of all of them."""

    def __init__(self, *directories: str) -> None:
        self.watches = {os.path.abspath(d): BlobDirWatch(d) for d in directories}

    def expected(self) -> Counter[Event]:
        out: Counter[Event] = Counter()
        for d, w in self.watches.items():
            out += events_from_truth(d, w.collect())
        return out

    def close(self) -> None:
        for w in self.watches.values():
            w.close()

    def __enter__(self) -> DirsTruth:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LogRollCounter:
    """inotify on a LOG directory: how many LOG files were rolled (renamed to
    ``*LOG.old.<micros>``) and how many rolled files were deleted."""

    def __init__(self, directory: str) -> None:
        import ground_truth as g

        self._g = g
        self.fd = g._libc.inotify_init1(g.IN_NONBLOCK)
        if self.fd < 0 or g._libc.inotify_add_watch(self.fd, os.fsencode(directory), g.IN_DELETE | g.IN_MOVED_TO) < 0:
            raise OSError("inotify failed")
        self.rolled = 0
        self.deleted = 0

    def collect(self) -> LogRollCounter:
        g = self._g
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return self
            off = 0
            while off < len(data):
                _wd, mask, _cookie, length = g._EVENT.unpack_from(data, off)
                name = data[off + g._EVENT.size: off + g._EVENT.size + length].rstrip(b"\0")
                off += g._EVENT.size + length
                assert not mask & g.IN_Q_OVERFLOW, "inotify queue overflowed"
                if b"LOG.old." in name:
                    if mask & g.IN_MOVED_TO:
                        self.rolled += 1
                    if mask & g.IN_DELETE:
                        self.deleted += 1

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> LogRollCounter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# -- what was delivered ---------------------------------------------------------------

def events_from_recorder(events: Iterable[Any]) -> Counter[Event]:
    """Events a listener received (BlobFileCreationInfo / successful BlobFileDeletionInfo)."""
    out: Counter[Event] = Counter()
    for e in events:
        name = type(e).__name__
        if name == "BlobFileCreationInfo":
            out["created", os.path.abspath(e.db_name), e.file_number] += 1
        elif name == "BlobFileDeletionInfo" and e.ok:
            out["deleted", os.path.abspath(e.db_name), e.file_number] += 1
    return out


def events_from_otlp(records: Iterable[dict[str, Any]], db_path: str | None = None) -> Counter[Event]:
    """Events in OTLP log records as the receiver decoded them.

    ``db_path``: the DB to attribute records to when paths are hashed or left out
    (``rocksdb.db.path`` is then not the path).
    """
    out: Counter[Event] = Counter()
    for r in records:
        a = r["attributes"]
        ev = a.get("rocksdb.event") or r.get("event_name")
        if ev not in ("rocksdb.blob_file.created", "rocksdb.blob_file.deleted"):
            continue
        if ev == "rocksdb.blob_file.deleted" and a.get("rocksdb.status", "OK") != "OK":
            continue
        db = db_path if db_path is not None else a.get("rocksdb.db.path", "?")
        out["created" if ev.endswith("created") else "deleted", os.path.abspath(db), a["rocksdb.blob_file.number"]] += 1
    return out


# -- memory -----------------------------------------------------------------------------

class PeakRss:
    """Peak resident set size (KiB) of this process over a block.

    Resets the kernel's high-water mark (``/proc/self/clear_refs`` ``5``) at the
    start when it can; otherwise reports the process's peak so far (an upper bound).
    """

    def __enter__(self) -> PeakRss:
        self.reset = False
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.reset = True
        except OSError:
            pass
        self.kb = 0
        return self

    def read(self) -> int:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def __exit__(self, *exc: Any) -> None:
        self.kb = self.read()


def children_peak_rss_kb() -> int:
    """Largest peak RSS (KiB) of the waited-for child processes so far."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


# -- the report --------------------------------------------------------------------------

@dataclass
class ScenarioReport:
    scenario: str
    test: str
    expected: int  # blob file events that happened (ground truth)
    delivered: int  # distinct expected events that were delivered
    duplicates: int  # deliveries beyond the first of an event
    dropped: int  # expected events never delivered
    reported_lost: int = 0  # losses the package counted and reported (LineSkippedInfo / metric)
    unexpected: int = 0  # delivered events the ground truth does not know
    peak_rss_kb: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        return self.dropped == 0 and self.duplicates == 0 and self.unexpected == 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def account(
    scenario: str,
    test: str,
    expected: Counter[Event],
    delivered: Counter[Event],
    *,
    reported_lost: int = 0,
    peak_rss_kb: int = 0,
    **notes: Any,
) -> ScenarioReport:
    """Compare delivered events with the expected ones."""
    exp_keys = set(expected)
    got = +delivered
    return ScenarioReport(
        scenario=scenario,
        test=test,
        expected=sum(expected.values()),
        delivered=sum(min(got[k], expected[k]) for k in exp_keys),
        duplicates=sum(max(0, c - expected.get(k, 0)) for k, c in got.items() if k in exp_keys),
        dropped=sum(max(0, expected[k] - got.get(k, 0)) for k in exp_keys),
        reported_lost=reported_lost,
        unexpected=sum(c for k, c in got.items() if k not in exp_keys),
        peak_rss_kb=peak_rss_kb,
        notes=notes,
    )


_report_lock = threading.Lock()


def node_name(request: Any) -> str:
    """The scenario's test, as reports name it: the node id after the file name."""
    return request.node.nodeid.split("::", 1)[-1]


def record(report: ScenarioReport) -> ScenarioReport:
    """Append ``report`` as a JSON line to $OTEL_BLOB_RELIABILITY_REPORT (if set)."""
    target = os.environ.get(REPORT_ENV)
    if target:
        line = json.dumps(report.as_dict(), sort_keys=True) + "\n"
        with _report_lock, open(target, "a") as f:
            f.write(line)
    return report


def assert_exact(report: ScenarioReport) -> None:
    assert report.expected > 0, f"{report.scenario}: the workload made no blob file events: it proves nothing"
    assert report.exact, f"{report.scenario}: not exactly once: {report.as_dict()}"


# ---------------------------------------------------------------------------
# The helper process of an instrumented application (process mode)
# ---------------------------------------------------------------------------

class Lines:
    """The lines a subprocess writes to ``stream``, read by a thread while it runs.

    :meth:`expect` awaits the next line that matches (no sleeps: the reader hands each
    line over as it comes); :meth:`rest` gives the remaining ones once the stream ends.
    Every line read is kept in :attr:`seen`."""

    def __init__(self, stream: Any, who: str, on_timeout: Any = None) -> None:
        self.seen: list[str] = []
        self._who = who
        self._on_timeout = on_timeout
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, matches: Any, what: str, timeout: float = 30, context: Any = None) -> str:
        """The next line for which ``matches(line)`` is true."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                if self._on_timeout is not None:
                    self._on_timeout()
                pytest.fail(f"{self._who} did not {what} within {timeout} s: {self.seen} {context() if context else ''}")
            if line is None:
                self._queue.put(None)
                pytest.fail(f"{self._who} ended and did not {what}: {self.seen} {context() if context else ''}")
            self.seen.append(line)
            if matches(line):
                return line

    def rest(self, timeout: float = 10) -> list[str]:
        """Every line, once the stream ended (the process exited)."""
        self._thread.join(timeout)
        while (line := self._queue.get(timeout=timeout)) is not None:
            self.seen.append(line)
        self._queue.put(None)
        return self.seen


# Appended to an instrumented app: it says which helper process follows its databases.
# The application exits at once; the helper delivers afterwards and then exits.
HELPER_PID_TRAILER = (
    "\nfrom otel_blob import RocksdictInstrumentor as _Instrumentor\n"
    "print('helper pid:', _Instrumentor().helper_pid, flush=True)\n"
)


def helper_pid(out: str) -> int | None:
    m = re.search(r"^helper pid: (\d+)$", out, re.M)
    return int(m.group(1)) if m else None


def wait_for_exit(pid: int | None, timeout: float) -> bool:
    """Wait until process ``pid`` (not our child) has exited: on its pidfd, not by polling."""
    import select

    if pid is None:
        return True
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)

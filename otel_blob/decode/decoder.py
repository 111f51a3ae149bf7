"""LogDecoder: one DB's LOG lines -> ``...Info`` values, with the little state that needs.

No I/O and no OpenTelemetry. What the LOG does not say and is derived here
(documented in README "Events"):

* ``file_path`` -- ``<blob dir>/<file_number as %06d>.blob``; the blob dir is the
  DB path unless the caller names one per column family.
* ``reason`` of a blob file creation -- the kind of the job that logged it:
  ``flush_started`` -> ``flush``, ``compaction_started`` -> ``compaction``,
  ``recovery_started`` -> ``recovery``; a job we never saw start -> ``unknown``.
* ``cf_name`` of flushes and compactions -- the plain-text line RocksDB writes just
  before ``*_started`` (``[cf] [JOB n] Flushing ...`` / ``Compacting ...``).
* ``cf_name``/``file_size`` of a deletion -- remembered from the creation, or
  from the directory scan the watch does when it starts (:mod:`.tables`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Mapping

from .info import (
    OK,
    BlobFileCreationInfo,
    BlobFileDeletionInfo,
    CompactionJobInfo,
    FlushJobInfo,
    JobInfo,
    LineSkippedInfo,
    RecoveryJobInfo,
    SessionInfo,
    TableFileCreationInfo,
    TableFileDeletionInfo,
)
from .rules import BATCH_EVENT_RE, PLAIN_RULES, LogLine, parse_line, parse_payload, text, uint
from .tables import Job, JobTable, LiveBlobFiles, RecentNumbers

__all__ = ["LogDecoder"]

# Events we decode JSON for even when the listener only wants blob events: they
# give blob creations their reason.
_JOB_START_EVENTS = (b'"flush_started"', b'"compaction_started"', b'"recovery_started"')
_BLOB_EVENTS = (b'"blob_file_creation"', b'"blob_file_deletion"')
_WANTED_BLOB_ONLY = _BLOB_EVENTS + _JOB_START_EVENTS

_JOB_KIND = {
    "flush_started": ("flush", False),
    "flush_finished": ("flush", True),
    "compaction_started": ("compaction", False),
    "compaction_finished": ("compaction", True),
    "recovery_started": ("recovery", False),
    "recovery_finished": ("recovery", True),
}
_JOB_TYPE = {"flush": FlushJobInfo, "compaction": CompactionJobInfo, "recovery": RecoveryJobInfo}
_REASON_KEY = {"flush": "flush_reason", "compaction": "compaction_reason"}
_COMMON_KEYS = frozenset({"time_micros", "job", "event", "cf_name"})
# Every needle of the plain-text rules: the batch path's candidates (one str.find pass each).
_PLAIN_NEEDLES = tuple(needle for rule in PLAIN_RULES for needle in rule.needles)


class LogDecoder:
    """Turns one DB's parsed LOG lines into Info values. No I/O.

    ``blob_dir`` maps a column family name to the directory of its blob files
    (default: the DB path). ``file_size`` is called with a blob file's path when
    its creation is decoded (the watcher passes ``source.layout.file_size``; tests may pass
    anything). ``blob_only`` restricts output to blob file events (jobs are still
    tracked, for reasons).

    Its memory is bounded whatever the LOG: at most ``max_jobs`` jobs (per session)
    and ``max_live_blob_files`` live blob files, the oldest forgotten first
    (counted in :attr:`evicted`).
    """

    MAX_JOBS = 4096  # jobs remembered per session (cf/reason lookup); oldest forgotten
    # Live blob files remembered (size, cf, creation time, for their deletions); the
    # oldest evicted beyond it. 100,000 is more than any real DB has live (at RocksDB's
    # default 256 MiB blob files, 25 TB of blobs; at 64 MiB, 6.4 TB) and costs ~4.5 MB
    # (the newest 8,192 at ~190 bytes each, the rest at ~30: LiveBlobFiles).
    MAX_LIVE_BLOB_FILES = 100_000
    RECENT_NUMBERS = 4096  # file numbers created / deleted in the session, remembered to recognise a repeated line
    OPEN_JOBS_MAX = 256  # begun, unfinished jobs remembered (RocksDB runs a handful at once)

    def __init__(
        self,
        db_name: str,
        *,
        blob_dir: Callable[[str | None], str] | None = None,
        file_size: Callable[[str], int | None] | None = None,
        blob_only: bool = False,
        known_blob_files: Mapping[int, int | None] | None = None,
        max_live_blob_files: int | None = None,
        max_jobs: int | None = None,
    ) -> None:
        self.db_name = db_name
        self.session_id: str | None = None
        self._blob_dir = blob_dir or (lambda _cf: db_name)
        self._file_size = file_size or (lambda _path: None)
        self.blob_only = blob_only
        if max_jobs is not None:
            self.MAX_JOBS = max(1, int(max_jobs))
        self.jobs = JobTable(self.MAX_JOBS)
        # Live blob files we know of: number -> (size, cf, created_micros), bounded.
        self.live_blob_files = LiveBlobFiles(
            self.MAX_LIVE_BLOB_FILES if max_live_blob_files is None else max_live_blob_files)
        for n in sorted(k for k in (known_blob_files or {}) if type(k) is int):
            self.live_blob_files.add(n, known_blob_files[n], None, None)  # type: ignore[index]
        # Blob file numbers created and deleted in this session: one line twice is one event. (Per
        # session: RocksDB may give a cancelled job's number to a new file after a reopen.)
        self.session_created = RecentNumbers(self.RECENT_NUMBERS)
        self.session_deleted = RecentNumbers(self.RECENT_NUMBERS)
        # The jobs begun and not finished yet, as their begin events: a checkpoint keeps them so
        # a resumed watch can begin them again (only made when job events are delivered).
        self.open_jobs: OrderedDict[tuple[str | None, int], JobInfo] = OrderedDict()
        # The current session logged its "Shutdown complete" (and no new session began since).
        self.session_closed = False
        self.wanted = self._wanted_blob_only if blob_only else None

    @property
    def evicted(self) -> int:
        """Live blob files forgotten to stay within ``MAX_LIVE_BLOB_FILES`` (their
        deletions come without size, cf and lifetime)."""
        return self.live_blob_files.evicted

    # The hot path's prefilter: only JSON we will use gets decoded.
    @staticmethod
    def _wanted_blob_only(payload: bytes) -> bool:
        return any(m in payload for m in _WANTED_BLOB_ONLY)

    def feed(self, parsed: LogLine) -> list[Any]:
        """Decode one parsed line; returns the Info values it yields (0 or 1)."""
        kind = parsed.kind
        if kind == "event":
            info = self._event(parsed.fields or {}, parsed.truncated)
            return [info] if info is not None else []
        if kind == "job":
            cf, job_id, job_kind = parsed.value
            job = self.jobs.begin(job_id, job_kind)
            job.cf = cf
            return []
        if kind == "session":
            if parsed.value == self.session_id:
                return []  # the header again, at the top of a rolled LOG file
            # A new DB session (reopen): job ids restart, forget the old ones.
            self.session_id = parsed.value
            self.session_closed = False
            self.jobs.clear()
            self.open_jobs.clear()
            self.session_created.clear()
            self.session_deleted.clear()
            return [SessionInfo(self.db_name, self.session_id)]
        if kind == "shutdown":
            if self.session_closed:
                return []
            self.session_closed = True
            return [SessionInfo(self.db_name, self.session_id, ended=True)]
        if kind == "new_db":
            # A database created afresh at this path (the old one removed): its file numbers
            # start again, nothing we knew of the old one's files holds.
            self.live_blob_files.clear()
            return [SessionInfo(self.db_name, self.session_id, new_db=True)]
        if kind == "db_path":
            return []
        return [LineSkippedInfo(self.db_name, "malformed_line", str(parsed.value))]

    def feed_lines(self, lines: list[bytes]) -> list[Any]:
        """Decode a batch of raw lines (no newlines); the Info values they yield, in order.

        Exactly ``[i for l in lines if (p := parse_line(l, self.wanted)) for i in self.feed(p)]``,
        but the lines are joined and scanned in C: only lines that can mean
        something (an event mark, a job, session or DB path line) reach Python,
        and blob file events in RocksDB's exact shape become Info values straight
        from the scan's tuples (no json.loads, no dict, no LogLine).
        """
        if not lines:
            return []
        wanted = self.wanted
        if wanted is not None and wanted is not LogDecoder._wanted_blob_only:
            # A prefilter of the caller's: it must see every event line, as parse_line shows it.
            return [i for line in lines if (p := parse_line(line, wanted)) for i in self.feed(p)]
        buf = b"\n".join(lines)
        out: list[Any] = []
        # Plain-text lines that may matter (rare): line start -> line end. (One that also
        # has an event mark is decoded as parse_line does it: as an event.)
        rare: dict[int, int] = {}
        find, rfind = buf.find, buf.rfind
        for needle in _PLAIN_NEEDLES:
            i = find(needle)
            while i >= 0:
                ls = rfind(b"\n", 0, i) + 1
                le = find(b"\n", i)
                if le < 0:
                    le = len(buf)
                rare[ls] = le
                i = find(needle, le)
        # The event lines between them are scanned a stretch at a time, in order.
        pos = 0
        for ls, le in sorted(rare.items()):
            self._scan_events(buf, pos, ls, out)
            parsed = parse_line(buf[ls:le], wanted)
            if parsed is not None:
                out.extend(self.feed(parsed))
            pos = le
        self._scan_events(buf, pos, len(buf), out)
        return out

    def _scan_events(self, buf: bytes, pos: int, end: int, out: list[Any]) -> None:
        """The event lines of ``buf[pos:end]`` (whole lines) -> ``out``.

        A blob line in RocksDB's exact shape goes from the regex's groups straight to
        _created / _deleted (what _blob_created / _blob_deleted call after checking the
        dict's fields: the regex admits only ints below 2**63 and ASCII strings, so
        there is nothing left to check); json.loads, the dict, LogLine, feed and
        _event were most of the cost per event. Every other event line takes
        parse_line's path from its payload.
        """
        wanted = self.wanted
        created, deleted = self._created, self._deleted
        append = out.append
        for (t, cf, cjob, cnum, count, nbytes, cks, func, cst,
             djob, dnum, dst, payload) in BATCH_EVENT_RE.findall(buf, pos, end):
            if djob:
                append(deleted(int(djob), int(t), int(dnum), dst.decode() or OK))
            elif cjob:
                append(created(int(cjob), int(t), int(cnum), cf.decode(), int(count), int(nbytes),
                               cks.decode(), func.decode(), cst.decode() or OK))
            elif wanted is None or wanted(payload):
                out.extend(self.feed(parse_payload(payload)))

    def state(self) -> dict[str, Any]:
        """What this decoder remembers, JSON-able (a checkpoint keeps it with the LOG offset).

        ``live_blob_files`` is ``[[number, size, cf, created_micros], ...]``, oldest first
        (the format of every version); ``evicted`` was added with the bound.
        """
        return {
            "session_id": self.session_id,
            "jobs": [[job_id, j.kind, j.cf, j.reason, j.start_micros] for job_id, j in self.jobs.items()],
            "live_blob_files": [list(e) for e in self.live_blob_files.entries()],
            "evicted": self.live_blob_files.evicted,
            "session_created": list(self.session_created),
            "session_deleted": list(self.session_deleted),
            "session_closed": self.session_closed,
        }

    def restore(self, state: Mapping[str, Any] | None) -> None:
        """Take back what :meth:`state` returned (resuming where a checkpoint left off).

        Also a state written before the bounds (unsorted, uncapped, no ``evicted``):
        beyond the bounds the oldest jobs and files are dropped, the files counted
        as evicted.
        """
        if not state:
            return
        self.session_id = state.get("session_id")
        self.jobs.clear()
        jobs = list(state.get("jobs", []))
        for job_id, kind, cf, reason, start in jobs[-self.MAX_JOBS:]:
            self.jobs.put(int(job_id), Job(kind, cf, reason, start))
        table = self.live_blob_files
        table.clear()
        table.evicted = 0
        rows = sorted(((int(n), size, cf, created) for n, size, cf, created in state.get("live_blob_files", [])),
                      key=lambda row: row[0])
        for n, size, cf, created in rows:
            table.add(n, size, cf, created)
        evicted = state.get("evicted", 0)
        table.evicted += evicted if type(evicted) is int and evicted >= 0 else 0
        for table, key in ((self.session_created, "session_created"), (self.session_deleted, "session_deleted")):
            table.clear()
            for n in state.get(key, []):
                table.add(int(n))
        self.session_closed = bool(state.get("session_closed", False))

    def blob_path(self, cf: str | None, number: int) -> str:
        return f"{self._blob_dir(cf)}/{number:06d}.blob"

    def table_path(self, number: int) -> str:
        return f"{self.db_name}/{number:06d}.sst"

    def _event(self, f: dict[str, Any], truncated: bool) -> Any:
        event = f.get("event")
        if type(event) is not str:
            return LineSkippedInfo(self.db_name, "malformed_line", f"event JSON without an event name: {event!r}"[:200])
        job_id = uint(f.get("job"))
        when = uint(f.get("time_micros"))
        if event == "blob_file_creation":
            return self._blob_created(f, job_id, when, truncated)
        if event == "blob_file_deletion":
            return self._blob_deleted(f, job_id, when)
        if event in _JOB_KIND:
            return self._job_event(event, f, job_id, when, truncated)
        if self.blob_only:
            return None
        if event == "table_file_creation":
            number = uint(f.get("file_number"))
            if number is None:
                return self._invalid_number(f)
            job = self.jobs.get(job_id)
            return TableFileCreationInfo(
                job_id, self.db_name, text(f.get("cf_name")), self.table_path(number), number,
                uint(f.get("file_size")), job.kind if job else "unknown",
                text(f.get("status")) or OK, when, self.session_id,
                uint(f.get("oldest_blob_file_number")),
            )
        if event == "table_file_deletion":
            number = uint(f.get("file_number"))
            if number is None:
                return self._invalid_number(f)
            return TableFileDeletionInfo(
                job_id, self.db_name, self.table_path(number), number,
                text(f.get("status")) or OK, when, self.session_id,
            )
        return None  # an event type we do not report (e.g. flush_started of a new kind)

    def _repeated(self, event: str, number: int) -> LineSkippedInfo:
        # RocksDB never reuses a file number within a session: the same line twice (a cut line
        # repeated, a line salvaged once mid-file and again at the end) is one event.
        return LineSkippedInfo(self.db_name, "repeated_event", f"{event} of file {number} was delivered before")

    def _invalid_number(self, f: dict[str, Any]) -> LineSkippedInfo:
        return LineSkippedInfo(
            self.db_name, "invalid_file_number",
            f"{f.get('event')!s}: file_number={f.get('file_number')!r}",
        )

    def _blob_created(self, f: dict[str, Any], job_id: int | None, when: int | None, truncated: bool) -> Any:
        number = uint(f.get("file_number"))
        if number is None:
            return self._invalid_number(f)
        return self._created(
            job_id, when, number, text(f.get("cf_name")), uint(f.get("total_blob_count")),
            uint(f.get("total_blob_bytes")), text(f.get("file_checksum")), text(f.get("file_checksum_func_name")),
            text(f.get("status")) or (None if truncated else OK))

    def _created(self, job_id: int | None, when: int | None, number: int, cf: str | None, count: int | None,
                 nbytes: int | None, checksum: str | None, checksum_func: str | None, status: str | None) -> Any:
        job = self.jobs.get(job_id)
        if cf is None and job is not None:
            cf = job.cf
        if status == OK or status is None:  # RocksDB >= 10.4 also logs failed creations
            if number in self.session_created or number in self.session_deleted:
                return self._repeated("blob_file_creation", number)
        path = self.blob_path(cf, number)
        size = self._file_size(path)
        if status == OK or status is None:
            self.live_blob_files.created(number, size, cf, when)
            self.session_created.add(number)
        return BlobFileCreationInfo(
            job_id, self.db_name, cf, path, number, job.kind if job else "unknown", count, nbytes,
            checksum, checksum_func, status or "unknown", size, when, self.session_id,
            job.reason if job else None,
        )

    def _blob_deleted(self, f: dict[str, Any], job_id: int | None, when: int | None) -> Any:
        number = uint(f.get("file_number"))
        if number is None:
            return self._invalid_number(f)
        return self._deleted(job_id, when, number, text(f.get("status")) or OK)

    def _deleted(self, job_id: int | None, when: int | None, number: int, status: str) -> Any:
        # A failed deletion (e.g. the retry after a reopen of a file already gone)
        # is reported with its status but does not end the file's life.
        live = self.live_blob_files
        if status == OK:
            if number in self.session_deleted:
                return self._repeated("blob_file_deletion", number)
            known = live.pop(number)
            self.session_deleted.add(number)
        else:
            known = live.get(number)
        size, cf, created = known if known is not None else (None, None, None)
        job = self.jobs.get(job_id)
        reason = "purge" if job_id == 0 else job.kind if job is not None else "unknown"
        return BlobFileDeletionInfo(
            job_id, self.db_name, self.blob_path(cf, number), number, status, when,
            self.session_id, size, cf, created, reason, job.reason if job is not None else None,
            known is not None,
        )

    def _job_event(self, event: str, f: dict[str, Any], job_id: int | None, when: int | None, truncated: bool) -> Any:
        kind, finished = _JOB_KIND[event]
        if job_id is None:
            return LineSkippedInfo(self.db_name, "invalid_job_id", f"{event}: job={f.get('job')!r}")
        job = self.jobs.begin(job_id, kind)
        if not finished:
            job.start_micros = when
            job.reason = text(f.get(_REASON_KEY.get(kind, ""))) if kind in _REASON_KEY else None
        if self.blob_only:
            return None
        details = {k: v for k, v in f.items() if k not in _COMMON_KEYS}
        cf = text(f.get("cf_name")) or job.cf
        info = _JOB_TYPE[kind](
            job_id, self.db_name, cf, self.session_id, when, job.reason, finished,
            job.start_micros, details, truncated,
        )
        key = (self.session_id, job_id)
        if finished:
            self.open_jobs.pop(key, None)
        else:
            self.open_jobs[key] = info
            if len(self.open_jobs) > self.OPEN_JOBS_MAX:
                self.open_jobs.popitem(last=False)
        return info

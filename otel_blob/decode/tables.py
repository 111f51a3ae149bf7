"""The decoder's memory of one DB: live blob files and jobs, both bounded.

:class:`LiveBlobFiles` -- the blob files alive as far as the LOG (or the directory
scan at the start of a watch) says, with their size, column family and creation
time, so a deletion can carry them; :class:`JobTable` -- the jobs of the current
session, so a blob file knows which job kind (and column family) made it. Each is
the only table of its kind: listeners read what they need from the ``...Info``
values the decoder makes. Pure data structures: no I/O.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections import OrderedDict, deque
from collections.abc import Mapping as _MappingABC
from dataclasses import dataclass
from itertools import compress
from typing import Any, Iterator

__all__ = ["Job", "JobTable", "LiveBlobFiles", "RecentNumbers"]


@dataclass(slots=True)
class Job:
    """What the LOG said of one job: its kind, column family, RocksDB reason, start time."""

    kind: str  # flush | compaction | recovery
    cf: str | None = None
    reason: str | None = None  # flush_reason / compaction_reason (None for recovery)
    start_micros: int | None = None


class JobTable:
    """The jobs of the current session: job id -> :class:`Job`, at most ``cap``, oldest forgotten first.

    Job ids restart at every open: :meth:`clear` when a new session starts.
    """

    __slots__ = ("cap", "_jobs")

    def __init__(self, cap: int) -> None:
        self.cap = max(1, int(cap))
        self._jobs: OrderedDict[int, Job] = OrderedDict()

    def get(self, job_id: Any) -> Job | None:
        return self._jobs.get(job_id) if job_id is not None else None

    def begin(self, job_id: int, kind: str) -> Job:
        """The job ``job_id`` of ``kind``: the one we know, or a new one (an id seen for
        another kind of job is a new job)."""
        job = self._jobs.get(job_id)
        if job is None or job.kind != kind:
            job = self._jobs[job_id] = Job(kind)
            if len(self._jobs) > self.cap:
                self._jobs.popitem(last=False)
        return job

    def put(self, job_id: int, job: Job) -> None:
        self._jobs[job_id] = job
        if len(self._jobs) > self.cap:
            self._jobs.popitem(last=False)

    def items(self) -> Iterator[tuple[int, Job]]:
        return iter(list(self._jobs.items()))

    def clear(self) -> None:
        self._jobs.clear()

    def __len__(self) -> int:
        return len(self._jobs)


class RecentNumbers:
    """The last ``cap`` blob file numbers seen created (or deleted) in a session: a LOG line seen
    twice (a cut line repeated, a line salvaged mid-file and again as the partial last line) must
    not be a second file or end a file's life twice. RocksDB never reuses a file number within a
    session, and a repeated line is close to its original, so a short memory is enough."""

    __slots__ = ("cap", "_order", "_set")

    def __init__(self, cap: int) -> None:
        self.cap = max(1, int(cap))
        self._order: deque[int] = deque()
        self._set: set[int] = set()

    def add(self, number: int) -> None:
        if number in self._set:
            return
        self._order.append(number)
        self._set.add(number)
        if len(self._order) > self.cap:
            self._set.discard(self._order.popleft())

    def __contains__(self, number: object) -> bool:
        return number in self._set

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._order))

    def __len__(self) -> int:
        return len(self._order)

    def clear(self) -> None:
        self._order.clear()
        self._set.clear()


_I64 = 1 << 63  # sizes and times at or above this (never seen from RocksDB) are kept as None
_U64 = 1 << 64  # file numbers at or above this (not a RocksDB uint64) are not kept
_MAX_CF_NAMES = 4096  # distinct column family names kept; beyond, an entry's cf is None
_COMPACT_MIN = 4096  # dead array entries tolerated before a rebuild


class LiveBlobFiles(_MappingABC):
    """The blob files alive as far as the decoder knows: number -> (size, cf, created_micros).

    Bounded: at most ``cap`` entries. A creation beyond it evicts the oldest file
    -- the lowest number: RocksDB numbers files in creation order -- and counts it
    in :attr:`evicted`; that file's deletion is then reported without size, cf and
    lifetime, as for a file created before the watch began.

    Compact and fast in two tiers. The newest files (at most ``young``: cap / 8, up
    to 8,192) are a dict, ~190 bytes an entry: creations and the deletions of
    recent files -- in the benchmark's blob GC workload every deletion is of one
    of the last ~2,000 files created -- cost what a dict costs. When it is full
    its older half moves, lowest numbers first, into parallel arrays sorted by
    number: ~29 bytes an entry (number, size, time as 8-byte integers, the cf as
    a 4-byte index into the few distinct names, an alive flag), looked up by
    bisection. Every array number is below every dict number. Dead array entries
    only clear their flag until there are more than half as many as live ones;
    then the arrays are rebuilt.
    """

    __slots__ = ("cap", "evicted", "_young_max", "_young", "_num", "_size", "_when", "_cf", "_alive",
                 "_top", "_head", "_live", "_dead", "_cf_names", "_cf_index")

    def __init__(self, cap: int, young: int | None = None) -> None:
        self.cap = max(0, int(cap))
        self._young_max = max(1, min(8192, self.cap // 8) if young is None else int(young))
        self.evicted = 0
        self._reset()

    def _reset(self) -> None:
        # number -> (size, cf, created); cf is the one str object per name in _cf_names
        self._young: dict[int, tuple[int | None, str | None, int | None]] = {}
        self._num = array("Q")
        self._size = array("q")  # -1: unknown
        self._when = array("q")  # -1: unknown
        self._cf = array("I")  # index into _cf_names; 0: None
        self._alive = bytearray()
        self._top = -1  # the arrays' last number (-1: none)
        self._head = 0  # every array entry before it is dead
        self._live = 0  # alive array entries
        self._dead = 0
        self._cf_names: list[str | None] = [None]
        self._cf_index: dict[str | None, int] = {None: 0}

    # -- Mapping ------------------------------------------------------------------

    def __len__(self) -> int:
        return self._live + len(self._young)

    def __iter__(self) -> Iterator[int]:
        for e in self.entries():
            yield e[0]

    def __contains__(self, number: object) -> bool:
        return self.get(number) is not None

    def __getitem__(self, number: int) -> tuple[int | None, str | None, int | None]:
        v = self.get(number)
        if v is None:
            raise KeyError(number)
        return v

    def get(self, number: Any, default: Any = None) -> Any:
        if type(number) is not int:
            return default
        v = self._young.get(number)
        if v is not None:
            return v
        i = self._find(number)
        return self._entry(i) if i >= 0 else default

    def entries(self) -> Iterator[tuple[int, int | None, str | None, int | None]]:
        """(number, size, cf, created_micros) of every entry, oldest (lowest number) first."""
        h = self._head
        names = self._cf_names
        for n, s, w, c, a in zip(self._num[h:], self._size[h:], self._when[h:], self._cf[h:], self._alive[h:]):
            if a:
                yield n, (None if s < 0 else s), names[c], (None if w < 0 else w)
        young = self._young
        for n in sorted(young):
            yield (n, *young[n])

    # -- updates ------------------------------------------------------------------

    def add(self, number: Any, size: Any, cf: Any, when: Any) -> None:
        """A file exists (a checkpoint, a directory scan): anything else than a file
        number (an int in 0..2**64) is ignored, a size or time that is not an int in
        0..2**63 or a cf that is not a str kept as None."""
        if type(number) is not int or not 0 <= number < _U64:
            return
        self.created(number, size if type(size) is int and 0 <= size < _I64 else None, cf if type(cf) is str else None,
                     when if type(when) is int and 0 <= when < _I64 else None)

    def created(self, number: int, size: int | None, cf: str | None, when: int | None) -> None:
        """A file was created (the decoder's hot path: ``number`` an int >= 0, ``cf`` a str
        or None); a known number is updated in place."""
        if number <= self._top:  # not newer than the arrays: in order there
            c = self._cf_index.get(cf)
            if self._add_old(number, size, self._cf_name(cf) if c is None else c, when) \
                    and self._live + len(self._young) > self.cap:
                self._evict()
            return
        young = self._young
        n = len(young)
        young[number] = (size, cf, when)
        if (n >= self._young_max or self._live + n >= self.cap) and len(young) > n:  # rarely
            if n >= self._young_max:
                self._age()
            if self._live + len(self._young) > self.cap:
                self._evict()

    def pop(self, number: int) -> tuple[int | None, str | None, int | None] | None:
        """Forget a deleted file; what was known of it (None: nothing)."""
        v = self._young.pop(number, None)
        if v is not None:
            return v
        if type(number) is not int or number > self._top:
            return None
        # The arrays; _find and _entry inlined.
        num = self._num
        head = self._head
        if len(num) == head:
            return None
        i = bisect_left(num, number, head)
        if num[i] != number:
            return None
        alive = self._alive
        if not alive[i]:
            return None
        alive[i] = 0
        self._live -= 1
        dead = self._dead = self._dead + 1
        s = self._size[i]
        w = self._when[i]
        out = (None if s < 0 else s), self._cf_names[self._cf[i]], (None if w < 0 else w)
        if i == head:
            self._advance()
        if dead > _COMPACT_MIN and dead > self._live >> 1:
            self._compact()
        return out

    def clear(self) -> None:
        self._reset()

    # -- internals ------------------------------------------------------------------

    def _cf_name(self, cf: Any) -> int:
        """The index of a column family name not seen yet (0: not a name, or too many names;
        the names no entry uses any more are dropped when the arrays are rebuilt)."""
        if type(cf) is not str or len(self._cf_names) >= _MAX_CF_NAMES:
            return 0
        c = self._cf_index[cf] = len(self._cf_names)
        self._cf_names.append(cf)
        return c

    def _add_old(self, number: int, size: Any, c: int, when: Any) -> bool:
        """Into the arrays; False if the number was there alive (updated)."""
        s = size if type(size) is int and 0 <= size < _I64 else -1
        w = when if type(when) is int and 0 <= when < _I64 else -1
        num = self._num
        if number > self._top:
            self._top = number
            num.append(number)
            self._size.append(s)
            self._when.append(w)
            self._cf.append(c)
            self._alive.append(1)
        else:
            i = bisect_left(num, number, self._head)
            if num[i] == number:
                self._size[i] = s
                self._when[i] = w
                self._cf[i] = c
                if self._alive[i]:
                    return False
                self._alive[i] = 1
                self._dead -= 1
            else:
                num.insert(i, number)
                self._size.insert(i, s)
                self._when.insert(i, w)
                self._cf.insert(i, c)
                self._alive.insert(i, 1)
        self._live += 1
        return True

    def _age(self) -> None:
        """Move the older half of the newest files into the arrays (lowest numbers first)."""
        young = self._young
        order = sorted(young)
        m = len(order) // 2
        old = order[:m]  # (add() and the decoder keep only RocksDB file numbers: all fit the "Q" array)
        rows = [young[n] for n in old]  # all above the arrays' numbers: appended in bulk
        self._num.extend(old)
        if old:
            self._top = old[-1]
        self._size.extend([r[0] if type(r[0]) is int and 0 <= r[0] < _I64 else -1 for r in rows])
        self._when.extend([r[2] if type(r[2]) is int and 0 <= r[2] < _I64 else -1 for r in rows])
        index = self._cf_index
        cfs = [index.get(r[1]) for r in rows]
        if None in cfs:  # a name not seen yet
            cfs = [self._cf_name(r[1]) if c is None else c for c, r in zip(cfs, rows)]
        self._cf.extend(cfs)
        self._alive.extend(b"\x01" * len(old))
        self._live += len(old)
        self._young = {n: young[n] for n in order[m:]}

    def _find(self, number: int) -> int:
        num = self._num
        if number > self._top or len(num) == self._head:
            return -1
        i = bisect_left(num, number, self._head)
        if num[i] == number and self._alive[i]:
            return i
        return -1

    def _entry(self, i: int) -> tuple[int | None, str | None, int | None]:
        s = self._size[i]
        w = self._when[i]
        return (None if s < 0 else s), self._cf_names[self._cf[i]], (None if w < 0 else w)

    def _advance(self) -> None:
        h = self._alive.find(1, self._head)
        if h >= 0:
            self._head = h
        else:  # every array entry dead: start afresh (the dict may hold any numbers again)
            self._num, self._size, self._when, self._cf = array("Q"), array("q"), array("q"), array("I")
            self._alive = bytearray()
            self._top = -1
            self._head = self._dead = 0

    def _evict(self) -> None:
        while self._live + len(self._young) > self.cap:
            if self._live:
                i = self._head
                self._alive[i] = 0
                self._live -= 1
                self._dead += 1
                self._advance()
            else:  # all in the dict (a cap below its size)
                del self._young[min(self._young)]
            self.evicted += 1
        if self._dead > _COMPACT_MIN and self._dead > self._live >> 1:
            self._compact()

    def _compact(self) -> None:
        """Drop the dead array entries (and the cf names no entry uses any more)."""
        alive = self._alive
        self._num = array("Q", compress(self._num, alive))
        self._top = self._num[-1] if self._num else -1
        self._size = array("q", compress(self._size, alive))
        self._when = array("q", compress(self._when, alive))
        cf = array("I", compress(self._cf, alive))
        if len(self._cf_names) > 64:
            names = self._cf_names
            used = {0, *cf}
            used.update(self._cf_index.get(e[1], 0) for e in self._young.values())
            order = sorted(used)
            remap = {old: new for new, old in enumerate(order)}
            cf = array("I", [remap[c] for c in cf])
            self._cf_names = [names[old] for old in order]
            self._cf_index = {name: i for i, name in enumerate(self._cf_names)}
        self._cf = cf
        self._alive = bytearray(b"\x01") * self._live
        self._head = 0
        self._dead = 0

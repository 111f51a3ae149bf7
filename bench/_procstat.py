"""CPU accounting from /proc, for the overhead benchmark's workers (Linux only).

* a thread's CPU: ``/proc/self/task/<tid>/schedstat`` (ns; falls back to
  ``stat`` utime+stime in clock ticks);
* a process's CPU: ``/proc/<pid>/stat`` utime+stime+cutime+cstime (ticks);
* the helper process(es) of a worker: its descendants, found through
  ``/proc/<pid>/task/*/children``.

Counters are cumulative and remember threads and processes that have exited
(their last value is kept), so the difference of two snapshots never goes
negative because a thread ended.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
HELPER_MODULE = "otel_blob.helper"  # the helper process's command line names it
WATCHER_THREAD = "otel_blob-watcher"

# thread categories reported by Accountant.snapshot()
CATEGORIES = ("main", "watcher", "otel_sdk", "rocksdb", "other")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _stat_fields(text: str) -> tuple[str, list[str]]:
    """(comm, fields after comm) of a /proc stat line; fields[0] is the state (field 3)."""
    i, j = text.index("("), text.rindex(")")
    return text[i + 1 : j], text[j + 2 :].split()


def task_cpu_ns(pid: int | str, tid: int | str) -> int | None:
    s = _read(f"/proc/{pid}/task/{tid}/schedstat")
    if s:
        try:
            return int(s.split()[0])
        except (ValueError, IndexError):
            pass
    s = _read(f"/proc/{pid}/task/{tid}/stat")
    if not s:
        return None
    _, f = _stat_fields(s)
    return (int(f[11]) + int(f[12])) * 1_000_000_000 // _TICK


def task_comm(pid: int | str, tid: int | str) -> str:
    return (_read(f"/proc/{pid}/task/{tid}/comm") or "").strip()


def process_cpu_ns(pid: int | str) -> int | None:
    """utime+stime of the process and of its waited-for children (ticks -> ns)."""
    s = _read(f"/proc/{pid}/stat")
    if not s:
        return None
    _, f = _stat_fields(s)
    return sum(int(x) for x in f[11:15]) * 1_000_000_000 // _TICK


def children(pid: int | str) -> list[int]:
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        s = _read(f"/proc/{pid}/task/{tid}/children")
        if s:
            out.extend(int(x) for x in s.split())
    return out


def descendants(pid: int | str) -> list[int]:
    out, todo = [], [pid]
    while todo:
        for c in children(todo.pop()):
            out.append(c)
            todo.append(c)
    return out


def process_cmdline(pid: int | str) -> str:
    s = _read(f"/proc/{pid}/cmdline") or ""
    return " ".join(s.split("\0")).strip()


class Accountant:
    """Cumulative CPU of this process by thread category, and of its descendants."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._threads: dict[int, list[Any]] = {}  # tid -> [category, last ns]
        self._children: dict[int, list[Any]] = {}  # pid -> [cmdline, last ns]

    def _category(self, tid: int, names: dict[int, str]) -> str:
        if tid == self.pid:
            return "main"
        name = names.get(tid)
        if name is not None:
            if name == WATCHER_THREAD:
                return "watcher"
            if name.startswith("Otel"):
                return "otel_sdk"
            return "other"
        return "rocksdb" if task_comm(self.pid, tid).startswith("rocksdb") else "other"

    def snapshot(self) -> dict[str, Any]:
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{self.pid}/task")]
        except OSError:
            tids = []
        for tid in tids:
            ns = task_cpu_ns(self.pid, tid)
            if ns is None:
                continue
            rec = self._threads.get(tid)
            if rec is None:
                rec = self._threads[tid] = [self._category(tid, names), 0]
            elif rec[0] == "other" and names.get(tid) == WATCHER_THREAD:
                rec[0] = "watcher"  # a tid seen before the thread was named/registered
            rec[1] = ns
        for c in descendants(self.pid):
            ns = process_cpu_ns(c)
            if ns is None:
                continue
            rec = self._children.get(c)
            if rec is None:
                rec = self._children[c] = [process_cmdline(c)[:200], 0]
            elif HELPER_MODULE not in rec[0]:
                # Seen between fork and exec (with our own command line): read it again.
                rec[0] = process_cmdline(c)[:200] or rec[0]
            rec[1] = ns
        threads = dict.fromkeys(CATEGORIES, 0)
        for cat, ns in self._threads.values():
            threads[cat] += ns
        alive = {n for n in names.values()}
        helpers = [cmd for cmd, _ in self._children.values()]
        if any(HELPER_MODULE in cmd for cmd in helpers):
            mode = "process"
        else:
            mode = "thread" if WATCHER_THREAD in alive or threads["watcher"] else "none"
        return {
            "t": time.time(),
            "process_ns": time.process_time_ns(),  # every thread of this process, exited ones too
            "threads_ns": threads,
            "children_ns": sum(ns for _, ns in self._children.values()),
            "children": helpers,
            "mode": mode,
        }

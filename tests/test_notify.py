"""The watcher sleeps on inotify while a LOG is quiet and wakes when RocksDB writes.

Each loop here has a fallback sleep of 60 s: an event that arrives within the await
timeout (10 s) can only have come through a notification (or, while a rotation is
in progress, the short poll). With notifications off the loop polls as before."""

from __future__ import annotations

import os
import threading
import time

import pytest

from otel_blob.watching.listener import EventListener
from otel_blob.source.notify import make_notifier, wait_readable
from otel_blob.watching import WatchLoop, start_watch
from test_engine_bad_input import creation, real_db  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(make_notifier() is None, reason="no inotify on this system")


class Arrivals(EventListener):
    def __init__(self) -> None:
        self.numbers: list[int] = []
        self.cond = threading.Condition()

    def on_blob_file_created(self, info) -> None:
        with self.cond:
            self.numbers.append(info.file_number)
            self.cond.notify_all()

    def wait_for(self, number: int, timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: number in self.numbers, timeout)


def _append(log: str, data: bytes) -> None:
    with open(log, "ab") as f:
        f.write(data)


@pytest.fixture
def many_fds():
    """1,100 descriptors open, as in a server with many sockets: what we open next is numbered
    over 1024, where select() refuses to wait (it returned at once: the loop spun)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    yield held
    for fd in held:
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def quiet_loop():
    loop = WatchLoop()
    loop.NOTIFY_FALLBACK = 60.0
    yield loop
    loop.stop_all()


@pytest.mark.parametrize("fds", ["few_fds", "fds_over_1024"])
def test_a_write_to_a_quiet_log_wakes_the_watcher(real_db, fds, request):
    if fds == "fds_over_1024":
        request.getfixturevalue("many_fds")
    quiet_loop = request.getfixturevalue("quiet_loop")  # after the descriptors: its own are numbered over 1024
    path, _ = real_db
    log = os.path.join(path, "LOG")
    got = Arrivals()
    w = start_watch(path, log, got, loop=quiet_loop, poll_interval=0.001)
    _append(log, creation(900001))
    assert got.wait_for(900001)
    # Quiet now: with a 1 ms poll interval a polling loop would make ~300 polls in 0.3 s.
    polls = w.stats.polls
    time.sleep(0.3)  # the scenario's quiet period, not a synchronisation
    assert w.stats.polls - polls < 30
    _append(log, creation(900002))
    assert got.wait_for(900002)


def test_rotation_while_sleeping_is_followed(real_db, quiet_loop):
    """RocksDB renames LOG to LOG.old.<µs> and starts a new LOG: the rename wakes the
    loop, it polls until the new LOG exists and then sleeps on the new file."""
    path, _ = real_db
    log = os.path.join(path, "LOG")
    got = Arrivals()
    start_watch(path, log, got, loop=quiet_loop, poll_interval=0.005)
    _append(log, creation(900010))
    assert got.wait_for(900010)
    os.rename(log, log + ".old.%d" % (time.time_ns() // 1000))
    with open(log, "wb") as f:
        f.write(b"2026/11/26-14:11:25.700000 1 RocksDB version: 9.8.4\n")
    _append(log, creation(900011))
    assert got.wait_for(900011)
    _append(log, creation(900012))  # the new file is watched too
    assert got.wait_for(900012)


def test_without_notifications_the_loop_polls(real_db):
    path, _ = real_db
    log = os.path.join(path, "LOG")
    loop = WatchLoop(notify=False)
    got = Arrivals()
    w = start_watch(path, log, got, loop=loop, poll_interval=0.005)
    try:
        _append(log, creation(900020))
        assert got.wait_for(900020)
        polls = w.stats.polls
        time.sleep(0.3)  # the scenario's quiet period
        assert w.stats.polls - polls >= 10  # it kept polling
    finally:
        loop.stop_all()


def test_wait_readable_with_descriptors_over_1024(many_fds):
    r, w = os.pipe()
    try:
        assert r >= 1024 and w >= 1024
        assert wait_readable([r], 0.0) == []
        os.write(w, b"x")
        assert wait_readable([r], 10.0) == [r]  # select() raised ValueError here
    finally:
        os.close(r)
        os.close(w)

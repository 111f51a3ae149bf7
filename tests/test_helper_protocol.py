"""The helper protocol: typed, versioned messages; a helper refuses what it does not understand."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from otel_blob.instrument import protocol as p

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("msg", [
    p.Hello(p.VERSION, {"service.name": "app", "n": 2}, "debug", "all", "hash", 0.05, 7, 3.0, "/tmp/s"),
    p.WatchDb(3, "/db", "/db/LOG", {"dev": 1, "ino": 2, "head": "2026/01/01 x"}, None),
    p.Manual(4, "/db", "flush", "0" * 31 + "1", "0" * 15 + "2", 1, 1_700_000_000_000_000),
    p.ManualDone(4, 1_700_000_000_000_001),
    p.Manual(5, "/db", "compaction", "a" * 32, "b" * 16, 1, 1, cf="users", name="Rdict.compact_range",
             parent_span_id="c" * 16, parent_remote=True, attributes={"db.system.name": "rocksdb", "n": 3}),
    p.ManualDone(5, 2, error="RocksDBError: IO error"),
    p.Ready(), p.Error("boom"), p.Position(3, {"files": [], "stopped": True}), p.Log(30, "exporting failed"),
], ids=lambda m: m.op)
def test_every_message_round_trips(msg):
    line = p.encode(msg)
    assert line.endswith(b"\n") and b"\n" not in line[:-1]
    assert p.decode(line) == msg


@pytest.mark.parametrize("line, words", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"op": "launch"}', "unknown op"),
    (b'{"op": "watch", "key": "3", "db": "/db", "log": "/db/LOG"}', "watch.key must be int"),
    (b'{"op": "watch", "key": 3, "db": "/db"}', "watch:"),
    (b'{"op": "manual_done", "id": true, "end_us": 1}', "manual_done.id must be int"),
    (b'{"op": "position", "key": 1, "position": []}', "position.position must be dict"),
])
def test_what_is_not_a_message_is_a_protocol_error(line, words):
    with pytest.raises(p.ProtocolError, match=words):
        p.decode(line)


def test_unknown_fields_are_ignored():
    # A newer application may add fields: an older helper takes what it knows.
    assert p.decode(b'{"op": "ready", "version": 2, "color": "blue"}') == p.Ready(2)


def _run_helper(first_line: bytes) -> tuple[int, list[p.Message]]:
    r, w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "otel_blob.helper", str(w)], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(w,),
                            env={**os.environ, "OTEL_TRACES_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
                                 "OTEL_METRICS_EXPORTER": "none"})
    os.close(w)
    assert proc.stdin is not None
    proc.stdin.write(first_line)
    proc.stdin.close()
    with os.fdopen(r, "rb") as answers:
        replies = [p.decode(line) for line in answers]
    return proc.wait(30), replies


def test_a_helper_of_another_version_says_so_and_exits():
    hello = json.loads(p.encode(p.Hello(p.VERSION)))
    hello["version"] = p.VERSION + 1
    code, replies = _run_helper(json.dumps(hello).encode() + b"\n")
    assert code == 2
    assert len(replies) == 1 and isinstance(replies[0], p.Error) and "version" in replies[0].error


def test_a_helper_that_gets_no_hello_refuses():
    code, replies = _run_helper(p.encode(p.WatchDb(1, "/db", "/db/LOG")))
    assert code == 2 and isinstance(replies[0], p.Error) and "expected hello" in replies[0].error


def test_a_helper_whose_application_is_gone_at_once_exits_cleanly():
    code, replies = _run_helper(p.encode(p.Hello(p.VERSION)))
    assert code == 0 and replies == [p.Ready()]

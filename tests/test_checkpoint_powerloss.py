"""The ``--checkpoint`` file after a power loss or a crash: whatever is on disk, the
sidecar starts cleanly or says in one line why it cannot -- never a traceback.

``otel_blob/checkpoint.py`` writes a temporary file, fsyncs it, renames it over the
checkpoint and fsyncs the directory, so after a power loss the checkpoint is the old
one or the new one. The file systems that break this promise leave a checkpoint cut
short (at any byte), empty, or full of zeros (a size updated before its data blocks);
a crash between writing the temporary file and the rename leaves that file behind.
Here each of those is put on disk by hand next to a real checkpoint written by a real
``otel-blob watch`` of a real database, and the console script is run on it.

What test_cli.py already covers is not repeated (a cut JSON, an empty file, another
version, a non-object; SIGKILL and resume with rotations).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import rocksdict

from dbutil import blob_options, quiesce, write_round
from otel_blob.watching import checkpoint as ckpt_mod
from test_cli import Watcher, clean_env, run


def created_lines(stdout: str) -> list[str]:
    return [l for l in stdout.splitlines() if l.startswith("+ created")]


def write_blobs(path: str, rounds: int, prefix: bytes) -> None:
    db = rocksdict.Rdict(path, blob_options())
    for r in range(rounds):
        write_round(db, 60, prefix=prefix + b"%d-" % r)
        db.flush()
    quiesce(db)
    db.close()


def watch_once(path: str, ckpt: str, *extra: str) -> Watcher:
    """A real ``otel-blob watch --checkpoint``: started, drained, stopped by SIGTERM."""
    env = clean_env(OTEL_BLOB_CHECKPOINT_INTERVAL="0.05", OTEL_BLOB_POLL_INTERVAL="0.01")
    w = Watcher(path, "--checkpoint", ckpt, "--console", *extra, env=env)
    w.wait_err(r"watching ")
    assert w.stop() == 0, w.stderr
    assert "Traceback" not in w.stderr
    return w


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory):
    """(db dir, checkpoint bytes) from a real watcher that read a real blob workload."""
    base = tmp_path_factory.mktemp("ckpt")
    path = str(base / "db")
    write_blobs(path, 3, b"a")
    ckpt = str(base / "ckpt.json")
    w = watch_once(path, ckpt, "--from-start")
    assert created_lines(w.stdout), w.stdout
    with open(ckpt, "rb") as f:
        good = f.read()
    data = json.loads(good)
    assert data["version"] == 1 and os.path.abspath(path) in data["dbs"]
    return path, good


def assert_one_line_error(p: subprocess.CompletedProcess, ckpt: str, *words: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("otel-blob: "), p.stderr[-2000:]
    assert ckpt in lines[0], lines[0]
    assert any(w in lines[0] for w in words), lines[0]


# The console script's entry point (pyproject: otel-blob = "otel_blob.cli:main"), run on
# every cut in one interpreter: hundreds of runs of the script itself would take minutes.
EVERY_CUT = textwrap.dedent(
    """
    import contextlib, io, json, signal, sys
    from otel_blob.cli import main

    db, good_path, out_dir = sys.argv[1:4]
    good = open(good_path, "rb").read()

    def hung(*_):
        raise TimeoutError("otel-blob watch did not stop: it accepted the cut checkpoint")

    signal.signal(signal.SIGALRM, hung)
    results = []
    for n in range(len(good)):
        ck = f"{out_dir}/ckpt-{n}.json"   # one path each: a refused checkpoint keeps its lock
        with open(ck, "wb") as f:
            f.write(good[:n])
        err = io.StringIO()
        signal.alarm(20)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                rc = main(["watch", db, "--checkpoint", ck, "--console"])
        except BaseException as exc:
            rc = f"raised {type(exc).__name__}: {exc}"
        finally:
            signal.alarm(0)
        results.append([n, ck, rc, err.getvalue()])
    print(json.dumps(results))
    """
)


def test_checkpoint_cut_at_every_byte(real_checkpoint, tmp_path):
    """The real checkpoint cut at every byte offset (0: an empty file): otel-blob watch
    refuses each with exit 2 and one line naming the file -- through its entry point for
    every offset, and through the console script itself for a few."""
    path, good = real_checkpoint
    good_path = tmp_path / "good.json"
    good_path.write_bytes(good)
    script = tmp_path / "every_cut.py"
    script.write_text(EVERY_CUT)
    cuts = tmp_path / "cuts"
    cuts.mkdir()
    p = subprocess.run([sys.executable, str(script), path, str(good_path), str(cuts)], capture_output=True,
                       text=True, env=clean_env(), timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    results = json.loads(p.stdout)
    assert len(results) == len(good) > 100
    for n, ck, rc, err in results:
        assert rc == 2, (n, rc, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, (n, err)
        assert ck in lines[0] and ("corrupt" in lines[0] or "empty" in lines[0]), (n, lines[0])
    for n in (0, 1, len(good) // 2, len(good) - 1):
        ck = str(tmp_path / f"script-{n}.json")
        with open(ck, "wb") as f:
            f.write(good[:n])
        assert_one_line_error(run("watch", path, "--checkpoint", ck, "--console", timeout=60), ck, "corrupt", "empty")


@pytest.mark.parametrize("name, content, words", [
    ("zeros", None, ("corrupt",)),  # the size reached the disk, the data blocks did not
    ("zeros, one block", b"\0" * 4096, ("corrupt",)),
    ("whitespace", b" \n\t\n", ("empty",)),
    ("binary", bytes(range(256)) * 4, ("corrupt",)),
    ("invalid utf-8 in a string", b'{"version": 1, "dbs": {"\xff\xfe": {}}}', ("corrupt",)),
    ("deep nesting", b"[" * 100_000, ("corrupt",)),
    ("a number", b"1", ("not an otel-blob checkpoint",)),
    ("null", b"null", ("not an otel-blob checkpoint",)),
    ("dbs not an object", b'{"version": 1, "dbs": []}', ("not an otel-blob checkpoint",)),
    ("entry not an object", b'{"version": 1, "dbs": {"/x": 5}}', ("corrupt",)),
    ("file offset a float", b'{"version": 1, "dbs": {"/x": {"files": [{"dev": 1, "ino": 2, "offset": 1.5}]}}}',
     ("corrupt",)),
])
def test_garbage_checkpoint_is_a_one_line_error(real_checkpoint, tmp_path, name, content, words):
    """What a power loss or another program can leave: zeros, whitespace, binary,
    invalid UTF-8, deep nesting, JSON of the wrong shape -- exit 2, one line, no traceback."""
    path, good = real_checkpoint
    ck = str(tmp_path / "ckpt.json")
    with open(ck, "wb") as f:
        f.write(b"\0" * len(good) if content is None else content)
    assert_one_line_error(run("watch", path, "--checkpoint", ck, "--console", timeout=60), ck, *words)


def test_checkpoint_path_that_is_a_directory(real_checkpoint, tmp_path):
    path, _good = real_checkpoint
    ck = tmp_path / "ckpt.json"
    ck.mkdir()
    assert_one_line_error(run("watch", path, "--checkpoint", str(ck), "--console", timeout=60), str(ck),
                          "is a directory")


def _bad_inner(good: bytes, db: str, change: str) -> bytes:
    data = json.loads(good)
    entry = data["dbs"][db]
    if change == "wall_us a string":
        entry["wall_us"] = "x"
    elif change == "head not a string":
        entry["files"][0]["head"] = 5
    elif change == "head not latin-1":
        entry["files"][0]["head"] = "\u20ac"
    elif change == "offset negative":
        entry["files"][0]["offset"] = -5
    elif change == "decoder a list":
        entry["decoder"] = [1, 2]
    elif change == "decoder job short":
        entry["decoder"]["jobs"] = [[1, 2]]
    elif change == "decoder blob file number a string":
        entry["decoder"]["live_blob_files"] = [["x", 1, None, None]]
    elif change == "open_jobs a string":
        entry["open_jobs"] = "x"
    else:
        raise AssertionError(change)
    return json.dumps(data).encode()


@pytest.mark.parametrize("change", [
    "wall_us a string", "head not a string", "head not latin-1", "offset negative", "decoder a list",
    "decoder job short", "decoder blob file number a string", "open_jobs a string",
])
def test_wrong_type_inside_a_valid_checkpoint_is_a_one_line_error(real_checkpoint, tmp_path, change):
    """Valid JSON of the right outer shape with one wrong value inside (another program,
    a hand edit, a bit flipped in a digit that stays JSON): exit 2 and one line, like any
    other checkpoint that cannot be understood."""
    path, good = real_checkpoint
    ck = str(tmp_path / "ckpt.json")
    with open(ck, "wb") as f:
        f.write(_bad_inner(good, os.path.abspath(path), change))
    try:
        p = run("watch", path, "--checkpoint", ck, "--console", timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("otel-blob watch accepted the checkpoint and kept running")
    assert_one_line_error(p, ck, "corrupt", "checkpoint")


def test_crash_between_tmp_write_and_rename_keeps_the_previous_checkpoint(tmp_path):
    """A real watcher checkpoints A; more blob files are written; a second run advances
    the checkpoint to B. Then the state a crash of that second save would have left is
    put back: A as the checkpoint, B (whole, and cut short) as temporary files of dead
    writers. A third run resumes from A -- it delivers again exactly what came after A
    -- ignores the temporary files (and removes them), and writes a valid checkpoint."""
    path = str(tmp_path / "db")
    ck = str(tmp_path / "ckpt.json")
    write_blobs(path, 2, b"a")
    first = watch_once(path, ck, "--from-start")
    a = open(ck, "rb").read()
    write_blobs(path, 2, b"b")  # a new session: the LOG is renamed and a new one written
    second = watch_once(path, ck)
    after_a = created_lines(second.stdout)
    assert created_lines(first.stdout) and after_a, (first.stdout, second.stdout)
    assert "from checkpoint" in second.stderr
    b = open(ck, "rb").read()
    assert b != a
    # The crash: A is still the checkpoint; B was being written by two processes now dead.
    with open(ck, "wb") as f:
        f.write(a)
    stale = [os.path.join(tmp_path, f".ckpt.json.tmp.{pid}") for pid in (4_000_001, 4_000_002)]
    with open(stale[0], "wb") as f:
        f.write(b)
    with open(stale[1], "wb") as f:
        f.write(b[: len(b) // 2])
    third = watch_once(path, ck)
    assert "from checkpoint" in third.stderr
    assert created_lines(third.stdout) == after_a, "did not resume from the previous checkpoint"
    data = ckpt_mod.load(ck)
    assert os.path.abspath(path) in data["dbs"]
    assert not any(os.path.exists(s) for s in stale), "stale temporary files of dead writers are removed"


def test_stale_temporary_files_are_removed(real_checkpoint, tmp_path):
    path, good = real_checkpoint
    ck = str(tmp_path / "ckpt.json")
    with open(ck, "wb") as f:
        f.write(good)
    stale = os.path.join(tmp_path, ".ckpt.json.tmp.4000003")
    with open(stale, "wb") as f:
        f.write(good[:10])
    watch_once(path, ck)
    assert not os.path.exists(stale)

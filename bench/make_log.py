"""A real RocksDB info LOG corpus of any size, for the replay benchmarks.

1. ``record_seed``: run the blob-heavy rocksdict workload (bench/workload.py:
   64 KiB blob files, 1 MiB write buffer, blob GC with force threshold 0.5) for a
   few seconds in a few sessions (every reopen starts a new LOG with the options
   header and a new session id) and keep the LOG text RocksDB wrote, oldest
   file first. Cached by its parameters.
2. ``build_corpus``: concatenate copies of the seed until the target size,
   rewriting in copy k: every DB session id (a new one per copy), every blob/table
   file number (+k x the seed's highest number: ``file_number``,
   ``blob_file_head``/``_tail``, ``oldest_blob_file_number``, ``files_L<n>``),
   ``time_micros`` and the local-time line prefixes (+k days). Events stay
   distinct and plausible; everything else is RocksDB's own text, byte for byte.

Never committed: corpora go to a temp dir (``$OTEL_BLOB_BENCH_DIR`` or
``/tmp/otel_blob_bench``).

    python -m bench.make_log --size 100M            # prints the corpus path
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import hashlib
import os
import re
import shutil
import sys
import time

DEFAULT_DIR = os.environ.get("OTEL_BLOB_BENCH_DIR", "/tmp/otel_blob_bench")
DAY_US = 86_400_000_000

_NUM_KEYS = (b"time_micros", b"file_number", b"blob_file_head", b"blob_file_tail", b"oldest_blob_file_number")
_SESSION_RE = re.compile(rb"DB Session ID:  ([0-9A-Z]{8,32})")


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)i?B?\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(float(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2).upper()])


def record_seed(
    workdir: str = DEFAULT_DIR, *, seconds: float = 6.0, sessions: int = 2, blob_file_size: int = 64 << 10,
    quiet: bool = False,
) -> str:
    """Path of a LOG text a real blob-heavy rocksdict workload wrote (cached)."""
    from bench.workload import seed_session

    os.makedirs(workdir, exist_ok=True)
    out = os.path.join(workdir, f"seed-{blob_file_size}-{seconds:g}s-{sessions}x.log")
    if os.path.exists(out):
        return out
    db = os.path.join(workdir, f"seed-db-{os.getpid()}")
    shutil.rmtree(db, ignore_errors=True)
    t0 = time.perf_counter()
    puts = 0
    for _ in range(sessions):
        puts += seed_session(db, seconds / sessions, blob_file_size=blob_file_size)
    olds = sorted(glob.glob(os.path.join(db, "LOG.old.*")), key=lambda p: int(p.rsplit(".", 1)[1]))
    with open(out + ".tmp", "wb") as dst:
        for p in olds + [os.path.join(db, "LOG")]:
            with open(p, "rb") as src:
                data = src.read()
            dst.write(data if data.endswith(b"\n") or not data else data + b"\n")
    os.replace(out + ".tmp", out)
    shutil.rmtree(db, ignore_errors=True)
    if not quiet:
        print(f"seed: {puts} puts in {time.perf_counter() - t0:.1f}s -> {out} ({os.path.getsize(out) >> 10} KiB)",
              file=sys.stderr)
    return out


class _Template:
    """The seed split into constant text and the values each copy rewrites."""

    def __init__(self, seed: bytes) -> None:
        sessions = sorted(set(_SESSION_RE.findall(seed)))
        alts = [rb'"(' + b"|".join(_NUM_KEYS) + rb')": (\d+)', rb"(\d{4}/\d\d/\d\d)-\d\d:\d\d:", rb'("files_L\d+": )\[([\d, ]*)\]']
        if sessions:
            alts.append(b"(" + b"|".join(re.escape(s) for s in sessions) + b")")
        rx = re.compile(b"|".join(alts))
        self.consts: list[bytes] = []
        self.slots: list[tuple[str, object]] = []  # (kind, value)
        pos = 0
        max_file = 0
        for m in rx.finditer(seed):
            key, num, date, files_key, files, sid = m.groups()
            if key is not None:
                start = m.start(2)
                value: object = int(num)
                kind = "time" if key == b"time_micros" else "file"
                if kind == "file":
                    max_file = max(max_file, int(num))
                end = m.end(2)
            elif date is not None:
                start, end, kind, value = m.start(3), m.end(3), "date", date.decode()
            elif files_key is not None:
                start, end, kind = m.start(5), m.end(5), "files"
                value = [int(x) for x in files.split(b",") if x.strip()]
                max_file = max([max_file, *value])  # type: ignore[list-item]
            else:
                start, end, kind, value = m.start(6), m.end(6), "session", sid
            self.consts.append(seed[pos:start])
            self.slots.append((kind, value))
            pos = end
        self.consts.append(seed[pos:])
        self.file_step = max_file + 1
        self.size = len(seed)

    def copy(self, k: int) -> bytes:
        fo, to = k * self.file_step, k * DAY_US
        dates: dict[str, bytes] = {}
        sids: dict[bytes, bytes] = {}
        out: list[bytes] = []
        consts = self.consts
        for i, (kind, value) in enumerate(self.slots):
            out.append(consts[i])
            if kind == "file":
                out.append(b"%d" % (value + fo if value else 0))  # type: ignore[operator]
            elif kind == "time":
                out.append(b"%d" % (value + to))  # type: ignore[operator]
            elif kind == "date":
                d = dates.get(value)  # type: ignore[arg-type]
                if d is None:
                    day = dt.datetime.strptime(value, "%Y/%m/%d") + dt.timedelta(days=k)  # type: ignore[arg-type]
                    d = dates[value] = day.strftime("%Y/%m/%d").encode()  # type: ignore[index]
                out.append(d)
            elif kind == "files":
                out.append(b", ".join(b"%d" % (n + fo) for n in value))  # type: ignore[attr-defined]
            else:
                s = sids.get(value)  # type: ignore[arg-type]
                if s is None:
                    s = sids[value] = _new_session_id(value, k)  # type: ignore[index,arg-type]
                out.append(s)
        out.append(consts[-1])
        return b"".join(out)


def _new_session_id(old: bytes, k: int) -> bytes:
    if k == 0:
        return old
    alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    h = hashlib.sha256(old + b"%d" % k).digest()
    return bytes(alphabet[b % 36] for b in h[: len(old)])


def build_corpus(seed_path: str, target_bytes: int, out_path: str) -> dict[str, object]:
    """Write a LOG of at least ``target_bytes`` made of rewritten copies of the seed."""
    with open(seed_path, "rb") as f:
        seed = f.read()
    tpl = _Template(seed)
    t0 = time.perf_counter()
    written = copies = 0
    with open(out_path + ".tmp", "wb") as out:
        while written < target_bytes:
            data = tpl.copy(copies)
            out.write(data)
            written += len(data)
            copies += 1
    os.replace(out_path + ".tmp", out_path)
    return {"path": out_path, "bytes": written, "copies": copies, "seed": seed_path,
            "seed_bytes": len(seed), "build_s": round(time.perf_counter() - t0, 2)}


def corpus(size: int, workdir: str = DEFAULT_DIR, *, blob_file_size: int = 64 << 10, seed_seconds: float = 6.0,
           quiet: bool = False) -> str:
    """Path of a corpus of ``size`` bytes (built once, then reused)."""
    seed = record_seed(workdir, seconds=seed_seconds, blob_file_size=blob_file_size, quiet=quiet)
    out = os.path.join(workdir, f"corpus-{os.path.basename(seed)[:-4]}-{size}.log")
    if not os.path.exists(out):
        info = build_corpus(seed, size, out)
        if not quiet:
            print(f"corpus: {info}", file=sys.stderr)
    return out


def stats(path: str) -> dict[str, int]:
    """Lines, event lines and blob event lines of a LOG (for the reports)."""
    lines = events = created = deleted = size = 0
    with open(path, "rb") as f:
        for line in f:
            lines += 1
            size += len(line)
            if b"EVENT_LOG_v1 " in line:
                events += 1
                if b'"event": "blob_file_creation"' in line:
                    created += 1
                elif b'"event": "blob_file_deletion"' in line:
                    deleted += 1
    return {"bytes": size, "lines": lines, "event_lines": events, "blob_created": created, "blob_deleted": deleted}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=parse_size, default=parse_size("100M"))
    ap.add_argument("--dir", default=DEFAULT_DIR)
    ap.add_argument("--blob-file-size", type=parse_size, default=64 << 10)
    ap.add_argument("--seed-seconds", type=float, default=6.0)
    ap.add_argument("--stats", action="store_true", help="also count lines and events")
    a = ap.parse_args(argv)
    path = corpus(a.size, a.dir, blob_file_size=a.blob_file_size, seed_seconds=a.seed_seconds)
    print(path)
    if a.stats:
        print(stats(path))


if __name__ == "__main__":
    main()

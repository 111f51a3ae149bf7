"""Replay throughput of a real LOG: parse, decode, deliver -- side by side.

On the same corpus (bench/make_log.py), interleaved, ``--runs`` rounds:

* ``read_lines``   -- ``for line in f`` only (the floor);
* ``json_loop``    -- the plain loop: every EVENT_LOG_v1 line through json.loads (the baseline);
* ``parse_line``   -- otel_blob.parse_line + LogDecoder.feed, one line at a time;
* ``decode``       -- (a) LogDecoder.feed_lines on the follower's batches -> Info values;
* ``watch``        -- (b) a Watch (loop=None, from_start=True) draining the LOG to a no-op listener
  (the follower's reads, the decoder, the stat() of every created blob file, delivery).

``decode``/``parse_line`` run with ``blob_only`` (the default of the telemetry) and without.
``--check`` first proves the fast path exact: for every line of the corpus,
feed_lines gives the same Info values as parse_line+feed, and every event
payload parses to the same dict as json.loads.

    python -m bench.parse_throughput [--size 100M] [--runs 5] [--quick] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

from bench import common, make_log

MARK = b"EVENT_LOG_v1 "


def batches_of(path: str, chunk: int = 1 << 20):
    """The lines of ``path`` in the batches the LogFollower hands out (1 MiB reads)."""
    with open(path, "rb") as f:
        tail = b""
        while True:
            c = f.read(chunk)
            if not c:
                break
            parts = (tail + c).split(b"\n")
            tail = parts.pop()
            yield parts
        if tail:
            yield [tail]


def read_lines(path: str) -> int:
    n = 0
    with open(path, "rb") as f:
        for _ in f:
            n += 1
    return n


def json_loop(path: str) -> int:
    n = 0
    loads = json.loads
    with open(path, "rb") as f:
        for line in f:
            i = line.find(MARK)
            if i >= 0:
                loads(line[i + 13:])
                n += 1
    return n


def parse_line_loop(path: str, blob_only: bool) -> int:
    from otel_blob.decode import LogDecoder, parse_line

    d = LogDecoder("/db", blob_only=blob_only)
    wanted, feed, n = d.wanted, d.feed, 0
    for lines in batches_of(path):
        for line in lines:
            p = parse_line(line, wanted)
            if p is not None:
                n += len(feed(p))
    return n


def decode(path: str, blob_only: bool) -> int:
    from otel_blob.decode import LogDecoder

    d = LogDecoder("/db", blob_only=blob_only)
    n = 0
    for lines in batches_of(path):
        n += len(d.feed_lines(lines))
    return n


def watch_noop(dbdir: str, blob_only: bool) -> int:
    import otel_blob

    w = otel_blob.watch(dbdir, otel_blob.EventListener(), from_start=True, loop=None, blob_only=blob_only)
    w.stop()
    return w.stats.events


def check(path: str) -> dict[str, int]:
    """The fast paths give exactly what the json.loads path gives, over the whole corpus."""
    from otel_blob.decode import rules as E, LogDecoder

    payloads = mismatched = 0
    for lines in batches_of(path):
        for line in lines:
            i = line.find(MARK)
            if i < 0:
                continue
            payload = line[i + 13:]
            payloads += 1
            try:
                want = json.loads(payload)
            except ValueError:
                continue
            got = E.parse_payload(payload)
            if got.fields != want or list(got.fields or ()) != list(want):
                mismatched += 1
    infos = 0
    for blob_only in (False, True):
        size = lambda p: len(p)  # noqa: E731 - any deterministic stand-in for stat()
        slow = LogDecoder("/db", blob_only=blob_only, file_size=size)
        fast = LogDecoder("/db", blob_only=blob_only, file_size=size)
        for lines in batches_of(path):
            a = [x for line in lines if (p := E.parse_line(line, slow.wanted)) for x in slow.feed(p)]
            b = fast.feed_lines(lines)
            if a != b:
                mismatched += 1
            infos += len(a)
    return {"payloads": payloads, "infos": infos, "mismatched": mismatched}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=make_log.parse_size, default=make_log.parse_size("100M"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="20 MB, 3 runs: a smoke run")
    ap.add_argument("--check", action="store_true", help="verify the fast path against json.loads first")
    a = ap.parse_args(argv)
    if a.quick:
        a.size, a.runs = min(a.size, 20 << 20), min(a.runs, 3)
    path = make_log.corpus(a.size)
    st = make_log.stats(path)
    result: dict = {"corpus": {"path": path, **st}}
    if a.check:
        result["check"] = check(path)
        print("check:", result["check"], file=sys.stderr)
        if result["check"]["mismatched"]:
            raise SystemExit("fast path differs from json.loads path")
    tmp = tempfile.mkdtemp(prefix="otel_blob_parse_")
    try:
        dbdir = os.path.join(tmp, "db")
        os.mkdir(dbdir)
        os.link(path, os.path.join(dbdir, "LOG"))  # a hard link: same bytes, no copy
        variants = {
            "read_lines": lambda: read_lines(path),
            "json_loop": lambda: json_loop(path),
            "parse_line (all)": lambda: parse_line_loop(path, False),
            "parse_line (blob_only)": lambda: parse_line_loop(path, True),
            "decode (all)": lambda: decode(path, False),
            "decode (blob_only)": lambda: decode(path, True),
            "watch (all)": lambda: watch_noop(dbdir, False),
            "watch (blob_only)": lambda: watch_noop(dbdir, True),
        }
        runs = common.interleaved(variants, a.runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = [r["wall"] for r in runs["json_loop"]]
    rows = []
    blob_events = st["blob_created"] + st["blob_deleted"]
    for name, rs in runs.items():
        wall = [r["wall"] for r in rs]
        med = common.median(wall)
        rows.append({
            "variant": name, "median_s": round(med, 4), "cpu_s": round(common.median([r["cpu"] for r in rs]), 4),
            "lines_per_s": round(st["lines"] / med), "mb_per_s": round(st["bytes"] / med / 1e6, 1),
            "blob_events_per_s": round(blob_events / med),
            "speedup_vs_json_loop": round(common.paired_ratio(base, wall), 2),
            "runs_s": [round(x, 4) for x in wall],
        })
    result["rows"] = rows
    result["runs"] = a.runs
    table = [
        f"Corpus: {st['bytes'] / 1e6:.0f} MB, {st['lines']} lines, {st['event_lines']} EVENT_LOG lines, "
        f"{blob_events} blob events; {a.runs} interleaved rounds; load {common.machine()['loadavg']}",
        "",
        "| variant | median s | lines/s | MB/s | blob events/s | × json_loop (paired median) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        table.append(f"| {r['variant']} | {r['median_s']:.3f} | {r['lines_per_s']:,} | {r['mb_per_s']} | "
                     f"{r['blob_events_per_s']:,} | {r['speedup_vs_json_loop']} |")
    print(common.write("parse_throughput", result, "\n".join(table)))
    return result


if __name__ == "__main__":
    main()

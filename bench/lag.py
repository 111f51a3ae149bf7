"""Detection lag: RocksDB event -> line readable in the LOG -> record handed to the OTel SDK.

Each run: a fresh blob-heavy rocksdict DB in a worker process (bench/_worker.py)
under ``opentelemetry-instrument``, exporting OTLP/gRPC to a receiver in this
process (tests/otlp_receiver.py, lightened: bench/_otlp.py), and, started
right after the DB opened, a minimal independent reader (bench/_logreader.py:
plain Python, polls the LOG every 1 ms with ``os.read``) that notes when each
blob file event line became readable. For every blob file event (key: event,
file number, time_micros):

* ``reader``  = readable − event time   (RocksDB's ``time_micros``: when the line could be seen at best);
* ``ours``    = observed − event time   (the record's ``observed_time_unix_nano``: when our listener
  handed it to the SDK; ``time_unix_nano`` is the event time);
* ``added``   = observed − readable     (what following the LOG costs us on top of a 1 ms poller).

Scenarios: ``quiet`` -- 15 rounds of 150 puts + ``Rdict.flush()``, 200 ms apart;
``busy`` -- the heavy overhead workload (128 KiB blob files, unthrottled) for 2.5 s.
The DBs live in ``--dir`` (default /dev/shm, as in bench/overhead.py).
Variants: ``OTEL_PYTHON_ROCKSDICT_MODE=thread`` and ``=process`` (``mode@poll``
also sets ``OTEL_PYTHON_ROCKSDICT_POLL_INTERVAL``, e.g. ``thread@0.002``; ``+n`` sets
``OTEL_PYTHON_ROCKSDICT_HELPER_NICE``, e.g. ``process+19``).
``--runs`` rounds, each running every (variant, scenario) once in a shuffled order.
Each run first makes one flush and waits for its record at the receiver (the
pipeline is up: helper started, exporter connected), then starts the reader and
the measured scenario; that first record's lag is reported apart ("first record").
Reported: p50/p99/max per run, their medians over runs, and the pooled percentiles.
Target: ours p99 ≤ reader p99 + 5 ms (i.e. added p99 ≤ 5 ms).

    python -m bench.lag [--runs 5] [--variants thread,process] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench import common
from bench._interleave import REPO, Worker, WorkerError, default_dir, otel_env, worker_argv

TARGET_ADDED_MS = 5.0
WORKLOAD = {"blob_file_size": 128 << 10, "write_buffer_size": 1 << 20, "keys": 10_000}  # overhead's "heavy"


def pct(xs: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not xs:
        return None
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))]


def summary(xs: list[float]) -> dict[str, float | None]:
    return {"p50": pct(xs, 50), "p99": pct(xs, 99), "max": max(xs) if xs else None}


def _r(x: float | None, n: int = 2) -> float | None:
    return None if x is None else round(x, n)


def parse_variant(spec: str) -> tuple[str, dict[str, str]]:
    """``mode[@poll interval][+helper nice]``, e.g. ``thread@0.002``, ``process+19``."""
    spec, _, nice = spec.partition("+")
    mode, _, poll = spec.partition("@")
    env = {"OTEL_PYTHON_ROCKSDICT_MODE": mode}
    if poll:
        env["OTEL_PYTHON_ROCKSDICT_POLL_INTERVAL"] = poll
    if nice:
        env["OTEL_PYTHON_ROCKSDICT_HELPER_NICE"] = nice
    return mode, env


class Reader:
    """The independent reader subprocess (bench/_logreader.py)."""

    def __init__(self, log_path: str, interval: float) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench._logreader", log_path, str(interval)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO, start_new_session=True)
        self._line(10)

    def _line(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            raise WorkerError("LOG reader: no answer")
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(f"LOG reader exited ({self.proc.wait()})")
        return json.loads(line)

    def stop(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"stop\n")
        self.proc.stdin.flush()
        out = self._line(30)
        self.proc.wait(timeout=10)
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()  # type: ignore[union-attr]
            except OSError:
                pass


def one_run(variant: str, scenario: str, i: int, rcv: Any, tmp: str, a: argparse.Namespace) -> dict[str, Any]:
    mode, extra = parse_variant(variant)
    tag = f"{variant.replace('@', '_')}-{scenario}-{i}"
    db = os.path.join(tmp, tag)
    service = f"bench-lag-{tag}-{os.getpid()}"
    args = ["--db", db, "--blob-file-size", str(WORKLOAD["blob_file_size"]),
            "--write-buffer-size", str(WORKLOAD["write_buffer_size"]), "--keys", str(WORKLOAD["keys"])]
    worker = Worker(tag, worker_argv(True, args), otel_env(rcv.grpc_endpoint, service, extra),
                    os.path.join(tmp, f"{tag}.log"))
    reader: Reader | None = None
    try:
        ready = worker.wait_ready(timeout=90)
        # Warm-up: one flush, and wait for its first record at the receiver, so the pipeline is up
        # (helper process started, exporter connected) before the measured scenario. How long the
        # first record took is reported as startup, apart from the steady-state lags.
        worker.request({"cmd": "quiet", "flushes": 1, "interval": 0, "puts": a.puts}, timeout=60)
        deadline = time.monotonic() + 60
        while not rcv.take(service) and time.monotonic() < deadline:
            time.sleep(0.02)
        first = rcv.take(service)
        startup = {"first_record_lag_ms": _r((first[0][3] - first[0][2]) / 1e6) if first else None,
                   "first_record_after_open_s": _r((first[0][3] - ready["open_ns"][1]) / 1e9, 3) if first else None}
        reader = Reader(os.path.join(db, "LOG"), a.reader_interval)
        t_go = time.time_ns()
        if scenario == "quiet":
            r = worker.request({"cmd": "quiet", "flushes": a.flushes, "interval": a.interval, "puts": a.puts},
                               timeout=120)
        else:
            r = worker.request({"cmd": "busy", "seconds": a.busy}, timeout=120)
        time.sleep(0.3)  # the last lines of the scenario: readable, then read by both
        t_quit = time.time_ns()
        mode_seen = worker.request({"cmd": "cpu"})["cpu"]["mode"]
        final = worker.quit(timeout=60)
        got = reader.stop()
    finally:
        worker.close()
        if reader is not None:
            reader.close()
    readable: dict[tuple[str, int, int], int] = {}
    for name, number, micros, ns in got["records"]:
        if isinstance(micros, int) and t_go <= micros * 1000 <= t_quit:
            readable.setdefault((name, number, micros), ns)

    def in_window() -> list[tuple[str, int | None, int, int, int]]:
        return [rec for rec in rcv.take(service) if t_go <= rec[2] <= t_quit]

    # Everything is normally in by now (the worker's exit flushed); a helper may still be exporting.
    deadline, last, since = time.monotonic() + 15, -1, time.monotonic()
    while len(in_window()) < len(readable) and time.monotonic() < deadline:
        have = len(in_window())
        if have != last:
            last, since = have, time.monotonic()
        elif time.monotonic() - since > 3:
            break
        time.sleep(0.05)
    observed: dict[tuple[str, int, int], int] = {}
    dup = 0
    for name, number, t, obs, _arrival in in_window():
        key = (name, number, t // 1000)
        if key in observed:
            dup += 1
        observed.setdefault(key, obs)
    lags: dict[str, list[float]] = {"reader": [], "ours": [], "added": []}
    for key, ns in readable.items():
        obs = observed.get(key)
        if obs is None:
            continue
        ev = key[2] * 1000
        lags["reader"].append((ns - ev) / 1e6)
        lags["ours"].append((obs - ev) / 1e6)
        lags["added"].append((obs - ns) / 1e6)
    return {
        "variant": variant, "mode": mode, "scenario": scenario, "run": i, "mode_seen": mode_seen,
        "events": len(readable), "matched": len(lags["added"]),
        "missing_in_otlp": len(set(readable) - set(observed)), "not_seen_by_reader": len(set(observed) - set(readable)),
        "duplicates": dup, "scenario_s": round((r["t_end_ns"] - r["t_start_ns"]) / 1e9, 2),
        "open_s": round((ready["open_ns"][1] - ready["open_ns"][0]) / 1e9, 3), **startup,
        "reader": {"reads": got["reads"], "polls": got["polls"], "cpu_s": got["cpu_s"]},
        "close_s": final and round(final["close_s"], 3),
        "lags_ms": lags,
    }


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    keys = sorted({(r["variant"], r["scenario"]) for r in runs}, key=lambda k: (k[1] != "quiet", k[0]))
    for variant, scenario in keys:
        rs = [r for r in runs if r["variant"] == variant and r["scenario"] == scenario]
        row: dict[str, Any] = {"variant": variant, "scenario": scenario, "runs": len(rs),
                               "events": sum(r["events"] for r in rs), "matched": sum(r["matched"] for r in rs),
                               "missing_in_otlp": sum(r["missing_in_otlp"] for r in rs),
                               "not_seen_by_reader": sum(r["not_seen_by_reader"] for r in rs),
                               "duplicates": sum(r["duplicates"] for r in rs),
                               "events_per_s": _r(statistics.median(r["events"] / r["scenario_s"] for r in rs), 0),
                               "mode_seen": sorted({r["mode_seen"] for r in rs}),
                               "first_record_lag_ms_median": _r(statistics.median(
                                   [r["first_record_lag_ms"] for r in rs if r["first_record_lag_ms"] is not None] or [0]))}
        for what in ("reader", "ours", "added"):
            per_run = [summary(r["lags_ms"][what]) for r in rs if r["lags_ms"][what]]
            pooled = summary([x for r in rs for x in r["lags_ms"][what]])
            row[what] = {
                "pooled": {k: _r(v) for k, v in pooled.items()},
                "median_of_runs": {k: _r(statistics.median(p[k] for p in per_run)) if per_run else None
                                   for k in ("p50", "p99", "max")},
                "per_run_p99": [_r(p["p99"]) for p in per_run],
            }
        rp99, op99 = row["reader"]["pooled"]["p99"], row["ours"]["pooled"]["p99"]
        row["target_met"] = None if rp99 is None or op99 is None else op99 <= rp99 + TARGET_ADDED_MS
        out.append(row)
    return out


def table(rows: list[dict[str, Any]], a: argparse.Namespace, load: list[list[float]]) -> str:
    def trip(d: dict[str, Any]) -> str:
        return " / ".join("—" if d[k] is None else f"{d[k]:.1f}" for k in ("p50", "p99", "max"))

    out = [
        f"quiet: {a.flushes} × ({a.puts} puts + flush) {a.interval * 1000:.0f} ms apart; busy: {a.busy} s of "
        f"unthrottled puts (128 KiB blob files); DBs in {a.dir or 'the temp dir'}; independent reader polls every "
        f"{a.reader_interval * 1000:g} ms; {a.runs} runs per row; load {load[0]} → {load[1]}",
        "",
        "| variant | scenario | events (blob ev/s) | reader lag p50 / p99 / max ms | ours p50 / p99 / max ms "
        "| added p50 / p99 / max ms | ours p99 ≤ reader p99 + 5 ms | missing / dup | first record ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ok = {True: "met", False: "**missed**", None: "—"}[r["target_met"]]
        rp99, op99 = r["reader"]["pooled"]["p99"], r["ours"]["pooled"]["p99"]
        if rp99 is not None and op99 is not None:
            ok = f"+{op99 - rp99:.1f} ms: {ok}"
        out.append(
            f"| {r['variant']} ({'/'.join(r['mode_seen'])}) | {r['scenario']} | {r['matched']}/{r['events']} "
            f"({r['events_per_s']:g}) | {trip(r['reader']['pooled'])} | {trip(r['ours']['pooled'])} "
            f"| {trip(r['added']['pooled'])} | {ok} | {r['missing_in_otlp']} / {r['duplicates']} "
            f"| {r['first_record_lag_ms_median']:g} |"
        )
    out += [
        "",
        "Pooled over all runs' events (median of the per-run values in the JSON). reader = readable − event time "
        "(RocksDB's time_micros), ours = observed_time_unix_nano − event time, added = observed − readable. "
        "variant (mode seen): the mode asked for, and whether a watcher thread or a helper process was found. "
        "missing: events the reader saw that never reached the receiver. Each run starts with a warm-up flush "
        "whose first record is awaited before the measured scenario (so helper start-up is not in the lags); "
        "first record: its lag (event → observed, start-up included), median over runs.",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--variants", default="thread,process", help="mode[@poll_interval][+helper_nice], comma-separated")
    ap.add_argument("--scenarios", default="quiet,busy")
    ap.add_argument("--flushes", type=int, default=15)
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("--puts", type=int, default=150)
    ap.add_argument("--busy", type=float, default=2.5, help="seconds of busy writes")
    ap.add_argument("--reader-interval", type=float, default=0.001)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", default=default_dir(), help="where the DBs live (default: /dev/shm if writable)")
    ap.add_argument("--quick", action="store_true", help="1 run, 6 flushes, 1 s busy: a smoke run")
    a = ap.parse_args(argv)
    if a.quick:
        a.runs, a.flushes, a.busy = min(a.runs, 1), min(a.flushes, 6), min(a.busy, 1.0)
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    for s in scenarios:
        if s not in ("quiet", "busy"):
            ap.error(f"unknown scenario {s}")
    from bench._otlp import LagReceiver

    rng = random.Random(a.seed)
    tmp = tempfile.mkdtemp(prefix="otel_blob_lag_", dir=a.dir)
    load0 = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    runs: list[dict[str, Any]] = []
    try:
        with LagReceiver() as rcv:
            for i in range(a.runs):
                combos = [(v, s) for v in variants for s in scenarios]
                rng.shuffle(combos)
                for v, s in combos:
                    runs.append(one_run(v, s, i, rcv, tmp, a))
                print(f"lag: round {i + 1}/{a.runs} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    except WorkerError as e:
        raise SystemExit(f"lag benchmark failed: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load = [load0, [round(x, 2) for x in os.getloadavg()]]
    rows = aggregate(runs)
    result = {
        "quick": a.quick, "elapsed_s": round(time.perf_counter() - t0, 1), "load": load,
        "settings": {k: getattr(a, k) for k in ("runs", "flushes", "interval", "puts", "busy", "reader_interval")},
        "workload": WORKLOAD, "dir": a.dir, "variants": variants, "target_added_p99_ms": TARGET_ADDED_MS, "rows": rows,
        "runs_detail": [{k: v for k, v in r.items() if k != "lags_ms"} | {
            "lags_ms": {w: {k: _r(x) for k, x in summary(xs).items()} for w, xs in r["lags_ms"].items()}} for r in runs],
    }
    print(common.write("lag", result, table(rows, a, load)))
    return result


if __name__ == "__main__":
    main()

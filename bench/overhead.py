"""Overhead of the rocksdict instrumentation on a blob-heavy write workload, interleaved.

Four long-lived worker processes (bench/_worker.py), each holding its own open
blob-heavy rocksdict DB, run the same CPU-bound write workload in short slices,
taking turns (order shuffled every pass), so the machine's speed swings hit
every variant alike:

* ``plain``   -- plain Python, no ``opentelemetry-instrument``;
* ``off``     -- ``opentelemetry-instrument`` exporting OTLP/gRPC, with
  ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=rocksdict`` (the SDK's own fixed cost: the baseline);
* ``thread``  -- instrumentation on, ``OTEL_PYTHON_ROCKSDICT_MODE=thread`` (watcher thread in the app);
* ``process`` -- instrumentation on, ``OTEL_PYTHON_ROCKSDICT_MODE=process`` (a helper process).

Everything exports to one OTLP receiver (tests/otlp_receiver.py, lightened:
bench/_otlp.py) in this process. A slice: ``--slice`` seconds of unthrottled
puts, then wait for RocksDB to finish its flushes/compactions (timed: the
slice's throughput is ops / (writes + quiesce)), then an untimed settle (sleep,
SDK force_flush) so no variant's deferred work lands in another's slice.

Workload rates, all unthrottled (CPU-bound); the blob file size sets how many
blob events a put makes. The issue's two rates, calibrated on this machine:
``3k`` (256 KiB blob files, 1 MiB write buffer, 10k keys: ~3,000 blob events/s)
and ``300`` (3 MiB blob files, 4 MiB write buffer, 20k keys: ~300/s); and a
harder one, ``heavy`` (128 KiB: ~4,500-6,000/s), plus ``light`` (1.5 MiB: ~500/s),
the rates of the first measurements. The DBs live in ``--dir`` (default /dev/shm, a tmpfs: RocksDB's fsyncs of
every blob file would otherwise make the writes wait on the disk, not the CPU).
Blob events are counted from each DB's LOG by this driver (independent of the
instrumentation), and the receiver's count is checked against it.

Per round (``--passes`` slices per variant), per variant: throughput, events,
CPU of the worker by thread (watcher thread, SDK export threads, main, RocksDB,
other) and of its helper child processes. Reported: medians over rounds of the
paired ratios (thread/off, process/off, x/plain) and of the CPU per blob event.

    python -m bench.overhead [--rounds 5] [--passes 3] [--slice 0.5] [--rates 3k,300,heavy] [--quick]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

from bench import common
from bench._interleave import LogCounter, Worker, WorkerError, default_dir, otel_env, worker_argv

RATES: dict[str, dict[str, int]] = {
    "3k": {"blob_file_size": 256 << 10, "write_buffer_size": 1 << 20, "keys": 10_000},
    "300": {"blob_file_size": 3 << 20, "write_buffer_size": 4 << 20, "keys": 20_000},
    "heavy": {"blob_file_size": 128 << 10, "write_buffer_size": 1 << 20, "keys": 10_000},
    "light": {"blob_file_size": 1536 << 10, "write_buffer_size": 4 << 20, "keys": 20_000},
}
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {"instrumented": False, "env": {}},
    "off": {"instrumented": True, "env": {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "rocksdict"}},
    "thread": {"instrumented": True, "env": {"OTEL_PYTHON_ROCKSDICT_MODE": "thread"}},
    "process": {"instrumented": True, "env": {"OTEL_PYTHON_ROCKSDICT_MODE": "process"}},
    # The helper's niceness (default 19), on request (--variants): the overhead/lag trade-off.
    "process-nice0": {"instrumented": True,
                      "env": {"OTEL_PYTHON_ROCKSDICT_MODE": "process", "OTEL_PYTHON_ROCKSDICT_HELPER_NICE": "0"}},
    "process-nice5": {"instrumented": True,
                      "env": {"OTEL_PYTHON_ROCKSDICT_MODE": "process", "OTEL_PYTHON_ROCKSDICT_HELPER_NICE": "5"}},
}
DEFAULT_VARIANTS = "plain,off,thread,process"
# The variants with the instrumentation on (their records are counted, their costs reported).
ON = tuple(v for v, spec in VARIANTS.items() if "OTEL_PYTHON_ROCKSDICT_MODE" in spec["env"])
TARGET_RATIO = {"3k": 0.97, "300": 0.99, "heavy": 0.97, "light": 0.99}
TARGET_US_PER_EVENT = 10.0


def _med(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _cpu_delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """Seconds of CPU between two cumulative snapshots, by category (and wall seconds as ``wall``)."""
    d = {"process": (b["process_ns"] - a["process_ns"]) / 1e9, "children": (b["children_ns"] - a["children_ns"]) / 1e9,
         "wall": b["t"] - a["t"]}
    for k, v in b["threads_ns"].items():
        d[k] = (v - a["threads_ns"].get(k, 0)) / 1e9
    return d


def _add(into: dict[str, float], d: dict[str, float], scale: float = 1.0) -> None:
    for k, x in d.items():
        into[k] = into.get(k, 0.0) + x * scale


def run_rate(rate: str, variants: list[str], rcv: Any, tmp: str, a: argparse.Namespace, rng: random.Random) -> dict:
    cfg = RATES[rate]
    workers: dict[str, Worker] = {}
    counters: dict[str, LogCounter] = {}
    load_before = [round(x, 2) for x in os.getloadavg()]
    services = {v: f"bench-overhead-{rate}-{v}-{os.getpid()}" for v in variants}
    try:
        for v in variants:
            spec = VARIANTS[v]
            db = os.path.join(tmp, f"{rate}-{v}")
            args = ["--db", db, "--blob-file-size", str(cfg["blob_file_size"]),
                    "--write-buffer-size", str(cfg["write_buffer_size"]), "--keys", str(cfg["keys"])]
            env = otel_env(rcv.grpc_endpoint if spec["instrumented"] else None, services[v], spec["env"])
            workers[v] = Worker(v, worker_argv(spec["instrumented"], args), env, os.path.join(tmp, f"{rate}-{v}.log"))
        for v, w in workers.items():
            w.wait_ready(timeout=90)
            counters[v] = LogCounter(os.path.join(tmp, f"{rate}-{v}", "LOG"))
            counters[v].read()
        last = {v: w.ready["cpu"] for v, w in workers.items()}  # type: ignore[index]

        npass = [0]

        def one_pass(record: list[dict[str, Any]] | None) -> None:
            npass[0] += 1
            order = list(variants)
            rng.shuffle(order)
            for v in order:
                r = workers[v].request({"cmd": "slice", "seconds": a.slice, "settle": a.settle}, timeout=120)
                ev = counters[v].read()
                if record is not None:
                    record.append({"variant": v, "pass": npass[0], "ops": r["ops"], "write_s": r["write_s"],
                                   "quiesce_s": r["quiesce_s"], "active_s": r["active_s"], "events": ev,
                                   "turn": _cpu_delta(r["cpu0"], r["cpu"]), "between": _cpu_delta(last[v], r["cpu0"]),
                                   "mode": r["cpu"]["mode"], "children": r["cpu"]["children"]})
                last[v] = r["cpu"]

        t0 = time.perf_counter()
        for _ in range(a.warmup):
            one_pass(None)
        # What each worker costs while it does nothing (pollers): its CPU between its turns is
        # corrected by this rate, so a variant is not charged for idling while the others run.
        # First let the instrumented ones catch up (everything logged so far received), so the
        # probe sees idling, not a backlog.
        deadline = time.monotonic() + 20
        for v in variants:
            counters[v].read()
            if v in ON:
                while rcv.count(services[v]) < counters[v].events and time.monotonic() < deadline:
                    time.sleep(0.05)
        time.sleep(0.3)
        before = {v: w.request({"cmd": "cpu"})["cpu"] for v, w in workers.items()}
        time.sleep(a.idle_probe)
        after = {v: w.request({"cmd": "cpu"})["cpu"] for v, w in workers.items()}
        idle = {}
        for v in variants:
            d = _cpu_delta(before[v], after[v])
            idle[v] = {k: x / d["wall"] for k, x in d.items() if k != "wall"}
        last = dict(after)
        rounds: list[list[dict[str, Any]]] = []
        for _ in range(a.rounds):
            rec: list[dict[str, Any]] = []
            for _ in range(a.passes):
                one_pass(rec)
            rounds.append(rec)
        measured_s = time.perf_counter() - t0
        finals = {}
        for v, w in workers.items():
            finals[v] = w.quit(timeout=60)
        for c in counters.values():
            c.read()  # what the closes logged
    finally:
        for w in workers.values():
            w.close()
        for c in counters.values():
            c.close()
    # The helper (process mode) may still be exporting after its app exited.
    deadline = time.monotonic() + 15
    for v in variants:
        if v in ON:
            while rcv.count(services[v]) < counters[v].events and time.monotonic() < deadline:
                time.sleep(0.1)
    return summarize(rate, variants, rounds, idle, counters, finals, rcv, services, cfg, load_before, measured_s, a)


def summarize(rate: str, variants: list[str], rounds: list[list[dict[str, Any]]], idle: dict[str, dict[str, float]],
              counters: dict[str, LogCounter], finals: dict[str, Any], rcv: Any, services: dict[str, str],
              cfg: dict[str, int], load_before: list[float], measured_s: float, a: argparse.Namespace) -> dict:
    per_round: list[dict[str, dict[str, Any]]] = []
    for rec in rounds:
        agg: dict[str, dict[str, Any]] = {}
        for s in rec:
            g = agg.setdefault(s["variant"], {"ops": 0, "active_s": 0.0, "write_s": 0.0, "events": 0,
                                              "turn": {}, "between": {}, "net": {}})
            g["ops"] += s["ops"]
            g["active_s"] += s["active_s"]
            g["write_s"] += s["write_s"]
            g["events"] += s["events"]
            _add(g["turn"], s["turn"])
            _add(g["between"], s["between"])
        for v, g in agg.items():
            # net CPU: in its turns + between them, minus what it burns idle over the between time
            _add(g["net"], g["turn"])
            _add(g["net"], g["between"])
            _add(g["net"], idle[v], -g["between"]["wall"])
            g["net"].pop("wall", None)
            g["ops_per_s"] = g["ops"] / g["active_s"]
            g["ops_per_write_s"] = g["ops"] / g["write_s"]
            g["events_per_s"] = g["events"] / g["active_s"]
            # the host process without RocksDB's own threads (the same work in every variant, and noisy)
            g["host_cpu_per_op_us"] = (g["net"]["process"] - g["net"]["rocksdb"]) / g["ops"] * 1e6
            g["rocksdb_cpu_per_op_us"] = g["net"]["rocksdb"] / g["ops"] * 1e6
        per_round.append(agg)

    def ratio(v: str, base: str, key: str = "ops_per_s") -> list[float]:
        return [r[v][key] / r[base][key] for r in per_round if v in r and base in r]

    # the same ratio paired per pass (one slice of each variant, adjacent in time): a check on the rounds'
    passes: dict[int, dict[str, float]] = {}
    for rec in rounds:
        for s in rec:
            passes.setdefault(s["pass"], {})[s["variant"]] = s["ops"] / s["active_s"]

    def pass_ratio(v: str, base: str) -> float | None:
        return _med([p[v] / p[base] for p in passes.values() if v in p and base in p])

    rows = []
    for v in variants:
        rs = [r[v] for r in per_round]
        row: dict[str, Any] = {
            "variant": v,
            "ops_per_s": round(_med([g["ops_per_s"] for g in rs])),
            "ops_per_write_s": round(_med([g["ops_per_write_s"] for g in rs])),
            "events_per_s": round(_med([g["events_per_s"] for g in rs])),
            "events_per_round": round(_med([g["events"] for g in rs])),
            "host_cpu_per_op_us": round(_med([g["host_cpu_per_op_us"] for g in rs]), 3),
            "rocksdb_cpu_per_op_us": round(_med([g["rocksdb_cpu_per_op_us"] for g in rs]), 3),
            "mode_seen": sorted({s["mode"] for rec in rounds for s in rec if s["variant"] == v}),
            "idle_cpu_ms_per_s": {k: round(x * 1e3, 2) for k, x in idle[v].items()},
        }
        helpers = sorted({c for rec in rounds for s in rec if s["variant"] == v for c in s["children"]})
        if helpers:
            row["helper_cmdlines"] = helpers[:3]
        for base in ("off", "plain"):
            if base in variants and base != v:
                rr = ratio(v, base)
                row[f"x_{base}"] = round(_med(rr), 4)
                row[f"x_{base}_rounds"] = [round(x, 4) for x in rr]
                row[f"x_{base}_write_only"] = round(_med(ratio(v, base, "ops_per_write_s")), 4)
                row[f"x_{base}_per_pass"] = round(pass_ratio(v, base), 4)  # type: ignore[arg-type]
                q = sorted(rr)
                row[f"x_{base}_range"] = [round(q[0], 3), round(q[-1], 3)]

        def per_event(key: str, src: str = "net") -> float | None:
            x = _med([g[src].get(key, 0.0) / g["events"] * 1e6 if g["events"] else None for g in rs])
            return None if x is None else round(x, 2)

        # CPU per blob event (µs = ms per 1,000 events): net of idle, and in the worker's turns only
        row["watcher_us_per_event"] = per_event("watcher")
        row["otel_sdk_threads_us_per_event"] = per_event("otel_sdk")
        row["helper_us_per_event"] = per_event("children")
        row["in_turn_us_per_event"] = {k: per_event(k, "turn") for k in ("watcher", "otel_sdk", "children", "main")}
        row["cpu_s_per_round"] = {k: round(_med([g["net"].get(k, 0.0) for g in rs]), 4)
                                  for k in ("process", "main", "watcher", "otel_sdk", "rocksdb", "other", "children")}
        if "off" in variants and v in ON:
            # host CPU (without RocksDB's threads) beyond the off variant's at the same ops, per blob event
            ok = [r for r in per_round if r[v]["events"]]
            extra = [(r[v]["host_cpu_per_op_us"] - r["off"]["host_cpu_per_op_us"]) * r[v]["ops"] / r[v]["events"]
                     for r in ok]
            row["host_extra_us_per_event"] = round(_med(extra), 2) if extra else None
            row["host_extra_us_per_event_rounds"] = [round(x, 2) for x in extra]
            e2e = [x + r[v]["net"].get("children", 0.0) / r[v]["events"] * 1e6 for x, r in zip(extra, ok)]
            row["end_to_end_us_per_event"] = round(_med(e2e), 2) if e2e else None
            row["end_to_end_us_per_event_rounds"] = [round(x, 2) for x in e2e]
        row["blob_events_logged_total"] = counters[v].events
        row["blob_records_received"] = rcv.count(services[v])
        row["final"] = finals.get(v)
        rows.append(row)

    def rnd(d: dict[str, Any]) -> dict[str, Any]:
        return {k: (round(x, 4) if isinstance(x, float) else rnd(x) if isinstance(x, dict) else x) for k, x in d.items()}

    return {
        "rate": rate,
        "config": cfg,
        "dir": a.dir,
        "rounds": len(per_round),
        "passes_per_round": a.passes,
        "slice_s": a.slice,
        "measured_s": round(measured_s, 1),
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "rows": rows,
        "per_round": [{v: rnd(g) for v, g in r.items()} for r in per_round],
    }


def _fmt(x: Any, spec: str = "") -> str:
    if x is None:
        return "—"
    return format(x, spec)


def _verdict(x: float, target: float, lo: float, hi: float, higher_is_better: bool) -> str:
    """met / missed by the median; "(within the rounds' spread)" when some rounds fall on the other side."""
    met = x >= target if higher_is_better else x <= target
    straddles = lo <= target <= hi
    return ("met" if met else "**missed**") + (" (rounds on both sides)" if straddles else "")


def _ratio(row: dict[str, Any], base: str) -> str:
    x = row.get(f"x_{base}")
    if x is None:
        return "—"
    lo, hi = row[f"x_{base}_range"]
    return f"{x:.3f} ({lo:.2f}–{hi:.2f})"


def table(results: list[dict]) -> str:
    out: list[str] = []
    for res in results:
        cfg = res["config"]
        out += [
            f"**{res['rate']}**: {cfg['blob_file_size'] >> 10} KiB blob files, {cfg['write_buffer_size'] >> 20} MiB "
            f"write buffer, {cfg['keys']:,} keys; {res['rounds']} rounds × {res['passes_per_round']} slices of "
            f"{res['slice_s']} s per variant; load {res['load_before']} → {res['load_after']}",
            "",
            "| variant | ops/s | blob events/s | × off | × plain | watcher thread ms/1k ev | SDK threads ms/1k ev "
            "| helper process ms/1k ev | host extra µs/ev | end to end µs/ev | idle CPU ms/s | received/logged |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in res["rows"]:
            on = r["variant"] in ON
            recv = f"{r['blob_records_received']}/{r['blob_events_logged_total']}" if on else "—"
            idle = r["idle_cpu_ms_per_s"]
            idle_s = f"{idle.get('process', 0) + idle.get('children', 0):.1f}"
            out.append(
                f"| {r['variant']} | {r['ops_per_s']:,} | {r['events_per_s']:,} | {_ratio(r, 'off')} "
                f"| {_ratio(r, 'plain')} "
                f"| {_fmt(r['watcher_us_per_event'] if on else None, '.1f')} "
                f"| {_fmt(r['otel_sdk_threads_us_per_event'] if on else None, '.1f')} "
                f"| {_fmt(r['helper_us_per_event'] if r['variant'].startswith('process') else None, '.1f')} "
                f"| {_fmt(r.get('host_extra_us_per_event'), '.1f')} "
                f"| {_fmt(r.get('end_to_end_us_per_event'), '.1f')} | {idle_s} | {recv} |"
            )
        out.append("")
    out += ["| target | variant | result | |", "|---|---|---|---|"]
    for res in results:
        rows = {r["variant"]: r for r in res["rows"]}
        for v in ON:
            if v in rows and rows[v].get("x_off") is not None:
                t = TARGET_RATIO.get(res["rate"], 0.97)
                x = rows[v]["x_off"]
                lo, hi = rows[v]["x_off_range"]
                out.append(f"| {res['rate']} ({rows[v]['events_per_s']:,} blob events/s): × off ≥ {t} | {v} "
                           f"| {x:.3f} ({lo:.2f}–{hi:.2f}) | {_verdict(x, t, lo, hi, True)} |")
    for res in results:
        rows = {r["variant"]: r for r in res["rows"]}
        for v in ON:
            host = rows.get(v, {}).get("host_extra_us_per_event")
            e2e = rows.get(v, {}).get("end_to_end_us_per_event")
            if host is not None:
                rr = rows[v]["host_extra_us_per_event_rounds"] or [host]
                helper = f"; with the helper process {e2e:.1f} µs" if v.startswith("process") and e2e is not None else ""
                out.append(f"| {res['rate']}: host-process CPU ≤ {TARGET_US_PER_EVENT:g} µs per blob event, end to end "
                           f"| {v} | {host:.1f} µs (rounds {min(rr):.0f} … {max(rr):.0f}){helper} "
                           f"| {_verdict(host, TARGET_US_PER_EVENT, min(rr), max(rr), False)} |")
    modes = "; ".join(f"{res['rate']}: " + ", ".join(f"{r['variant']}={'/'.join(r['mode_seen'])}" for r in res["rows"])
                      for res in results)
    out += [
        "",
        "ops/s: puts / (writes + quiesce) of the slices, median over rounds. × off, × plain: median over rounds of "
        "the per-round paired throughput ratios (min–max over rounds); off × plain is the noise floor (the SDK alone "
        "costs nothing per put). CPU is net of each worker's idle CPU (measured once, while all "
        "idle) over the time the other variants ran: watcher thread / SDK threads (OtelBatch…, OtelPeriodic…) / "
        "helper child processes per 1,000 blob events (= µs per event); host extra: the worker process's CPU "
        "without RocksDB's threads, per op, minus the off variant's, × ops / blob events (the host-process "
        "target is judged on it); end to end: host extra + helper (the whole machine's cost). idle CPU: worker + "
        f"helpers while idle. Blob events counted from the DB's LOG. Modes seen: {modes}.",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--passes", type=int, default=3, help="slices per variant per round")
    ap.add_argument("--warmup", type=int, default=2, help="unrecorded passes first")
    ap.add_argument("--slice", type=float, default=0.5, help="seconds of writes per slice")
    ap.add_argument("--settle", type=float, default=0.05, help="untimed pause after each slice (s)")
    ap.add_argument("--idle-probe", type=float, default=1.0, help="seconds to measure each worker's idle CPU")
    ap.add_argument("--rates", default="3k,300,heavy")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"some of {', '.join(VARIANTS)}")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", default=default_dir(), help="where the DBs live (default: /dev/shm if writable)")
    ap.add_argument("--quick", action="store_true", help="2 rounds × 1 slice of 0.3 s: a smoke run")
    a = ap.parse_args(argv)
    if a.quick:
        a.rounds, a.passes, a.warmup, a.slice = min(a.rounds, 2), 1, 1, min(a.slice, 0.3)
        a.idle_probe = min(a.idle_probe, 0.5)
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    rates = [r.strip() for r in a.rates.split(",") if r.strip()]
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v}")
    for r in rates:
        if r not in RATES:
            ap.error(f"unknown rate {r}")
    from bench._otlp import CountingReceiver

    rng = random.Random(a.seed)
    tmp = tempfile.mkdtemp(prefix="otel_blob_overhead_", dir=a.dir)
    results = []
    t0 = time.perf_counter()
    try:
        with CountingReceiver() as rcv:
            for rate in rates:
                results.append(run_rate(rate, variants, rcv, tmp, a, rng))
                print(f"overhead: {rate} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    except WorkerError as e:
        raise SystemExit(f"overhead benchmark failed: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"quick": a.quick, "elapsed_s": round(time.perf_counter() - t0, 1), "results": results,
              "targets": {"ratio": TARGET_RATIO, "us_per_event": TARGET_US_PER_EVENT}}
    print(common.write("overhead", result, table(results)))
    return result


if __name__ == "__main__":
    main()

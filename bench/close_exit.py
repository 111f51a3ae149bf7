"""What the instrumentation costs an application's close() and exit, whatever the Collector does (issue #13).

Each run is a fresh application process (bench/_close_app.py, bench/_default_script.py)
whose stdout and stderr are pipes to this driver, side by side in the same round:

* ``plain``   -- plain Python, no ``opentelemetry-instrument``;
* ``off``     -- ``opentelemetry-instrument`` with ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=rocksdict``
  (the baseline: the same SDK, ours not loaded);
* ``process`` -- instrumentation on, the helper process (the default under ``opentelemetry-instrument``);
* ``thread``  -- instrumentation on, ``OTEL_PYTHON_ROCKSDICT_MODE=thread`` (the app's own providers).

and three Collectors, all OTLP/gRPC: ``up`` (the tests' OTLP receiver, bench/_otlp.py),
``refusing`` (the receiver answering UNAVAILABLE: tests/otlp_receiver.py ``set_available(False)``)
and ``absent`` (a port bound but not listening: connection refused).

Scenarios (bench/_close_app.py):

* ``close`` -- 5 × (open a blob DB, 600 puts of 1 KiB, RocksDB flushing by itself, idle, ``close()``);
* ``close+flush`` -- the same with an ``Rdict.flush()`` call before each close (the
  instrumentation records it as a span of the application's own tracer provider);
* ``cycles`` -- 200 × (open / 20 puts / close) of one blob DB: ms per cycle;
* ``script`` -- a 0.1 s script: open a DB with default options, one put, close (wall time).

Per run: close() times; the first open-to-close of the process; start-to-exit (spawn to
the kernel's exit, on a pidfd); the exit phase (the script's last line to the exit:
interpreter teardown and atexit hooks, the SDK's shutdown included); the time from the
exit to EOF on both pipes; when the helper process (if any) ended after the app; what the
receiver got against the LOG (``up``); what the helper recorded as undelivered.
``OTEL_PYTHON_ROCKSDICT_HELPER_EXIT_TIMEOUT`` is 2 s here (the default 30 s would only make
the driver wait longer for a helper before the next run: nothing in the application waits).

Targets: close() p50 <= 50 ms in every case; exit <= +1 s over ``off``; pipes at EOF <= 2 s
after the app's exit; <= +3 ms per open/close cycle over ``off``.

    python -m bench.close_exit [--rounds 2] [--quick] [--scenarios ...] [--states ...] [--variants ...]

(~4 min per round: thread mode's exits with the Collector away take 7-30 s each; --quick ~30 s.)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any

from bench import common
from bench._interleave import default_dir, otel_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OTEL_INSTRUMENT = os.path.join(os.path.dirname(sys.executable), "opentelemetry-instrument")
HELPER_EXIT_TIMEOUT = 2.0

VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {"instrumented": False, "env": {}},
    "off": {"instrumented": True, "env": {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "rocksdict"}},
    "process": {"instrumented": True, "env": {"OTEL_PYTHON_ROCKSDICT_MODE": "process"}},
    "thread": {"instrumented": True, "env": {"OTEL_PYTHON_ROCKSDICT_MODE": "thread"}},
}
STATES = ("up", "refusing", "absent")
SCENARIOS = ("close", "close+flush", "cycles", "script")
TARGET_CLOSE_P50_MS = 50.0
TARGET_EXIT_S = 1.0
TARGET_PIPES_S = 2.0
TARGET_CYCLE_MS = 3.0
BLOB_LINE = b'"event": "blob_file_'
BLOB_EVENT_NAMES = {"blob_file_creation": "rocksdb.blob_file.created", "blob_file_deletion": "rocksdb.blob_file.deleted"}


def _free_closed_port() -> tuple[socket.socket, str]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    return s, f"http://127.0.0.1:{s.getsockname()[1]}"


def _env(endpoint: str | None, service: str, state_dir: str, extra: dict[str, str]) -> dict[str, str]:
    ours = {} if endpoint is None else {"OTEL_PYTHON_ROCKSDICT_STATE_DIR": state_dir,
                                        "OTEL_PYTHON_ROCKSDICT_HELPER_EXIT_TIMEOUT": str(HELPER_EXIT_TIMEOUT)}
    return otel_env(endpoint, service, {**ours, **extra})


def _wait_pid(pid: int, timeout: float) -> float | None:
    """time.monotonic() when process ``pid`` (not necessarily our child) is gone; None on timeout."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return time.monotonic()
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return time.monotonic() if ready else None
    finally:
        os.close(fd)


def spawn(argv: list[str], env: dict[str, str], timeout: float = 180.0) -> dict[str, Any]:
    """Run the app; times (monotonic) of its start, exit and of EOF on each pipe; its output."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env, cwd=REPO)
    pidfd = os.pidfd_open(p.pid)
    data: dict[str, list[bytes]] = {"out": [], "err": []}
    eof: dict[str, float] = {}

    def reader(name: str, stream: Any) -> None:
        fd = stream.fileno()
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                eof[name] = time.monotonic()
                return
            data[name].append(chunk)

    threads = [threading.Thread(target=reader, args=(n, s), daemon=True)
               for n, s in (("out", p.stdout), ("err", p.stderr))]
    for t in threads:
        t.start()
    ready, _, _ = select.select([pidfd], [], [], timeout)
    t_exit = time.monotonic()
    os.close(pidfd)
    if not ready:
        p.kill()
    rc = p.wait()
    for t in threads:
        t.join(timeout)
    p.stdout.close()
    p.stderr.close()
    out = b"".join(data["out"]).decode(errors="replace")
    err = b"".join(data["err"]).decode(errors="replace")
    result = None
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            result = json.loads(line)
            break
    return {"rc": rc, "timed_out": not ready, "t0": t0, "t_exit": t_exit,
            "start_to_exit_s": t_exit - t0,
            "pipes_after_exit_s": max(0.0, max(eof.get("out", t_exit), eof.get("err", t_exit)) - t_exit),
            "result": result, "stderr_tail": err[-1500:], "stderr_lines": len(err.splitlines())}


def _log_events(db: str) -> Counter[tuple[str, int | None]]:
    """(event name, file number) of every blob file event line in the DB's LOG files."""
    out: Counter[tuple[str, int | None]] = Counter()
    try:
        names = os.listdir(db)
    except OSError:
        return out
    for name in names:
        if name == "LOG" or name.startswith("LOG.old."):
            with open(os.path.join(db, name), "rb") as f:
                for line in f:
                    at = line.find(b"EVENT_LOG_v1 ")
                    if at < 0 or BLOB_LINE not in line:
                        continue
                    try:
                        ev = json.loads(line[at + 13:])
                    except ValueError:
                        out[("unreadable", None)] += 1
                        continue
                    name_ = BLOB_EVENT_NAMES.get(ev.get("event"), "?")
                    out[(name_, ev.get("file_number"))] += 1
    return out


def _holding(path: str) -> list[int]:
    """Processes whose stderr is ``path``."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.readlink(f"/proc/{pid}/fd/2") == path:
                    out.append(int(pid))
            except OSError:
                pass
    return out


def _undelivered(state_dir: str) -> int | None:
    path = os.path.join(state_dir, "undelivered.jsonl")
    try:
        with open(path) as f:
            return sum(int(json.loads(line).get("dropped", 0)) for line in f if line.strip())
    except OSError:
        return None


class Bench:
    def __init__(self, a: argparse.Namespace, tmp: str, endpoints: dict[str, str], counting: Any) -> None:
        self.a = a
        self.tmp = tmp
        self.endpoints = endpoints
        self.counting = counting
        self.n = 0
        self.runs: list[dict[str, Any]] = []

    def run(self, scenario: str, state: str, variant: str, rnd: int) -> dict[str, Any]:
        self.n += 1
        work = os.path.join(self.tmp, f"run{self.n:04d}")
        os.makedirs(work)
        db = os.path.join(work, "db")
        state_dir = os.path.join(work, "state")
        spec = VARIANTS[variant]
        service = f"close-exit-{self.n}"
        env = _env(self.endpoints[state] if spec["instrumented"] else None, service, state_dir, spec["env"])
        if scenario == "script":
            py = [sys.executable, os.path.join(REPO, "bench", "_default_script.py"), db]
        elif scenario == "cycles":
            py = [sys.executable, "-m", "bench._close_app", "cycles", "--db", db, "--cycles", str(self.a.cycles)]
        else:
            py = [sys.executable, "-m", "bench._close_app", "close", "--db", db, "--closes", str(self.a.closes)]
            if scenario == "close+flush":
                py.append("--flush")
        argv = [OTEL_INSTRUMENT, *py] if spec["instrumented"] else py
        r = spawn(argv, env)
        res = r.pop("result") or {}
        rec: dict[str, Any] = {"scenario": scenario, "state": state, "variant": variant, "round": rnd, **r}
        if r["rc"] != 0 or (scenario != "script" and not res):
            rec["error"] = f"exit status {r['rc']}: {r['stderr_tail'][-600:]}"
        if res:
            rec["close_s"] = res.get("close_s")
            rec["cycle_ms"] = res.get("cycle_ms")
            rec["first_open_to_close_s"] = res.get("first_open_to_close_s")
            rec["exit_phase_s"] = r["t_exit"] - res["exit_begin"]
        # The helper, found by its log (its stderr is <state dir>/helper.log): waited for, so that no
        # helper still delivering runs beside the next measurement.
        # (Gone already: the time it is found gone, an upper bound.)
        helpers = sorted(set(_holding(os.path.join(state_dir, "helper.log"))) | set(res.get("helpers") or []))
        gone = [_wait_pid(h, HELPER_EXIT_TIMEOUT + 30) for h in helpers]
        rec["helpers"] = len(helpers)
        rec["helper_gone_after_exit_s"] = (max((g - r["t_exit"]) if g is not None else float("inf") for g in gone)
                                           if helpers else None)
        rec["undelivered"] = _undelivered(state_dir)
        if state == "up" and variant in ("process", "thread") and scenario != "script":
            logged = _log_events(db)
            # The helper delivers after the app's exit: it is gone by now (waited above).
            got = self.counting.files(service)
            rec["received"], rec["logged"] = sum(got.values()), sum(logged.values())
            # By file: a count can agree while one file is missing and another repeated.
            rec["missing"] = sorted(map(list, logged - got), key=str)
            rec["repeated"] = sorted(map(list, got - logged), key=str)
            if rec["missing"] or rec["repeated"]:
                rec["stderr_tail"] = r["stderr_tail"]
                keep = os.path.join(self.tmp, "..", f"close_exit-mismatch-{service}")
                shutil.copytree(work, keep, ignore=shutil.ignore_patterns("*.blob", "*.sst"), dirs_exist_ok=True)
                rec["kept"] = os.path.abspath(keep)
        shutil.rmtree(work, ignore_errors=True)
        self.runs.append(rec)
        return rec


def _cells(a: argparse.Namespace) -> list[tuple[str, str, list[str]]]:
    """(scenario, Collector, variants) groups; plain (no OpenTelemetry, no Collector) runs in the first group only."""
    return [(scenario, state, [v for v in a.variants if v != "plain" or i == 0])
            for scenario in a.scenarios for i, state in enumerate(a.states)]


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    i = int(k)
    return xs[i] if i + 1 >= len(xs) else xs[i] + (xs[i + 1] - xs[i]) * (k - i)


def _med(xs: list[Any]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _received(r: dict[str, Any]) -> str:
    """received/logged, and the files behind any difference (distinct (event, file) pairs)."""
    text = f"{r['received']}/{r['logged']}"
    odd = [f"{r[k]} {k}" for k in ("missing", "repeated") if r.get(k)]
    return text + (f" (**{', '.join(odd)}**)" if odd else "")


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["scenario"], r["state"], r["variant"]), []).append(r)
    rows = []
    for (scenario, state, variant), rs in groups.items():
        closes = [c for r in rs for c in (r.get("close_s") or [])]
        row = {
            "scenario": scenario, "state": state, "variant": variant, "runs": len(rs),
            "errors": [r["error"] for r in rs if r.get("error")],
            "close_p50_ms": None if not closes else _pct(closes, 0.5) * 1000,
            "close_p95_ms": None if not closes else _pct(closes, 0.95) * 1000,
            "close_max_ms": None if not closes else max(closes) * 1000,
            "first_open_to_close_ms": None if _med([r.get("first_open_to_close_s") for r in rs]) is None
            else _med([r.get("first_open_to_close_s") for r in rs]) * 1000,
            "start_to_exit_s": _med([r["start_to_exit_s"] for r in rs]),
            "start_to_exit_max_s": max(r["start_to_exit_s"] for r in rs),
            "exit_phase_s": _med([r.get("exit_phase_s") for r in rs]),
            "exit_phase_max_s": max((r.get("exit_phase_s") or 0) for r in rs),
            "pipes_after_exit_max_s": max(r["pipes_after_exit_s"] for r in rs),
            "helper_gone_max_s": max((r["helper_gone_after_exit_s"] for r in rs
                                      if r.get("helper_gone_after_exit_s") is not None), default=None),
            "cycle_ms": _med([r.get("cycle_ms") for r in rs]),
            "received": sum(r.get("received") or 0 for r in rs) if any("received" in r for r in rs) else None,
            "logged": sum(r.get("logged") or 0 for r in rs) if any("logged" in r for r in rs) else None,
            "missing": sum(len(r.get("missing") or ()) for r in rs),
            "repeated": sum(len(r.get("repeated") or ()) for r in rs),
            "undelivered": sum(r.get("undelivered") or 0 for r in rs),
            "stderr_lines_max": max(r["stderr_lines"] for r in rs),
        }
        rows.append(row)
    # Differences against off (same scenario and Collector) and plain (same scenario).
    by = {(r["scenario"], r["state"], r["variant"]): r for r in rows}
    plain = {r["scenario"]: r for r in rows if r["variant"] == "plain"}
    for r in rows:
        off = by.get((r["scenario"], r["state"], "off"))
        base = plain.get(r["scenario"])
        for key in ("start_to_exit_s", "exit_phase_s", "cycle_ms", "first_open_to_close_ms"):
            r[f"{key}_vs_off"] = (None if off is None or r[key] is None or off[key] is None or r["variant"] == "off"
                                  else r[key] - off[key])
            r[f"{key}_vs_plain"] = (None if base is None or r[key] is None or base[key] is None
                                    or r["variant"] == "plain" else r[key] - base[key])
    order = {s: i for i, s in enumerate(SCENARIOS)}
    st = {s: i for i, s in enumerate(STATES)}
    vo = {v: i for i, v in enumerate(VARIANTS)}
    rows.sort(key=lambda r: (order[r["scenario"]], st[r["state"]], vo[r["variant"]]))
    return rows


def _f(x: Any, fmt: str = "{:.1f}", none: str = "—") -> str:
    return none if x is None else fmt.format(x)


def _signed(x: Any, fmt: str = "{:+.2f}") -> str:
    return "—" if x is None else fmt.format(x)


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target: the worst case and whether every case meets it."""
    out = []
    closes = [r for r in rows if r["scenario"] in ("close", "close+flush") and r["close_p50_ms"] is not None]
    if closes:
        worst = max(closes, key=lambda r: r["close_p50_ms"])
        out.append({"target": f"close() p50 <= {TARGET_CLOSE_P50_MS:.0f} ms, every case",
                    "worst": f"{worst['close_p50_ms']:.1f} ms ({worst['scenario']}, {worst['state']}, "
                             f"{worst['variant']})",
                    "met": all(r["close_p50_ms"] <= TARGET_CLOSE_P50_MS for r in closes),
                    "misses": [f"{r['scenario']}/{r['state']}/{r['variant']}" for r in closes
                               if r["close_p50_ms"] > TARGET_CLOSE_P50_MS]})
    def exit_delta(r: dict[str, Any]) -> float | None:
        # The exit phase; for the script (no last line of its own) the whole run, which is mostly its exit.
        return r["exit_phase_s_vs_off"] if r["exit_phase_s_vs_off"] is not None else r["start_to_exit_s_vs_off"]

    ex = [r for r in rows if r["variant"] in ("process", "thread") and exit_delta(r) is not None]
    if ex:
        worst = max(ex, key=exit_delta)
        out.append({"target": f"exit <= +{TARGET_EXIT_S:.0f} s over off (exit phase; the script: spawn to exit), "
                              f"every case",
                    "worst": f"{exit_delta(worst):+.2f} s ({worst['scenario']}, {worst['state']}, {worst['variant']})",
                    "met": all(exit_delta(r) <= TARGET_EXIT_S for r in ex),
                    "misses": [f"{r['scenario']}/{r['state']}/{r['variant']} {exit_delta(r):+.1f} s"
                               for r in ex if exit_delta(r) > TARGET_EXIT_S]})
    pipes = [r for r in rows if r["variant"] in ("process", "thread")]
    if pipes:
        worst = max(pipes, key=lambda r: r["pipes_after_exit_max_s"])
        out.append({"target": f"pipes at EOF <= {TARGET_PIPES_S:.0f} s after the app's exit, every run",
                    "worst": f"{worst['pipes_after_exit_max_s']:.3f} s ({worst['scenario']}, {worst['state']}, "
                             f"{worst['variant']})",
                    "met": all(r["pipes_after_exit_max_s"] <= TARGET_PIPES_S for r in pipes), "misses": []})
    cyc = [r for r in rows if r["scenario"] == "cycles" and r["variant"] in ("process", "thread")
           and r["cycle_ms_vs_off"] is not None]
    if cyc:
        worst = max(cyc, key=lambda r: r["cycle_ms_vs_off"])
        out.append({"target": f"<= +{TARGET_CYCLE_MS:.0f} ms per open/close cycle over off",
                    "worst": f"{worst['cycle_ms_vs_off']:+.2f} ms ({worst['state']}, {worst['variant']})",
                    "met": all(r["cycle_ms_vs_off"] <= TARGET_CYCLE_MS for r in cyc),
                    "misses": [f"{r['state']}/{r['variant']}" for r in cyc if r["cycle_ms_vs_off"] > TARGET_CYCLE_MS]})
    counted = [r for r in rows if r["received"] is not None]
    if counted:
        odd = [r for r in counted if r["missing"] or r["repeated"]]
        out.append({"target": "Collector up: every blob file event in the LOG received once (by file)",
                    "worst": (f"{sum(r['missing'] for r in odd)} missing, {sum(r['repeated'] for r in odd)} repeated"
                              if odd else "all exact"),
                    "met": not odd,
                    "misses": [f"{r['scenario']}/{r['variant']}" for r in odd]})
    return out


def table(rows: list[dict[str, Any]], tg: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"`{meta['command']}` — {meta['rounds']} round(s), {meta['cpus']} CPUs, load {meta['load_before']} → "
             f"{meta['load_after']}, {meta['elapsed_s']:.0f} s; helper exit timeout {HELPER_EXIT_TIMEOUT:.0f} s "
             f"(the setting; nothing in the application waits for it)", ""]
    lines += ["**close() and exit** (medians of the runs; close() over every close of every run):", "",
              "| scenario | Collector | variant | close() p50 / p95 / max ms | first open→close ms | start→exit s "
              "(Δ off) | exit phase s (Δ off) | pipes EOF after exit, max s | helper gone after exit, max s | "
              "received/logged | undelivered (recorded) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["scenario"] not in ("close", "close+flush"):
            continue
        lines.append(
            f"| {r['scenario']} | {r['state'] if r['variant'] != 'plain' else '—'} | {r['variant']} | "
            f"{_f(r['close_p50_ms'])} / {_f(r['close_p95_ms'])} / {_f(r['close_max_ms'])} | "
            f"{_f(r['first_open_to_close_ms'])} ({_signed(r['first_open_to_close_ms_vs_off'], '{:+.1f}')}) | "
            f"{_f(r['start_to_exit_s'], '{:.2f}')} ({_signed(r['start_to_exit_s_vs_off'])}) | "
            f"{_f(r['exit_phase_s'], '{:.2f}')} ({_signed(r['exit_phase_s_vs_off'])}) | "
            f"{r['pipes_after_exit_max_s']:.3f} | {_f(r['helper_gone_max_s'], '{:.2f}')} | "
            f"{'—' if r['received'] is None else _received(r)} | "
            f"{r['undelivered'] or '—'} |")
    lines += ["", "**open/close cycles** (ms per cycle of open / 20 puts / close, median of the runs):", "",
              "| Collector | variant | ms/cycle | Δ off ms | Δ plain ms | first open→close ms | exit phase s (Δ off) | "
              "pipes EOF after exit, max s | received/logged |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["scenario"] != "cycles":
            continue
        lines.append(
            f"| {r['state'] if r['variant'] != 'plain' else '—'} | {r['variant']} | {_f(r['cycle_ms'], '{:.2f}')} | "
            f"{_signed(r['cycle_ms_vs_off'])} | {_signed(r['cycle_ms_vs_plain'])} | "
            f"{_f(r['first_open_to_close_ms'])} | {_f(r['exit_phase_s'], '{:.2f}')} "
            f"({_signed(r['exit_phase_s_vs_off'])}) | {r['pipes_after_exit_max_s']:.3f} | "
            f"{'—' if r['received'] is None else _received(r)} |")
    lines += ["", "**a 0.1 s script** (open a DB with default options, one put, close; spawn to exit, median):", "",
              "| Collector | variant | wall s | Δ off s | Δ plain s | pipes EOF after exit, max s |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        if r["scenario"] != "script":
            continue
        lines.append(f"| {r['state'] if r['variant'] != 'plain' else '—'} | {r['variant']} | "
                     f"{_f(r['start_to_exit_s'], '{:.3f}')} | {_signed(r['start_to_exit_s_vs_off'], '{:+.3f}')} | "
                     f"{_signed(r['start_to_exit_s_vs_plain'], '{:+.3f}')} | {r['pipes_after_exit_max_s']:.3f} |")
    lines += ["", "**Targets**", "", "| target | worst case | |", "|---|---|---|"]
    for t in tg:
        miss = "" if t["met"] else f" ({'; '.join(t['misses'])})" if t["misses"] else ""
        lines.append(f"| {t['target']} | {t['worst']} | {'met' if t['met'] else '**missed**' + miss} |")
    errors = [f"{r['scenario']}/{r['state']}/{r['variant']}: {e}" for r in rows for e in r["errors"]]
    if errors:
        lines += ["", "Errors:", *[f"- {e[:300]}" for e in errors]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="rounds (~4 min each with every scenario and variant)")
    ap.add_argument("--closes", type=int, default=5, help="close() calls per close run")
    ap.add_argument("--cycles", type=int, default=200, help="open/close cycles per cycles run")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--states", default=",".join(STATES))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", default=default_dir(), help="where the DBs live (default: /dev/shm if writable)")
    ap.add_argument("--quick", action="store_true",
                    help="~30 s smoke run: 1 round, plain/off/process, close, cycles (50) and script")
    a = ap.parse_args(argv)
    if a.quick:
        a.rounds, a.cycles = 1, min(a.cycles, 50)
        if a.scenarios == ",".join(SCENARIOS):
            a.scenarios = "close,cycles,script"
        if a.variants == ",".join(VARIANTS):
            a.variants = "plain,off,process"
    a.scenarios = [s for s in a.scenarios.split(",") if s]
    a.states = [s for s in a.states.split(",") if s]
    a.variants = [v for v in a.variants.split(",") if v]
    for name, xs, known in (("scenario", a.scenarios, SCENARIOS), ("state", a.states, STATES),
                            ("variant", a.variants, VARIANTS)):
        for x in xs:
            if x not in known:
                ap.error(f"unknown {name} {x!r}")
    command = "python -m bench.close_exit" + (" --quick" if a.quick else f" --rounds {a.rounds}")
    from bench._otlp import CountingReceiver

    sys.path.insert(0, os.path.join(REPO, "tests"))
    from otlp_receiver import OtlpReceiver

    rng = random.Random(a.seed)
    tmp = tempfile.mkdtemp(prefix="otel_blob_close_exit_", dir=a.dir)
    load_before = common.machine()["loadavg"]
    t0 = time.perf_counter()
    closed, absent = _free_closed_port()
    try:
        with CountingReceiver() as up, OtlpReceiver() as refusing:
            refusing.set_available(False)
            endpoints = {"up": up.grpc_endpoint, "refusing": refusing.grpc_endpoint, "absent": absent}
            b = Bench(a, tmp, endpoints, up)
            cells = _cells(a)
            for rnd in range(a.rounds):
                for scenario, state, variants in cells:
                    order = list(variants)
                    rng.shuffle(order)  # side by side, in a new order every round
                    for v in order:
                        rec = b.run(scenario, state, v, rnd)
                        print(f"close_exit: round {rnd + 1}/{a.rounds} {scenario}/{state}/{v}: "
                              f"start→exit {rec['start_to_exit_s']:.2f} s"
                              + (f", error: {rec['error'][:200]}" if rec.get("error") else ""), file=sys.stderr)
    finally:
        closed.close()
        shutil.rmtree(tmp, ignore_errors=True)
    rows = summarize(b.runs)
    tg = targets(rows)
    meta = {"command": command, "rounds": a.rounds, "cpus": os.cpu_count(), "load_before": load_before,
            "load_after": common.machine()["loadavg"], "elapsed_s": time.perf_counter() - t0}
    result = {"quick": a.quick, **meta, "helper_exit_timeout_s": HELPER_EXIT_TIMEOUT, "rows": rows,
              "targets": tg, "runs": b.runs}
    print(common.write("close_exit", result, table(rows, tg, meta)))
    return result


if __name__ == "__main__":
    main()

"""Shared bits: interleaved paired runs, medians, machine load, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Any, Callable

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def interleaved(variants: dict[str, Callable[[], Any]], runs: int) -> dict[str, list[dict[str, float]]]:
    """Run every variant once per round, rotating the order each round (so a slow
    spell of the machine hits all of them alike). Wall and CPU seconds per run."""
    names = list(variants)
    out: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for r in range(runs):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            c0, t0 = time.process_time(), time.perf_counter()
            variants[n]()
            out[n].append({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0})
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a[i] / b[i]."""
    return statistics.median(x / y for x, y in zip(a, b))


def write(name: str, result: dict[str, Any], table: str) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    result = {"benchmark": name, "machine": machine(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **result}
    with open(os.path.join(RESULTS, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(RESULTS, f"{name}.md"), "w") as f:
        f.write(table + "\n")
    return table

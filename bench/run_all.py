"""Run every benchmark; results in bench/results/*.json and bench/results/summary.md.

    .venv/bin/python -m bench.run_all            # full (~18 min): 100 MB parse corpus, 1 GB memory corpus, 5 rounds,
                                                 #   OTel replay (~1 min), overhead (~2.5 min), detection lag (~2.5 min),
                                                 #   close() and exit (~8 min)
    .venv/bin/python -m bench.run_all --quick    # smoke run (~2.5 minutes)
"""

from __future__ import annotations

import argparse
import os

from bench import close_exit, common, lag, memory_scale, otel_replay, overhead, parse_throughput


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    q = ["--quick"] if a.quick else []
    parse_throughput.main(["--check", *q])
    memory_scale.main(q)
    otel_replay.main(q)
    overhead.main(q)
    lag.main(q)
    close_exit.main(q)
    parts = []
    for name in ("parse_throughput", "memory_scale", "otel_replay", "overhead", "lag", "close_exit"):
        with open(os.path.join(common.RESULTS, f"{name}.md")) as f:
            parts.append(f"## {name}\n\n{f.read()}")
    with open(os.path.join(common.RESULTS, "summary.md"), "w") as f:
        f.write("\n".join(parts))
    print(f"results: {common.RESULTS}")


if __name__ == "__main__":
    main()

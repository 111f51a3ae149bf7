"""Throughput (c): a >= 100 MB real LOG replayed through the full OpenTelemetry pipeline.

``otel-blob replay`` (a subprocess, as a user runs it) turns every blob event into a
log record and a span event on its job span and exports them over OTLP/gRPC to a
receiver in this process that decodes the protobuf (tests/otlp_receiver.py). Per
round, side by side: the plain ``json.loads`` loop over the same file. Reported:
blob events/s delivered, lines/s, MB/s, and what reached the receiver versus what
the LOG holds (zero drops is the requirement; replay applies backpressure).

    python -m bench.otel_replay [--size 100M] [--runs 5] [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from bench import common, make_log
from bench.parse_throughput import json_loop

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from otlp_receiver import OtlpReceiver  # noqa: E402

BIN = os.path.dirname(sys.executable)
BLOB_EVENTS = ("rocksdb.blob_file.created", "rocksdb.blob_file.deleted")


def replay(path: str, rcv: OtlpReceiver, protocol: str) -> dict[str, float]:
    endpoint = rcv.grpc_endpoint if protocol == "grpc" else rcv.http_endpoint
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
           "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_METRICS_EXPORTER": "none"}
    rcv.clear()
    t0 = time.perf_counter()
    proc = subprocess.run([os.path.join(BIN, "otel-blob"), "replay", "--db", "/bench/db", path], env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"replay failed: {proc.stderr[-2000:]}")
    records = sum(1 for r in rcv.log_records() if r["event_name"] in BLOB_EVENTS)
    span_events = sum(1 for s in rcv.spans() for e in s["events"] if e["name"] in BLOB_EVENTS)
    return {"wall": wall, "records": records, "span_events": span_events, "dropped_msgs": proc.stderr.count("dropped")}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=make_log.parse_size, default=make_log.parse_size("100M"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--protocol", choices=("grpc", "http/protobuf"), default="grpc")
    ap.add_argument("--quick", action="store_true", help="10 MB, 1 run: a smoke run")
    a = ap.parse_args(argv)
    if a.quick:
        a.size, a.runs = min(a.size, 10 << 20), 1
    path = make_log.corpus(a.size)
    st = make_log.stats(path)
    blob_events = st["blob_created"] + st["blob_deleted"]
    rounds = []
    with OtlpReceiver() as rcv:
        for _ in range(a.runs):
            t0 = time.perf_counter()
            json_loop(path)
            base = time.perf_counter() - t0
            r = replay(path, rcv, a.protocol)
            r["json_loop_wall"] = base
            rounds.append(r)
            print(f"round: {r}", file=sys.stderr)
    walls = [r["wall"] for r in rounds]
    med = common.median(walls)
    result = {
        "corpus": {"path": path, **st},
        "protocol": a.protocol,
        "runs": a.runs,
        "median_s": round(med, 2),
        "blob_events_per_s": round(blob_events / med),
        "lines_per_s": round(st["lines"] / med),
        "mb_per_s": round(st["bytes"] / med / 1e6, 1),
        "vs_json_loop": round(common.paired_ratio([r["json_loop_wall"] for r in rounds], walls), 3),
        "expected_blob_events": blob_events,
        "delivered_records_min": min(r["records"] for r in rounds),
        "delivered_span_events_min": min(r["span_events"] for r in rounds),
        "rounds": rounds,
    }
    drops = blob_events - result["delivered_records_min"]
    table = "\n".join([
        f"Corpus: {st['bytes'] / 1e6:.0f} MB, {st['lines']:,} lines, {blob_events:,} blob events; OTLP {a.protocol}; "
        f"{a.runs} rounds; load {common.machine()['loadavg']}",
        "",
        "| pipeline | median s | blob events/s | lines/s | MB/s | × json_loop | log records / span events delivered (min) | dropped |",
        "|---|---|---|---|---|---|---|---|",
        f"| `otel-blob replay` → OTLP receiver | {med:.2f} | {result['blob_events_per_s']:,} | {result['lines_per_s']:,} | "
        f"{result['mb_per_s']} | {result['vs_json_loop']} | {result['delivered_records_min']:,} / "
        f"{result['delivered_span_events_min']:,} of {blob_events:,} | {drops} |",
    ])
    print(common.write("otel_replay", result, table))
    return result


if __name__ == "__main__":
    main()

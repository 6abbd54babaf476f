"""The benchmark's window job on Bytewax.

Usage: bytewax_job.py EVENTS.csv OUT.jsonl KIND [--workers N]
       (KIND: tumbling:SIZE_MS | sliding:SIZE_MS:SLIDE_MS | session:GAP_MS)

Reads the CSV rows `ts,service,latency_ms`, keys them by service, and folds
each window of latencies with Bytewax's own windowing operator
(`fold_window`) on an event-time clock, then writes one JSON line per
window: key, start, end (epoch ms), count, sum, mean, min, max, stddev
(population), p50, p95, p99.

Bytewax has no quantile sketch, so a window's accumulator keeps its
latencies and the quantiles are exact (linear interpolation between the
two nearest order statistics), taken once when the window closes. The fold
is declared unordered (`ordered=False`): every statistic here is
commutative, so Bytewax need not buffer and sort a window's values by time.

The event clock's watermark is the largest event time seen minus the
out-of-order allowance, purely in event time: `now_getter` returns a
constant, so the watermark does not creep forward with wall-clock time
while the file is replayed (Bytewax's default, meant for live streams).
At the end of the file every window closes.
"""

import argparse
import json
import math
import sys
from datetime import datetime, timedelta, timezone

import bytewax.operators as op
from bytewax._bytewax import cli_main
from bytewax.connectors.files import FileSource
from bytewax.dataflow import Dataflow
from bytewax.operators.windowing import (
    EventClock,
    SessionWindower,
    SlidingWindower,
    TumblingWindower,
    fold_window,
)
from bytewax.outputs import DynamicSink, StatelessSinkPartition

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
FROZEN_NOW = datetime(2000, 1, 1, tzinfo=timezone.utc)


def epoch_ms(t: datetime) -> int:
    return (t - EPOCH) // timedelta(milliseconds=1)


class ListSink(DynamicSink):
    """Keeps what reaches it in a list of this process (one worker)."""

    def __init__(self, into: list):
        self.into = into

    def build(self, step_id, worker_index, worker_count):
        into = self.into

        class Part(StatelessSinkPartition):
            def write_batch(self, items):
                into.extend(items)

        return Part()


def parse(line: str):
    ts, service, latency = line.split(",")
    return service, (EPOCH + timedelta(milliseconds=int(ts)), float(latency))


def new_acc():
    # count, sum, min, max, values
    return [0, 0.0, math.inf, -math.inf, []]


def fold(acc, event):
    v = event[1]
    acc[0] += 1
    acc[1] += v
    if v < acc[2]:
        acc[2] = v
    if v > acc[3]:
        acc[3] = v
    acc[4].append(v)
    return acc


def merge(a, b):
    a[0] += b[0]
    a[1] += b[1]
    a[2] = min(a[2], b[2])
    a[3] = max(a[3], b[3])
    a[4].extend(b[4])
    return a


def quantile(sorted_values, q):
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def finish(acc):
    n, total, lo, hi, values = acc
    mean = total / n
    var = sum((v - mean) ** 2 for v in values) / n
    values.sort()
    return {
        "count": n,
        "sum": total,
        "mean": mean,
        "min": lo,
        "max": hi,
        "stddev": math.sqrt(var),
        "p50": quantile(values, 0.5),
        "p95": quantile(values, 0.95),
        "p99": quantile(values, 0.99),
    }


def build_flow(csv_path, kind, wait_ms, results, metas, late):
    parts = kind.split(":")
    if parts[0] == "tumbling":
        windower = TumblingWindower(length=timedelta(milliseconds=int(parts[1])), align_to=EPOCH)
    elif parts[0] == "sliding":
        windower = SlidingWindower(
            length=timedelta(milliseconds=int(parts[1])),
            offset=timedelta(milliseconds=int(parts[2])),
            align_to=EPOCH,
        )
    elif parts[0] == "session":
        windower = SessionWindower(gap=timedelta(milliseconds=int(parts[1])))
    else:
        raise SystemExit(f"unknown window kind {kind}")
    clock = EventClock(
        ts_getter=lambda e: e[0],
        wait_for_system_duration=timedelta(milliseconds=wait_ms),
        now_getter=lambda: FROZEN_NOW,
    )
    flow = Dataflow("sluice_peer_bench")
    lines = op.input("read", flow, FileSource(csv_path, batch_size=4096))
    keyed = op.map("parse", lines, parse)
    out = fold_window("window", keyed, clock, windower, new_acc, fold, merge, ordered=False)
    op.output("results", op.map("finish", out.down, lambda kv: (kv[0], kv[1][0], finish(kv[1][1]))), ListSink(results))
    op.output("meta", out.meta, ListSink(metas))
    op.output("late", out.late, ListSink(late))
    return flow


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("out")
    ap.add_argument("kind")
    ap.add_argument("--out-of-order-ms", type=int, default=5000)
    args = ap.parse_args()
    results, metas, late = [], [], []
    cli_main(build_flow(args.csv, args.kind, args.out_of_order_ms, results, metas, late))
    if late:
        print(f"bytewax: {len(late)} events were late", file=sys.stderr)
    bounds = {}
    session = args.kind.startswith("session")
    gap_ms = int(args.kind.split(":")[1]) if session else 0
    for key, (wid, meta) in metas:
        # A Bytewax session closes at its last event; sluice's and Flink's
        # end one gap later. Report the end the other engines use.
        bounds[(key, wid)] = (epoch_ms(meta.open_time), epoch_ms(meta.close_time) + gap_ms)
    with open(args.out, "w") as f:
        for key, wid, stats in results:
            start, end = bounds[(key, wid)]
            f.write(json.dumps({"key": key, "start": start, "end": end, **stats}) + "\n")


if __name__ == "__main__":
    main()

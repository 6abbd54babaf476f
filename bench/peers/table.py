"""Prints the peer benchmark's table from run.sh's wall times.

Usage: table.py TIMES.tsv EVENTS TINY GAP_MS LOAD_BEFORE LOAD_AFTER

TIMES.tsv has one line per run: engine, window kind, data (`events` or
`tiny`), wall time in ms. For each engine and kind the best (shortest) run
counts. Two rates are given: events / (best run - best run over the tiny
file), which takes the start-up (process, JVM, job planning, plugin
compilation) out, and events / best run, the whole process.
"""

import os
import platform
import subprocess
import sys
from collections import defaultdict

TARGETS = {"tumbling": 25, "sliding": 25, "session": 15}
NAMES = {
    "sluice": "sluice",
    "flink-p1": "PyFlink, parallelism 1",
    "flink-p2": "PyFlink, parallelism 2",
    "bytewax": "Bytewax, 1 worker",
}


def rate(x) -> str:
    if x is None:
        return "n/a"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    return f"{x / 1e3:.0f}k"


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def java_version() -> str:
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
        return out.splitlines()[0]
    except OSError:
        return "none"


def main() -> None:
    path, events, tiny, gap_ms, load_before, load_after = sys.argv[1:7]
    events, tiny = int(events), int(tiny)
    best = defaultdict(lambda: float("inf"))
    runs = defaultdict(int)
    for line in open(path):
        engine, kind, data, ms = line.split("\t")
        best[(engine, kind, data)] = min(best[(engine, kind, data)], int(ms) / 1000)
        runs[(engine, kind, data)] += 1
    engines = [e for e in NAMES if any(k[0] == e for k in best)]
    kinds = [k for k in TARGETS if any(key[1] == k for key in best)]

    def net(engine, kind):
        # None when the start-up run took longer than the whole one (the
        # noise of a loaded machine on a small --events).
        whole, start = best[(engine, kind, "events")], best[(engine, kind, "tiny")]
        return (events - tiny) / (whole - start) if whole > start else None

    def raw(engine, kind):
        return events / best[(engine, kind, "events")]

    with open("/proc/meminfo") as f:
        mem_gib = int(f.readline().split()[1]) / 2**20
    print(f"\n{events:,} events, 10 keys, 5% out of order by up to 3 s; best of "
          f"{max(runs.values())} runs per engine and window kind")
    print(f"machine: {os.cpu_count()} CPUs ({cpu_model()}), {mem_gib:.0f} GiB; "
          f"load average {load_before} before, {load_after} after; "
          f"Python {platform.python_version()}; {java_version()}\n")
    head = {"tumbling": "tumbling 60s", "sliding": "sliding 10s/5s", "session": f"session gap {int(gap_ms) / 1000:g}s"}
    print("| engine | " + " | ".join(head[k] for k in kinds) + " |")
    print("|---|" + "---:|" * len(kinds))
    for e in engines:
        cells = [f"{rate(net(e, k))} ({rate(raw(e, k))}; start-up {best[(e, k, 'tiny')]:.2f} s)" for k in kinds]
        print(f"| {NAMES[e]} | " + " | ".join(cells) + " |")
    peers = [e for e in engines if e != "sluice"]
    if "sluice" in engines and peers:
        cells, verdicts = [], []
        for k in kinds:
            faster_raw = max(peers, key=lambda e: raw(e, k))
            r_raw = raw("sluice", k) / raw(faster_raw, k)
            if net("sluice", k) is None or any(net(e, k) is None for e in peers):
                # Without every start-up, compare the whole runs.
                cells.append(f"**{r_raw:.1f}x** {NAMES[faster_raw]} (whole runs; start-up not measurable)")
                r_net = r_raw
            else:
                faster_net = max(peers, key=lambda e: net(e, k))
                r_net = net("sluice", k) / net(faster_net, k)
                cells.append(f"**{r_net:.1f}x** {NAMES[faster_net]} ({r_raw:.1f}x whole runs)")
            met = "met" if r_net >= TARGETS[k] else "NOT met"
            verdicts.append(f"{k}: {r_net:.1f}x against >= {TARGETS[k]}x, {met}")
        print("| sluice / faster peer | " + " | ".join(cells) + " |")
        print("\nevents/s without start-up (whole run; start-up = best run over 1,000 events)")
        print("targets: " + "; ".join(verdicts))


if __name__ == "__main__":
    main()

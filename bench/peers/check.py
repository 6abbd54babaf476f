"""Checks every engine's windows against an exact computation.

Usage: check.py EVENTS.csv KIND ENGINE=RESULTS.jsonl [ENGINE=RESULTS.jsonl ...]
       (KIND: tumbling:SIZE_MS | sliding:SIZE_MS:SLIDE_MS | session:GAP_MS)

The exact windows are computed here from the CSV rows, with no streaming:
every event goes to its windows by its time (none is late: the engines'
out-of-order allowance exceeds the generator's largest delay), a session
ends where a key's sorted event times leave a gap of at least GAP_MS and
runs from its first event to its last plus GAP_MS. Latencies have one
decimal, so they are summed exactly as integers of tenths.

What must agree, per key and window (the set of windows too):
- count exactly; sum and mean within a relative 1e-9 (the engines add
  doubles in arrival order); min and max exactly (the same decimal text
  parses to the same double); population stddev within a relative 1e-6;
- quantiles 0.5, 0.95, 0.99: for sluice, whose `percentiles` is a
  DDSketch, within 1% (its `relative_accuracy`) of the exact order
  statistic of rank floor(q (n - 1)); for the peers, which compute them
  exactly, between the order statistics of ranks floor(q (n - 1)) and
  ceil(q (n - 1)), so any interpolation between the two passes.

A result file in sluice's own format (a `results` object) is read as
sluice's; the others are one JSON object per window with the fields
key, start, end, count, sum, mean, min, max, stddev, p50, p95, p99.
The first disagreement ends the check with exit code 1, naming engine,
window kind, key and window.
"""

import json
import sys

import numpy as np
import pandas as pd

QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
SKETCH_RELATIVE_ACCURACY = 0.01


def exact_windows(csv_path: str, kind: str) -> dict:
    df = pd.read_csv(
        csv_path,
        header=None,
        names=["ts", "service", "latency"],
        dtype={"ts": np.int64, "service": str, "latency": np.float64},
    )
    codes, names = pd.factorize(df["service"])
    ts = df["ts"].to_numpy()
    tenths = np.rint(df["latency"].to_numpy() * 10).astype(np.int64)
    parts = kind.split(":")
    if parts[0] == "tumbling":
        size = int(parts[1])
        key, start = codes, ts - ts % size
        end = start + size
    elif parts[0] == "sliding":
        size, slide = int(parts[1]), int(parts[2])
        last = ts - ts % slide
        copies = size // slide
        key = np.tile(codes, copies)
        start = np.concatenate([last - j * slide for j in range(copies)])
        end = start + size
        ts_rep = np.tile(ts, copies)
        tenths = np.tile(tenths, copies)
        keep = (start <= ts_rep) & (ts_rep < end)
        key, start, end, tenths = key[keep], start[keep], end[keep], tenths[keep]
    elif parts[0] == "session":
        gap = int(parts[1])
        order = np.lexsort((ts, codes))
        k, t = codes[order], ts[order]
        new = np.ones(len(t), dtype=bool)
        new[1:] = (k[1:] != k[:-1]) | (t[1:] - t[:-1] >= gap)
        sid = np.cumsum(new) - 1
        first = t[new]
        last_idx = np.append(np.nonzero(new)[0][1:], len(t)) - 1
        key, start, end = k, first[sid], t[last_idx][sid] + gap
        tenths = tenths[order]
    else:
        raise SystemExit(f"unknown window kind {kind}")

    # Group by (key, start, end), values sorted within each group.
    order = np.lexsort((tenths, end, start, key))
    key, start, end, v = key[order], start[order], end[order], tenths[order]
    head = np.ones(len(v), dtype=bool)
    head[1:] = (key[1:] != key[:-1]) | (start[1:] != start[:-1]) | (end[1:] != end[:-1])
    offs = np.nonzero(head)[0]
    n = np.diff(np.append(offs, len(v)))
    sums = np.add.reduceat(v, offs)
    gidx = np.cumsum(head) - 1
    x = v / 10.0
    mean = sums / 10.0 / n
    var = np.add.reduceat((x - mean[gidx]) ** 2, offs) / n
    windows = {}
    for g, o in enumerate(offs):
        w = {
            "count": int(n[g]),
            "sum": int(sums[g]) / 10,
            "mean": int(sums[g]) / 10 / int(n[g]),
            "min": float(v[o]) / 10,
            "max": float(v[o + n[g] - 1]) / 10,
            "stddev": float(np.sqrt(var[g])),
        }
        for name, q in QUANTILES.items():
            pos = q * (n[g] - 1)
            w[name] = (float(v[o + int(np.floor(pos))]) / 10, float(v[o + int(np.ceil(pos))]) / 10)
        windows[(str(names[key[o]]), int(start[o]), int(end[o]))] = w
    return windows


def read_results(path: str) -> dict:
    out = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if "results" in r:
                res = r["results"]
                w = {
                    "count": res["latency.count"],
                    "sum": res["latency.sum"],
                    "mean": res["latency.mean"],
                    "min": res["latency.min"],
                    "max": res["latency.max"],
                    "stddev": res["latency.stddev_pop"],
                }
                w.update({name: res[f"pct.{name}"] for name in QUANTILES})
                ident = (r["key"]["service"], r["window"]["start"], r["window"]["end"])
            else:
                w = {name: r[name] for name in ["count", "sum", "mean", "min", "max", "stddev", *QUANTILES]}
                ident = (r["key"], r["start"], r["end"])
            if ident in out:
                raise ValueError(f"{path}: window {ident} appears twice")
            out[ident] = w
    return out


def close(a, b, rel) -> bool:
    return a is not None and abs(a - b) <= rel * max(abs(b), 1.0)


def disagreement(engine: str, want: dict, got: dict):
    """The first difference between `got` and `want` as a sentence, or None."""
    for ident in sorted(set(want) | set(got)):
        where = f"key {ident[0]}, window [{ident[1]}, {ident[2]})"
        if ident not in got:
            return f"{where}: missing (exact count {want[ident]['count']})"
        if ident not in want:
            return f"{where}: no such window in the exact computation (count {got[ident]['count']})"
        w, g = want[ident], got[ident]
        checks = [
            ("count", g["count"] == w["count"]),
            ("sum", close(g["sum"], w["sum"], 1e-9)),
            ("mean", close(g["mean"], w["mean"], 1e-9)),
            ("min", g["min"] == w["min"]),
            ("max", g["max"] == w["max"]),
            ("stddev", close(g["stddev"], w["stddev"], 1e-6)),
        ]
        for name, ok in checks:
            if not ok:
                return f"{where}: {name} is {g[name]!r}, exact {w[name]!r}"
        for name in QUANTILES:
            lo, hi = w[name]
            est = g[name]
            if engine == "sluice":
                ok = est is not None and abs(est - lo) <= SKETCH_RELATIVE_ACCURACY * abs(lo) + 1e-9
            else:
                ok = est is not None and lo - 1e-9 <= est <= hi + 1e-9
            if not ok:
                bound = "within 1% of the first" if engine == "sluice" else "between them"
                return (
                    f"{where}: {name} is {est!r}, not {bound}: exact order statistics "
                    f"of ranks floor and ceil of q (n - 1): {lo!r}, {hi!r}"
                )
    return None


def main() -> None:
    csv_path, kind, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
    want = exact_windows(csv_path, kind)
    failed = False
    for pair in pairs:
        engine, path = pair.split("=", 1)
        engine_name = engine.split("-")[0]
        problem = disagreement(engine_name, want, read_results(path))
        if problem:
            print(f"MISMATCH {engine} {kind.split(':')[0]}: {problem}", file=sys.stderr)
            failed = True
        else:
            print(f"ok {engine} {kind.split(':')[0]}: {len(want)} windows agree", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

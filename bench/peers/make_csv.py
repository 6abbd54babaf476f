"""Writes the events of a sluice-gen JSON-lines file as CSV for the peers.

Usage: make_csv.py EVENTS.jsonl EVENTS.csv

One row per event, no header, in the file's order: `ts,service,latency_ms`,
the three fields the benchmark's jobs read. The peers get only these
columns while sluice decodes whole event lines, which favours the peers.
`latency_ms` is copied as written (one decimal), so every engine parses
the same decimal text into the same double.
"""

import sys

import orjson


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    rows = 0
    with open(src, "rb") as inp, open(dst, "w", buffering=1 << 20) as out:
        batch = []
        for line in inp:
            e = orjson.loads(line)
            batch.append(f"{e['ts']},{e['service']},{e['latency_ms']!r}\n")
            if len(batch) == 65536:
                out.write("".join(batch))
                rows += len(batch)
                batch.clear()
        out.write("".join(batch))
        rows += len(batch)
    print(f"{rows} rows -> {dst}", file=sys.stderr)


if __name__ == "__main__":
    main()

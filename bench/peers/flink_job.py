"""The benchmark's window job on PyFlink (Table API, SQL).

Usage: flink_job.py EVENTS.csv OUT.jsonl KIND [--parallelism N] [--out-of-order-ms MS]
       (KIND: tumbling:SIZE_MS | sliding:SIZE_MS:SLIDE_MS | session:GAP_MS)

A streaming job on a local mini-cluster: a filesystem CSV source
(`ts,service,latency_ms`) with an event-time attribute and a bounded
out-of-order watermark, a window table-valued function (TUMBLE, HOP or
SESSION partitioned by service) and one aggregation per window: COUNT,
SUM, AVG, MIN, MAX, STDDEV_POP and PERCENTILE (exact, linear interpolation)
at 0.5, 0.95 and 0.99. The whole job runs in the JVM; Python only submits
it and reads the results back. At the end of the file the source emits the
final watermark, so every window fires.
"""

import argparse
import calendar
import json

from pyflink.table import EnvironmentSettings, TableEnvironment


def interval(ms: int) -> str:
    # Flink SQL has no MILLISECOND interval unit; seconds take a fraction.
    return f"INTERVAL '{ms // 1000}.{ms % 1000:03d}' SECOND(3)"


def window_tvf(kind: str) -> str:
    parts = kind.split(":")
    if parts[0] == "tumbling":
        return f"TUMBLE(TABLE events, DESCRIPTOR(rowtime), {interval(int(parts[1]))})"
    if parts[0] == "sliding":
        size, slide = int(parts[1]), int(parts[2])
        return f"HOP(TABLE events, DESCRIPTOR(rowtime), {interval(slide)}, {interval(size)})"
    if parts[0] == "session":
        return (
            "SESSION(TABLE events PARTITION BY service, DESCRIPTOR(rowtime), "
            f"{interval(int(parts[1]))})"
        )
    raise SystemExit(f"unknown window kind {kind}")


def epoch_ms(t) -> int:
    # Window bounds are TIMESTAMP(3) in the session time zone, UTC here.
    return calendar.timegm(t.timetuple()) * 1000 + t.microsecond // 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("out")
    ap.add_argument("kind")
    ap.add_argument("--parallelism", type=int, default=1)
    ap.add_argument("--out-of-order-ms", type=int, default=5000)
    ap.add_argument("--no-percentiles", action="store_true", help="leave PERCENTILE out (null in the output)")
    args = ap.parse_args()

    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = env.get_config()
    conf.set("parallelism.default", str(args.parallelism))
    conf.set("table.local-time-zone", "UTC")
    # Records are not copied between chained operators: the usual setting
    # for a job whose functions do not keep references to their inputs.
    conf.set("pipeline.object-reuse", "true")
    env.execute_sql(
        f"""
        CREATE TABLE events (
            ts BIGINT,
            service STRING,
            latency_ms DOUBLE,
            rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
            WATERMARK FOR rowtime AS rowtime - {interval(args.out_of_order_ms)}
        ) WITH (
            'connector' = 'filesystem',
            'path' = 'file://{args.csv}',
            'format' = 'csv'
        )
        """
    )
    percentiles = (
        "CAST(NULL AS DOUBLE), CAST(NULL AS DOUBLE), CAST(NULL AS DOUBLE)"
        if args.no_percentiles
        else "PERCENTILE(latency_ms, 0.5), PERCENTILE(latency_ms, 0.95), PERCENTILE(latency_ms, 0.99)"
    )
    result = env.execute_sql(
        f"""
        SELECT service, window_start, window_end,
               COUNT(*), SUM(latency_ms), AVG(latency_ms), MIN(latency_ms), MAX(latency_ms),
               STDDEV_POP(latency_ms), {percentiles}
        FROM {window_tvf(args.kind)}
        GROUP BY service, window_start, window_end
        """
    )
    names = ["count", "sum", "mean", "min", "max", "stddev", "p50", "p95", "p99"]
    with open(args.out, "w") as f, result.collect() as rows:
        for row in rows:
            record = {"key": row[0], "start": epoch_ms(row[1]), "end": epoch_ms(row[2])}
            record.update(zip(names, row[3:]))
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Extracts the numbers load.sh reports from one sysbench 1.0 run's output.

Prints one tab-separated line: qps, p95_ms, p99_ms, ignored_errors,
reconnects, queries.  `queries` is the total number of statements sysbench
completed (the count on its `queries:` line, e.g. 171126 from
`queries: 171126 (21382.50 per sec.)`); load.sh divides CPU time by it.
New columns go at the end, so existing ones keep their meaning.  Exits 1
(with the reason on stderr) when the output is not that of a completed run.

Both percentiles come from the latency histogram (`--histogram=on`), computed
the way sysbench computes its own `--percentile`: the value of the first
bucket at which the cumulative count reaches ceil(pct * events).  The p99 is
cross-checked against sysbench's "99th percentile" line when present.
"""

import math
import re
import sys


def percentile(buckets, pct):
    total = sum(count for _, count in buckets)
    if total == 0:
        return float("nan")
    need = math.ceil(total * pct / 100.0)
    cum = 0
    for value, count in buckets:
        cum += count
        if cum >= need:
            return value
    return buckets[-1][0]


def main():
    text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
    if "FATAL" in text:
        sys.exit("sysbench reported FATAL errors")
    # Group 1: statements completed; group 2: their rate.
    queries = re.search(r"^\s*queries:\s+(\d+)\s+\(([\d.]+) per sec\.\)", text, re.M)
    if not queries:
        sys.exit("no 'queries:' line (run did not complete)")
    ignored = re.search(r"^\s*ignored errors:\s+(\d+)", text, re.M)
    reconnects = re.search(r"^\s*reconnects:\s+(\d+)", text, re.M)
    buckets = []
    in_hist = False
    for line in text.splitlines():
        if line.startswith("Latency histogram"):
            in_hist = True
            continue
        if in_hist:
            m = re.match(r"^\s*([\d.]+)\s+\|\S*\s+(\d+)\s*$", line)
            if m:
                buckets.append((float(m.group(1)), int(m.group(2))))
            elif buckets:
                break
    if not buckets:
        sys.exit("no latency histogram in the output (need --histogram=on)")
    p95 = percentile(buckets, 95)
    p99 = percentile(buckets, 99)
    reported = re.search(r"^\s*99th percentile:\s+([\d.]+)", text, re.M)
    if reported and abs(float(reported.group(1)) - p99) > max(0.01, 0.02 * p99):
        print(
            f"warning: histogram p99 {p99} differs from sysbench's {reported.group(1)}",
            file=sys.stderr,
        )
    print(
        "\t".join(
            [
                queries.group(2),
                f"{p95:.3f}",
                f"{p99:.3f}",
                ignored.group(1) if ignored else "0",
                reconnects.group(1) if reconnects else "0",
                queries.group(1),
            ]
        )
    )


if __name__ == "__main__":
    main()

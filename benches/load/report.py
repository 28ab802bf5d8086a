#!/usr/bin/env python3
"""Turns load.sh's raw results into the markdown report.

Usage: report.py RESULTS_TSV ROUTING_TSV CONNRATE_TSV [CONNCONC_TSV]

RESULTS_TSV  workload, threads, target, round, status (ok|fail), qps, p95_ms,
             p99_ms, ignored_errors, reconnects, queries, proxy_us, busy_us,
             idle_us — one line per sysbench run.  queries: statements sysbench
             completed; proxy_us: CPU time (utime+stime) of the HAProxy or
             rwproxy process during the run per statement, in µs ("-" for
             direct runs or when unknown); busy_us / idle_us: the whole
             machine's busy (user+nice+system+irq+softirq) and idle
             (idle+iowait) CPU time during the run per statement, in µs, all
             cores together ("-" when unknown).  Rows with only the first ten
             columns (older harness) are read with the rest unknown.
ROUTING_TSV  workload, threads, round, server, statements — the growth of
             each server's `Questions` status counter during one rwproxy run.
CONNRATE_TSV target, status, conn_per_s, p50_ms, p99_ms — one line per round.
CONNCONC_TSV target, query (0: connect + close, 1: + SELECT 1), status,
             connections_per_s, proxy_cpu_us_per_connection ("-" if unknown)
             — one line per round of the concurrent connection test.

Medians are over the rounds that completed; a row with failed rounds says so.

The main table's columns "proxy CPU µs/stmt (median)", "machine busy µs/stmt"
and "idle µs/stmt" are the medians of proxy_us, busy_us and idle_us; CPU per
statement varies far less with the noise of a shared machine than QPS does.

The ratios section gives, per workload and thread count, the ratios of the
medians (unchanged wording, one line each) and in a sub-bullet the paired
per-round ratios: rounds run direct, haproxy and rwproxy back to back, so
rwproxy/haproxy and rwproxy/direct QPS within one round (only rounds where
both runs succeeded) suffer less from slow drift of the machine; their
median and min–max are shown, with the ratio of the median proxy CPU per
statement rwproxy/haproxy.

Target "base" (load.sh's RWPROXY_BASE_BIN, labelled "rwproxy (base binary)")
is a second rwproxy built from other code, run right after rwproxy in every
round. When it has rows, each workload/threads line adds rwproxy/base QPS
(ratio of medians) and rwproxy p99 − base p99, the sub-bullet adds the paired
per-round rwproxy/base QPS, and a further sub-bullet gives proxy CPU per
statement rwproxy/base: the ratio of the medians and the paired per-round
ratios (median, min–max). Without base rows the report is as before.
"""

import statistics
import sys
from collections import defaultdict

WORKLOADS = ["oltp_point_select", "oltp_read_only", "oltp_read_write"]
TARGETS = ["direct", "haproxy", "rwproxy", "base"]


def label(workload, target):
    if target == "direct":
        return "direct (primary)"
    if target == "haproxy":
        return "haproxy (primary)" if workload == "oltp_read_write" else "haproxy (replicas)"
    if target == "base":
        return "rwproxy (base binary)"
    return "rwproxy"


def read_tsv(path):
    try:
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\n").split("\t") for line in f if line.strip()]
    except FileNotFoundError:
        return []


def order(key, known):
    return known.index(key) if key in known else len(known)


def num(text):
    """A float, or None for an unknown value ("-", "–", empty, garbage)."""
    try:
        return float(text)
    except ValueError:
        return None


def median_known(values):
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def fmt_us(value):
    return "–" if value is None else f"{value:,.1f}"


def paired(rounds_a, rounds_b):
    """Per-round QPS ratios a/b over the rounds where both runs succeeded."""
    return [rounds_a[r] / rounds_b[r] for r in sorted(rounds_a) if r in rounds_b and rounds_b[r]]


def paired_values(a, b):
    """Per-round ratios a/b of two {round: value} maps, rounds where both are known and b is not 0."""
    return [a[r] / b[r] for r in sorted(a) if a[r] is not None and b.get(r)]


def fmt_paired(name, ratios):
    if not ratios:
        return f"{name} = n/a (no round with both runs ok)"
    n = len(ratios)
    if n == 1:
        return f"{name} = {ratios[0]:.2f} (1 round)"
    return (
        f"{name} = {statistics.median(ratios):.2f} "
        f"({min(ratios):.2f}–{max(ratios):.2f}, {n} rounds)"
    )


def main():
    runs = defaultdict(list)  # (workload, threads, target) -> rows
    for row in read_tsv(sys.argv[1]):
        row += ["-"] * (14 - len(row))
        w, t, target, rnd, status, qps, p95, p99, ign, rec, queries, proxy_us, busy_us, idle_us = row[:14]
        runs[(w, int(t), target)].append(
            dict(
                rnd=rnd,
                status=status,
                qps=float(qps),
                p95=float(p95),
                p99=float(p99),
                ign=int(ign),
                rec=int(rec),
                queries=num(queries),
                proxy_us=num(proxy_us) if target != "direct" else None,
                busy_us=num(busy_us),
                idle_us=num(idle_us),
            )
        )
    med = {}
    proxy_cpu = {}  # (workload, threads, target) -> median proxy CPU µs/stmt
    by_round = {}  # (workload, threads, target) -> {round: qps} of the runs that succeeded
    cpu_by_round = {}  # (workload, threads, target) -> {round: proxy µs/stmt} of the runs that succeeded
    out = []
    out.append(
        "| workload | threads | target | QPS (median) | p95 ms (median) | p99 ms (median) | QPS spread (max−min)/median "
        "| proxy CPU µs/stmt (median) | machine busy µs/stmt | idle µs/stmt |"
    )
    out.append("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    notes = []
    keys = sorted(runs, key=lambda k: (order(k[0], WORKLOADS), k[1], order(k[2], TARGETS)))
    for key in keys:
        w, t, target = key
        ok = [r for r in runs[key] if r["status"] == "ok"]
        failed = len(runs[key]) - len(ok)
        by_round[key] = {r["rnd"]: r["qps"] for r in ok}
        cpu_by_round[key] = {r["rnd"]: r["proxy_us"] for r in ok}
        if ok:
            qps = statistics.median(r["qps"] for r in ok)
            p95 = statistics.median(r["p95"] for r in ok)
            p99 = statistics.median(r["p99"] for r in ok)
            med[key] = (qps, p95, p99)
            spread = (max(r["qps"] for r in ok) - min(r["qps"] for r in ok)) / qps * 100 if qps else 0
            cells = [f"{qps:,.0f}", f"{p95:.2f}", f"{p99:.2f}", f"{spread:.1f}%" if len(ok) > 1 else "–"]
            proxy = median_known(r["proxy_us"] for r in ok)
            if proxy is not None:
                proxy_cpu[key] = proxy
            cells += [
                fmt_us(proxy),
                fmt_us(median_known(r["busy_us"] for r in ok)),
                fmt_us(median_known(r["idle_us"] for r in ok)),
            ]
        else:
            cells = ["FAILED", "–", "–", "–", "–", "–", "–"]
        if failed:
            cells[0] += f" ({failed}/{len(runs[key])} runs failed)"
        out.append(f"| {w} | {t} | {label(w, target)} | " + " | ".join(cells) + " |")
        ign = sum(r["ign"] for r in ok)
        rec = sum(r["rec"] for r in ok)
        if ign or rec:
            notes.append(f"- {w} @ {t} threads via {label(w, target)}: {ign} ignored errors (deadlock/lock wait), {rec} reconnects over {len(ok)} runs")
    out.append("")
    out.append(
        "CPU per statement (µs, medians over rounds; less sensitive to the machine's noise than QPS): "
        "proxy CPU = user+system time of the HAProxy or rwproxy process during the run ÷ statements "
        "sysbench completed; machine busy / idle = the whole machine's busy (user+nice+system+irq+softirq) "
        "and idle (idle+iowait) time, all cores together, during the run ÷ statements, so busy + idle ≈ "
        "cores × 10⁶ ÷ QPS. Busy includes the MariaDB servers and sysbench itself."
    )
    out.append("")
    out.append("Ratios (medians):")
    out.append("")
    for w, t in sorted({(k[0], k[1]) for k in keys}, key=lambda x: (order(x[0], WORKLOADS), x[1])):
        rw, hp, dr = med.get((w, t, "rwproxy")), med.get((w, t, "haproxy")), med.get((w, t, "direct"))
        parts = []
        if rw and hp and hp[0]:
            parts.append(f"rwproxy/haproxy QPS = {rw[0] / hp[0]:.2f}")
        if rw and dr and dr[0]:
            parts.append(f"rwproxy/direct QPS = {rw[0] / dr[0]:.2f}")
        if rw and dr:
            parts.append(f"rwproxy p99 − direct p99 = {(rw[2] - dr[2]) * 1000:+.0f} µs")
        bs = med.get((w, t, "base"))
        if rw and bs and bs[0]:
            parts.append(f"rwproxy/base QPS = {rw[0] / bs[0]:.2f}")
        if rw and bs:
            parts.append(f"rwproxy p99 − base p99 = {(rw[2] - bs[2]) * 1000:+.0f} µs")
        out.append(f"- {w} @ {t} threads: " + ("; ".join(parts) if parts else "n/a (runs failed)"))
        rw_r, hp_r, dr_r, bs_r = (by_round.get((w, t, x), {}) for x in ("rwproxy", "haproxy", "direct", "base"))
        if rw_r and (hp_r or dr_r or bs_r):
            sub = []
            if hp_r:
                sub.append(fmt_paired("rwproxy/haproxy QPS", paired(rw_r, hp_r)))
            if dr_r:
                sub.append(fmt_paired("rwproxy/direct QPS", paired(rw_r, dr_r)))
            if bs_r:
                sub.append(fmt_paired("rwproxy/base QPS", paired(rw_r, bs_r)))
            out.append("  - per-round ratios, median (min–max, rounds): " + "; ".join(sub))
        rw_cpu, hp_cpu = proxy_cpu.get((w, t, "rwproxy")), proxy_cpu.get((w, t, "haproxy"))
        if rw_cpu is not None and hp_cpu:
            out.append(
                f"  - proxy CPU per statement rwproxy/haproxy = {rw_cpu / hp_cpu:.2f} "
                f"(medians {rw_cpu:.1f} vs {hp_cpu:.1f} µs)"
            )
        bs_cpu = proxy_cpu.get((w, t, "base"))
        if rw_cpu is not None and bs_cpu:
            per_round = paired_values(cpu_by_round.get((w, t, "rwproxy"), {}), cpu_by_round.get((w, t, "base"), {}))
            out.append(
                f"  - proxy CPU per statement rwproxy/base = {rw_cpu / bs_cpu:.2f} "
                f"(medians {rw_cpu:.1f} vs {bs_cpu:.1f} µs); "
                + fmt_paired("per round", per_round)
            )
    if notes:
        out.append("")
        out.append("Errors tolerated by sysbench:")
        out.append("")
        out.extend(notes)

    routing = defaultdict(lambda: defaultdict(int))
    for w, t, _rnd, server, n in read_tsv(sys.argv[2]):
        routing[(w, int(t))][server] += int(n)
    if routing:
        out.append("")
        out.append(
            "rwproxy routing (statements each server executed during the rwproxy runs, from the servers' "
            "`Questions` counters; includes rwproxy's own monitor and session set-up statements"
            + (", and the base binary's monitor" if any(k[2] == "base" for k in runs) else "")
            + "):"
        )
        out.append("")
        for (w, t) in sorted(routing, key=lambda x: (order(x[0], WORKLOADS), x[1])):
            total = sum(routing[(w, t)].values())
            shares = (
                ", ".join(f"{s} {n / total * 100:.0f}%" for s, n in sorted(routing[(w, t)].items()))
                if total
                else "no statements counted"
            )
            out.append(f"- {w} @ {t} threads: {shares}")

    conns = {}
    crows = defaultdict(list)
    for target, status, cps, p50, p99 in read_tsv(sys.argv[3]):
        crows[target].append((status, float(cps), float(p50), float(p99)))
    if crows:
        out.append("")
        out.append(
            "Connection rate (sequential connect (with schema) + `SELECT 1` + close, PyMySQL with autocommit "
            "left at the server default, as PHP's mysqli/PDO do; medians of rounds):"
        )
        out.append("")
        out.append("| target | connections/s | p50 ms | p99 ms |")
        out.append("| --- | ---: | ---: | ---: |")
        for target in sorted(crows, key=lambda t: order(t, TARGETS)):
            ok = [r for r in crows[target] if r[0] == "ok"]
            failed = len(crows[target]) - len(ok)
            if ok:
                conns[target] = statistics.median(r[1] for r in ok)
                cells = [
                    f"{conns[target]:,.0f}",
                    f"{statistics.median(r[2] for r in ok):.3f}",
                    f"{statistics.median(r[3] for r in ok):.3f}",
                ]
            else:
                cells = ["FAILED", "–", "–"]
            if failed:
                cells[0] += f" ({failed}/{len(crows[target])} rounds failed)"
            out.append(f"| {label('', target)} | " + " | ".join(cells) + " |")
        if conns.get("rwproxy") and conns.get("direct"):
            out.append("")
            out.append(f"- rwproxy/direct connection rate = {conns['rwproxy'] / conns['direct']:.2f}")
        if conns.get("rwproxy") and conns.get("base"):
            if not (conns.get("rwproxy") and conns.get("direct")):
                out.append("")
            out.append(f"- rwproxy/base connection rate = {conns['rwproxy'] / conns['base']:.2f}")
    cc = defaultdict(list)  # (query, target) -> [(status, rate, proxy_us)]
    for target, q, status, rate, pus in read_tsv(sys.argv[4]) if len(sys.argv) > 4 else []:
        cc[(q, target)].append((status, float(rate), pus))
    if cc:
        out.append("")
        out.append(
            "Concurrent connections (sysbench `benches/load/connect.lua`, C client, "
            "connect with schema [+ `SELECT 1`] + close in a loop; medians of rounds; "
            "proxy CPU = the proxy process's CPU time per connection):"
        )
        out.append("")
        out.append("| churn | target | connections/s | proxy CPU µs/conn |")
        out.append("| --- | --- | ---: | ---: |")
        rates = {}
        for q, what in (("0", "connect + close"), ("1", "connect + SELECT 1 + close")):
            for target in TARGETS:
                rows = cc.get((q, target))
                if not rows:
                    continue
                ok = [r for r in rows if r[0] == "ok"]
                if ok:
                    rates[(q, target)] = statistics.median(r[1] for r in ok)
                    cpu = [float(r[2]) for r in ok if r[2] not in ("-", "")]
                    cells = [f"{rates[(q, target)]:,.0f}", f"{statistics.median(cpu):.1f}" if cpu else "–"]
                else:
                    cells = ["FAILED", "–"]
                if len(ok) < len(rows):
                    cells[0] += f" ({len(rows) - len(ok)}/{len(rows)} rounds failed)"
                out.append(f"| {what} | {label('', target)} | " + " | ".join(cells) + " |")
        out.append("")
        for q, what in (("0", "connect + close"), ("1", "connect + SELECT 1 + close")):
            rw, dr, hp = rates.get((q, "rwproxy")), rates.get((q, "direct")), rates.get((q, "haproxy"))
            parts = []
            if rw and dr:
                parts.append(f"rwproxy/direct = {rw / dr:.2f}")
            if rw and hp:
                parts.append(f"rwproxy/haproxy = {rw / hp:.2f}")
            bs = rates.get((q, "base"))
            if rw and bs:
                parts.append(f"rwproxy/base = {rw / bs:.2f}")
            if parts:
                out.append(f"- {what}: " + "; ".join(parts))
    print("\n".join(out))


if __name__ == "__main__":
    main()

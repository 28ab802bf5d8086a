#!/usr/bin/env python3
"""Checks that the Grafana dashboard and the Prometheus rules use only
metrics rwproxy exports, and that every dashboard query is valid PromQL.

Exported names come from src/metrics.rs (the `# TYPE <name> <type>` lines it
writes; a histogram also exports <name>_bucket, _sum and _count) or, with
--metrics-url, from a live /metrics scrape. A metric renamed in src/ without
the dashboard or the rules following makes this fail.

The dashboard's queries are written into a throwaway rule file (Grafana's
$__rate_interval, $__range and $instance replaced by literals) for
`promtool check rules` to parse, since Grafana itself is not run in CI.

Usage: check-metric-names.py [--metrics-url URL]   (from the repository root)
Standard library only: runs under any Python 3.8+.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request

DASHBOARD = "deploy/grafana/rwproxy-dashboard.json"
RULES = "deploy/prometheus/rwproxy-alerts.yml"
SOURCE = "src/metrics.rs"
# Names Prometheus itself provides, allowed in rules.
BUILTIN = {"up"}
NAME = re.compile(r"\b(rwproxy_[a-z0-9_]+)")


def exported_from_source():
    text = open(SOURCE, encoding="utf-8").read()
    names = set()
    for name, kind in re.findall(r"# TYPE (rwproxy_[a-z0-9_]+) (\w+)", text):
        if kind == "histogram":
            # Only the series exist; the bare name matches nothing.
            names.update(name + s for s in ("_bucket", "_sum", "_count"))
        else:
            names.add(name)
    if not names:
        sys.exit(f"error: found no '# TYPE rwproxy_...' line in {SOURCE}")
    return names


def exported_from_scrape(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    # Sample lines, and TYPE lines for metrics with no sample yet (rule hits
    # without configured rules).
    return {m.group(1) for m in re.finditer(r"^(?:# TYPE )?(rwproxy_[a-z0-9_]+)[{ ]", text, re.M)}


def dashboard_exprs():
    d = json.load(open(DASHBOARD, encoding="utf-8"))
    exprs = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                exprs.append((f"panel '{p.get('title')}' {t.get('refId')}", t["expr"]))
            walk(p.get("panels", []))

    walk(d.get("panels", []))
    for v in d.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query", "")
        if v.get("type") == "query" and q:
            exprs.append((f"variable '{v['name']}'", q))
    ids = [p["id"] for p in d["panels"]]
    if len(ids) != len(set(ids)):
        sys.exit(f"error: {DASHBOARD}: duplicate panel ids")
    return exprs


def rule_exprs():
    exprs = []
    # The rule file is YAML; a full parser is not needed to find metric
    # names: every `rwproxy_*` token outside comments counts.
    for n, line in enumerate(open(RULES, encoding="utf-8"), 1):
        code = line.split("#", 1)[0]
        if NAME.search(code):
            exprs.append((f"line {n}", code))
    return exprs


def promql_parses(exprs):
    """promtool parses every dashboard query (as a recording rule)."""
    subst = {"$__rate_interval": "1m", "$__range": "1h", "$instance": ".*"}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dashboard-queries.yml")
        rules = []
        for i, (where, e) in enumerate(exprs):
            if e.startswith("label_values("):
                continue  # Grafana's own function, not PromQL
            for k, v in subst.items():
                e = e.replace(k, v)
            rules.append({"record": f"dashboard:query_{i}", "expr": e})
        # JSON is YAML: no YAML library needed.
        json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(path, "w"))
        r = subprocess.run(["promtool", "check", "rules", path], capture_output=True, text=True)
        if r.returncode != 0:
            sys.stderr.write(r.stdout + r.stderr)
            sys.exit(f"error: a query of {DASHBOARD} is not valid PromQL (see above)")
        return len(rules)


def main():
    url = None
    if len(sys.argv) == 3 and sys.argv[1] == "--metrics-url":
        url = sys.argv[2]
    elif len(sys.argv) != 1:
        sys.exit(__doc__)
    exported = exported_from_scrape(url) if url else exported_from_source()
    source = url or SOURCE
    bad = []
    used = set()
    for file, exprs in ((DASHBOARD, dashboard_exprs()), (RULES, rule_exprs())):
        for where, e in exprs:
            for name in NAME.findall(e):
                used.add(name)
                if name not in exported:
                    bad.append(f"{file}: {where}: {name} is not exported by rwproxy ({source})")
    if url is None:
        # With a scrape, histograms show only their _bucket/_sum/_count series.
        unused = sorted(n for n in exported - used if not n.endswith(("_sum", "_count")))
        if unused:
            print(f"note: exported but used by neither dashboard nor rules: {', '.join(unused)}")
    if bad:
        sys.exit("\n".join(bad))
    n = promql_parses(dashboard_exprs())
    print(f"ok: {len(used)} metric names used by the dashboard and the rules, all exported ({source}); {n} dashboard queries parse")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reads the logs scripts/conformance.sh leaves in target/conformance/ and
prints, per suite, pass/fail/skip directly and through rwproxy.

Modes:
  select  the curated mtr list from a direct run of every static candidate
          (writes target/conformance/mtr-main.txt and mtr-excluded-direct.txt)
  full    writes conformance/results/latest.md
  excluded  prints, for --suites (go or python), the tests that do not pass
          in the last direct run with the reason (how go-excluded.txt and
          python-excluded.txt were made)
  quick   writes conformance/results/quick.md; exits 1 when a test that passes
          directly fails through rwproxy without being listed in
          conformance/known-differences.md, or when a suite's ratio falls
          below conformance/quick-baseline.txt (the CI gate)

Only the standard library: it runs with Debian's /usr/bin/python3.
"""

import argparse
import datetime
import pathlib
import re
import sys

PASS, FAIL, SKIP, MISSING = "pass", "fail", "skip", "not run"


def listed(path):
    """Names in a list file: one per line, `#` starts a comment."""
    names = []
    for line in pathlib.Path(path).read_text().splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.append(name)
    return names


def parse_mtr(path):
    """mtr prints `main.name   [ pass ]  123`; for a failure the next lines
    say why (mysqltest's message or the start of the result diff)."""
    results = {}
    line_re = re.compile(r"^(main\.\S+)\s+\[ (pass|fail|skipped|disabled) \]\s*(.*)$")
    lines = pathlib.Path(path).read_text(errors="replace").splitlines() if path.exists() else []
    for i, line in enumerate(lines):
        m = line_re.match(line)
        if not m:
            continue
        name, status, rest = m.groups()
        detail = rest.strip()
        if status == "fail":
            for follow in lines[i + 1 : i + 12]:
                follow = follow.strip()
                if follow.startswith("mysqltest:") or follow.startswith("---") or "timeout" in follow:
                    detail = follow
                    break
            if status == "fail" and "timeout" in rest:
                detail = rest.strip()
        results[name] = ({"pass": PASS, "fail": FAIL}.get(status, SKIP), detail)
    return results


def parse_go(path):
    """`go test -v`: top-level results are `--- PASS: TestX (0.01s)` at the
    start of a line (subtests are indented)."""
    results = {}
    if not path.exists():
        return results
    for line in path.read_text(errors="replace").splitlines():
        m = re.match(r"^--- (PASS|FAIL|SKIP): (\S+)", line)
        if m:
            results[m.group(2)] = ({"PASS": PASS, "FAIL": FAIL, "SKIP": SKIP}[m.group(1)], "")
    return results


def parse_python(path):
    """unittests.py --verbosity 2: `module.Class.test ... ok|FAIL|ERROR|skipped
    'why'`; a test's own output can come between the name and the verdict."""
    results = {}
    if not path.exists():
        return results
    verdict_re = re.compile(r"(ok|FAIL|ERROR|skipped.*|expected failure|unexpected success)$")
    current = None
    for line in path.read_text(errors="replace").splitlines():
        m = re.match(r"^(\S+\.\S+) \.\.\. ?(.*)$", line)
        if m:
            current = m.group(1)
            rest = m.group(2).strip()
            if not rest:
                continue
            line = rest
        if current is None:
            continue
        v = verdict_re.search(line.strip())
        if v and (line.strip() == v.group(0) or line.strip().endswith(" " + v.group(0)) or m):
            word = v.group(1)
            if word in ("ok", "expected failure"):
                status = PASS
            elif word.startswith("skipped"):
                status = SKIP
            else:
                status = FAIL
            results[current] = (status, word)
            current = None
    return results


PARSERS = {"mtr": parse_mtr, "go": parse_go, "python": parse_python}


def known_differences(conf):
    """The table rows of known-differences.md: `| suite | test | ... |`."""
    known = {}
    path = conf / "known-differences.md"
    for line in path.read_text().splitlines() if path.exists() else []:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0] in PARSERS:
            known[(cells[0], cells[1].strip("`"))] = cells[-1]
    return known


def universe(suite, conf, quick, direct, proxy):
    """The tests a suite counts: mtr's curated list; for go and python every
    test the runs reported, minus the excluded ones (each listed with its
    reason, decided by running it directly)."""
    if suite == "mtr":
        return listed(conf / ("mtr-quick.txt" if quick else "mtr-main.txt"))
    excluded = set(listed(conf / f"{suite}-excluded.txt"))
    names = sorted((set(direct) | set(proxy)) - excluded)
    return names


def select(args):
    work = pathlib.Path(args.work)
    results = parse_mtr(work / "mtr-direct.log")
    candidates = listed(work / "mtr-candidates.txt")
    curated, excluded = [], []
    for name in candidates:
        status, detail = results.get(name, (MISSING, ""))
        if status == PASS:
            curated.append(name)
        elif status == SKIP:
            excluded.append(f"{name}  # skipped directly: {detail}")
        elif status == FAIL:
            excluded.append(f"{name}  # fails directly: {detail[:160]}")
        else:
            excluded.append(f"{name}  # not run directly")
    (work / "mtr-main.txt").write_text("\n".join(curated) + "\n")
    (work / "mtr-excluded-direct.txt").write_text("\n".join(excluded) + "\n")
    print(f"candidates {len(candidates)}, pass directly {len(curated)}, excluded {len(excluded)}")


def count(names, results):
    c = {PASS: 0, FAIL: 0, SKIP: 0, MISSING: 0}
    for n in names:
        c[results.get(n, (MISSING, ""))[0]] += 1
    return c


def report(args):
    work, conf = pathlib.Path(args.work), pathlib.Path(args.conf)
    quick = args.mode == "quick"
    known = known_differences(conf)
    baseline = {}
    if quick and (conf / "quick-baseline.txt").exists():
        for line in listed(conf / "quick-baseline.txt"):
            suite, ratio = line.split()
            baseline[suite] = float(ratio)
    rows, diffs, unexpected, fixed, gate = [], [], [], [], []
    for suite in args.suites.split():
        direct = PARSERS[suite](work / f"{suite}-direct.log")
        proxy = PARSERS[suite](work / f"{suite}-rwproxy.log")
        names = universe(suite, conf, quick, direct, proxy)
        cd, cp = count(names, direct), count(names, proxy)
        ratio = cp[PASS] / cd[PASS] if cd[PASS] else 0.0
        rows.append((suite, len(names), cd, cp, ratio))
        for n in names:
            d = direct.get(n, (MISSING, ""))[0]
            p, detail = proxy.get(n, (MISSING, ""))
            if d == PASS and p != PASS:
                diffs.append((suite, n, p, detail))
                if (suite, n) not in known:
                    unexpected.append((suite, n, p, detail))
            elif d == PASS and p == PASS and (suite, n) in known:
                fixed.append((suite, n))
        if suite in baseline and ratio + 1e-9 < baseline[suite]:
            gate.append(f"{suite}: ratio {ratio:.3f} below the recorded baseline {baseline[suite]:.3f}")

    out = []
    title = "quick (CI subset)" if quick else "full"
    out.append(f"# Conformance results ({title})\n")
    out.append(
        f"{datetime.date.today().isoformat()}, commit {args.commit}, "
        f"`scripts/conformance.sh{' --quick' if quick else ''}`: {args.elapsed} "
        "on the 2-core development machine.\n"
    )
    out.append("| suite | tests counted | direct pass / fail / skip | through rwproxy pass / fail / skip | ratio |")
    out.append("| --- | --- | --- | --- | --- |")
    for suite, total, cd, cp, ratio in rows:
        out.append(
            f"| {suite} | {total} | {cd[PASS]} / {cd[FAIL]} / {cd[SKIP] + cd[MISSING]} | "
            f"{cp[PASS]} / {cp[FAIL]} / {cp[SKIP] + cp[MISSING]} | {ratio:.1%} |"
        )
    tp = sum(r[2][PASS] for r in rows)
    tr = sum(r[3][PASS] for r in rows)
    if tp:
        out.append(f"| all | {sum(r[1] for r in rows)} | {tp} | {tr} | {tr / tp:.1%} |")
    out.append("")
    out.append("Pass directly, not through rwproxy (reasons: conformance/known-differences.md):\n")
    for suite, n, p, detail in diffs:
        mark = "" if (suite, n) in known else " **(not listed)**"
        out.append(f"- {suite} `{n}`: {p} {detail[:140]}{mark}")
    if not diffs:
        out.append("- none")
    if fixed:
        out.append("\nListed as known differences but passing through rwproxy now (remove them from the list):\n")
        out.extend(f"- {s} `{n}`" for s, n in fixed)
    text = "\n".join(out) + "\n"
    (conf / "results" / ("quick.md" if quick else "latest.md")).write_text(text)
    print(text)
    if quick:
        for suite, n, p, detail in unexpected:
            gate.append(f"{suite} {n}: passes directly, {p} through rwproxy ({detail[:120]}), not in known-differences.md")
        if gate:
            print("conformance gate FAILED:", file=sys.stderr)
            for g in gate:
                print("  " + g, file=sys.stderr)
            return 1
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["select", "excluded", "full", "quick"])
    ap.add_argument("--work", required=True)
    ap.add_argument("--conf", required=True)
    ap.add_argument("--suites", default="mtr go python")
    ap.add_argument("--elapsed", default="?")
    ap.add_argument("--commit", default="?")
    args = ap.parse_args()
    if args.mode == "select":
        select(args)
        return 0
    if args.mode == "excluded":
        for suite in args.suites.split():
            for name, (status, detail) in sorted(PARSERS[suite](pathlib.Path(args.work) / f"{suite}-direct.log").items()):
                if status != PASS:
                    why = "skipped directly" if status == SKIP else "fails directly"
                    print(f"{name}  # {why}: {detail[:150]}".rstrip(": "))
        return 0
    return report(args)


if __name__ == "__main__":
    sys.exit(main())

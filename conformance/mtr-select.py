#!/usr/bin/env python3
"""Static first pass over MariaDB's mysql-test `main` suite: prints the tests
that can run against an already started (--extern) server of a replicated
sandbox, and writes the ones that cannot, each with its reason, to the
exclusion file. A test is read together with every file it sources
(recursively): `ctype_cp932_binlog_row` says nothing of the binary log
itself, the file it sources runs RESET MASTER, which broke the sandbox's
replication.

The curated list conformance/mtr-main.txt is what is left after a direct
run against the primary (scripts/conformance.sh --select): a test that fails
or is skipped directly is excluded there with the reason mtr gave.
Usage: mtr-select.py MTR_DIR EXCLUDED_FILE > candidates
"""

import pathlib
import re
import sys

SOURCE_RE = re.compile(r"^\s*(?:--\s*)?source\s+([^;\s]+)", re.I | re.M)
RULES = [
    (re.compile(r"reset\s+master|purge\s+(binary|master)\s+logs|reset\s+slave|change\s+master|"
                r"(start|stop)\s+slave|sql_log_bin|gtid_binlog_state|gtid_slave_pos", re.I),
     "touches the primary's binary log or replication settings: would break the sandbox's replication"),
    (re.compile(r"^\s*(--\s*)?(shutdown_server|shutdown)\b|restart_mysqld|kill_mysqld|"
                r"kill_and_restart|wait_until_disconnected|crash_mysqld|start_mysqld", re.I | re.M),
     "restarts or crashes the server (mtr cannot restart an --extern server)"),
    (re.compile(r"::1|ipv6", re.I), "connects over IPv6 (the sandbox listens on 127.0.0.1 only)"),
    (re.compile(r"(update|delete\s+from|insert\s+into|alter\s+table|drop\s+table|rename\s+table)\s+"
                r"mysql\.(user|global_priv)\b", re.I),
     "rewrites the grant tables directly (main.bad_user_table left a server no account could log into)"),
]
# Sourced files that every test may use and that are harmless; not read.
HARMLESS = re.compile(r"(^|/)(have_\w+|not_\w+|count_sessions|wait_until_count_sessions|"
                      r"default_\w+|big_test|word_size|no_valgrind_without_big|"
                      r"test_db_charset_\w+)\.inc$")


def resolve(name, mtr_dir, here):
    name = name.strip("\"'")
    for base in (here, mtr_dir, mtr_dir / "main", mtr_dir / "include"):
        p = (base / name)
        if p.is_file():
            return p
    return None


def text_with_sources(path, mtr_dir, seen):
    if path in seen:
        return ""
    seen.add(path)
    text = path.read_text(errors="replace")
    parts = [text]
    for m in SOURCE_RE.finditer(text):
        name = m.group(1)
        if "$" in name or HARMLESS.search(name):
            continue
        p = resolve(name, mtr_dir, path.parent)
        if p is not None:
            parts.append(text_with_sources(p, mtr_dir, seen))
    return "\n".join(parts)


def main():
    mtr_dir = pathlib.Path(sys.argv[1])
    excluded = open(sys.argv[2], "a")
    main_dir = mtr_dir / "main"
    for test in sorted(main_dir.glob("*.test")):
        n = test.stem
        reason = None
        if any((main_dir / f"{n}{s}").exists() for s in (".opt", "-master.opt", "-slave.opt", ".cnf")):
            reason = "needs server options (.opt/.cnf) that mtr cannot give an --extern server"
        else:
            text = text_with_sources(test, mtr_dir, set())
            for rule, why in RULES:
                if rule.search(text):
                    reason = why
                    break
        if reason:
            excluded.write(f"main.{n}  # {reason}\n")
        else:
            print(f"main.{n}")


if __name__ == "__main__":
    main()

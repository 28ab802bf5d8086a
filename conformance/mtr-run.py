#!/usr/bin/env python3
"""Runs a list of mysql-test-run tests against an --extern server and puts
the server back in a clean state after every failure.

Why: mtr restarts the servers it owns after a failed test; it cannot restart
an --extern server, so a test that fails half-way leaves its tables, users
and global settings behind and every later test that creates `t1` fails too
(seen: one failure turned into 30). So mtr runs with --max-test-fail=1: it
stops at the first failure, this script drops what the failed test left on
the primary (databases and accounts that were not there at the start, the
`test` database re-created empty) and restores every server's global
variables to their value at the start, waits until the replicas have applied
that, and starts mtr again with the tests not yet run. The log file is the
concatenation of the mtr runs (scripts/conformance.sh's report.py reads it).

Only Debian's python3 and python3-pymysql (scripts/install-deps.sh).
Usage: mtr-run.py --mtr-dir D --vardir V --port P --primary PORT
                  --replica PORT --replica PORT --list FILE --log FILE
"""

import argparse
import pathlib
import re
import subprocess
import sys
import time

import pymysql

RESULT_RE = re.compile(r"^(main\.\S+)\s+\[ (pass|fail|skipped|disabled) \]")
SYSTEM_DBS = {"mysql", "information_schema", "performance_schema", "sys"}


def connect(port):
    return pymysql.connect(host="127.0.0.1", port=port, user="root", password="", autocommit=True)


def snapshot(port):
    """What a clean server looks like: its databases, accounts and globals."""
    with connect(port) as c, c.cursor() as cur:
        cur.execute("SHOW DATABASES")
        dbs = {r[0] for r in cur.fetchall()}
        cur.execute("SELECT user, host FROM mysql.user")
        users = {(r[0], r[1]) for r in cur.fetchall()}
        cur.execute("SHOW GLOBAL VARIABLES")
        variables = dict(cur.fetchall())
    return dbs, users, variables


def literal(value):
    if re.fullmatch(r"-?\d+(\.\d+)?", value or ""):
        return value
    return "'" + (value or "").replace("\\", "\\\\").replace("'", "\\'") + "'"


# Globals that move by themselves or whose assignment is an action, not a
# setting: `SET GLOBAL gtid_binlog_state = …` deletes the binary logs (it
# broke the sandbox's replication), gtid_slave_pos rewinds a replica.
NOT_RESTORED = re.compile(r"^(gtid_.*|.*_pos|server_id|timestamp|pseudo_.*|rand_seed.*|insert_id|"
                          r"last_insert_id|identity|warning_count|error_count|in_transaction|debug.*|"
                          r"read_only|.*_state)$")


def restore_globals(port, baseline):
    with connect(port) as c, c.cursor() as cur:
        cur.execute("SHOW GLOBAL VARIABLES")
        for name, value in cur.fetchall():
            if name in baseline and baseline[name] != value and not NOT_RESTORED.match(name):
                try:
                    cur.execute(f"SET GLOBAL `{name}` = {literal(baseline[name])}")
                except pymysql.MySQLError:
                    pass  # read-only or not settable at runtime: nothing to restore


def remove_strays(datadir, db):
    """Files a test wrote into a database directory (SELECT ... INTO OUTFILE
    with a relative name) make DROP DATABASE fail with 1010; the sandbox runs
    on this machine, so they are removed here."""
    d = pathlib.Path(datadir) / db
    if d.is_dir():
        for f in d.iterdir():
            if f.is_file() and f.name != "db.opt":
                f.unlink()


def empty_test_db(cur, datadir):
    """Drops every object of `test` (the database itself stays, so a
    replica never has to drop a directory it cannot empty)."""
    cur.execute("SET SESSION foreign_key_checks = 0")
    cur.execute("SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'test'")
    for name, kind in cur.fetchall():
        what = "VIEW" if kind == "VIEW" else ("SEQUENCE" if kind == "SEQUENCE" else "TABLE")
        try:
            cur.execute(f"DROP {what} IF EXISTS test.`{name}`")
        except pymysql.MySQLError:
            pass
    cur.execute("SELECT routine_name, routine_type FROM information_schema.routines WHERE routine_schema = 'test'")
    for name, kind in cur.fetchall():
        cur.execute(f"DROP {kind} IF EXISTS test.`{name}`")
    cur.execute("SELECT event_name FROM information_schema.events WHERE event_schema = 'test'")
    for (name,) in cur.fetchall():
        cur.execute(f"DROP EVENT IF EXISTS test.`{name}`")
    cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'test'")
    if cur.fetchall():
        cur.execute("DROP DATABASE IF EXISTS test")
        cur.execute("CREATE DATABASE test DEFAULT CHARACTER SET latin1 COLLATE latin1_swedish_ci")
    else:
        cur.execute("ALTER DATABASE test DEFAULT CHARACTER SET latin1 COLLATE latin1_swedish_ci")
    remove_strays(datadir, "test")


def release_locks(cur):
    """What outlives a failed test's connections: XA transactions left
    PREPARED hold their locks after the client is gone (seen: the cleanup's
    DROP then waited into 1205), and so do transactions of connections that
    are still open."""
    cur.execute("XA RECOVER")
    for row in cur.fetchall():
        formatid, gtrid_len, bqual_len, data = row[0], int(row[1]), int(row[2]), row[3]
        if isinstance(data, str):
            data = data.encode()
        gtrid, bqual = data[:gtrid_len], data[gtrid_len:gtrid_len + bqual_len]
        try:
            cur.execute("XA ROLLBACK X%s, X%s, %s", (gtrid.hex(), bqual.hex(), formatid))
        except pymysql.MySQLError as e:
            print(f"mtr-run: XA ROLLBACK failed: {e}", file=sys.stderr)
    cur.execute("SELECT trx_mysql_thread_id FROM information_schema.innodb_trx "
                "WHERE trx_mysql_thread_id <> CONNECTION_ID()")
    for (thread,) in cur.fetchall():
        try:
            cur.execute(f"KILL {int(thread)}")
        except pymysql.MySQLError:
            pass


def reset(primary, replicas, clean):
    """Never raises: a failed cleanup is reported and the run goes on."""
    try:
        return reset_or_raise(primary, replicas, clean)
    except pymysql.MySQLError as e:
        print(f"mtr-run: cleanup failed: {e}", file=sys.stderr)
        return False


def reset_or_raise(primary, replicas, clean):
    dbs, users, variables = clean[primary]
    datadir = variables["datadir"]
    with connect(primary) as c, c.cursor() as cur:
        cur.execute("SET SESSION lock_wait_timeout = 10, innodb_lock_wait_timeout = 10")
        release_locks(cur)
        cur.execute("SHOW DATABASES")
        for (db,) in cur.fetchall():
            if db not in dbs and db not in SYSTEM_DBS:
                remove_strays(datadir, db)
                try:
                    cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
                except pymysql.MySQLError as e:
                    print(f"mtr-run: cannot drop {db}: {e}", file=sys.stderr)
        cur.execute("SELECT user, host FROM mysql.user")
        for user, host in cur.fetchall():
            if (user, host) not in users:
                try:
                    cur.execute("DROP USER %s@%s", (user, host))
                except pymysql.MySQLError:
                    cur.execute("DROP ROLE IF EXISTS %s", (user,))
        empty_test_db(cur, datadir)
    for port in [primary] + replicas:
        restore_globals(port, clean[port][2])
    return replicas_caught_up(primary, replicas)


def skip_failed_events(cur, port, status):
    """A statement that succeeded on the primary can fail on a replica of
    this sandbox (a DATA DIRECTORY that exists only for the primary's
    test, statistics tables each server fills itself) and stop its SQL
    thread; every later read through rwproxy would then see stale data and
    count as a difference. The failed event is skipped (reported), as an
    operator of a test replica would."""
    for _ in range(20):
        if status.get("Slave_SQL_Running") == "Yes" or not status.get("Last_SQL_Errno"):
            return status
        print(f"mtr-run: replica {port} skips an event that failed: {status.get('Last_SQL_Error', '')[:200]}",
              file=sys.stderr)
        cur.execute("STOP SLAVE")
        cur.execute("SET GLOBAL sql_slave_skip_counter = 1")
        cur.execute("START SLAVE")
        time.sleep(1)
        cur.execute("SHOW SLAVE STATUS")
        status = cur.fetchone() or {}
    return status


def replicas_caught_up(primary, replicas):
    with connect(primary) as c, c.cursor() as cur:
        cur.execute("SELECT @@gtid_binlog_pos")
        pos = cur.fetchone()[0]
    ok = True
    for port in replicas:
        with connect(port) as c, c.cursor(pymysql.cursors.DictCursor) as cur:
            cur.execute("SHOW SLAVE STATUS")
            status = cur.fetchone() or {}
            status = skip_failed_events(cur, port, status)
            if status.get("Slave_IO_Running") != "Yes" or status.get("Slave_SQL_Running") != "Yes":
                print(f"mtr-run: replication to {port} stopped: {status.get('Last_IO_Error')} "
                      f"{status.get('Last_SQL_Error')}", file=sys.stderr)
                ok = False
                continue
        with connect(port) as c, c.cursor() as cur:
            cur.execute("SELECT MASTER_GTID_WAIT(%s, 20)", (pos,))
            if cur.fetchone()[0] != 0:
                ok = False
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mtr-dir", required=True)
    ap.add_argument("--vardir", required=True)
    ap.add_argument("--port", type=int, required=True, help="where mtr connects (primary or rwproxy)")
    ap.add_argument("--primary", type=int, required=True)
    ap.add_argument("--replica", type=int, action="append", default=[])
    ap.add_argument("--list", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--only-passing-in", help="run only the tests this (possibly still "
                    "growing) log of a direct run reports as passing")
    args = ap.parse_args()

    tests = []
    for line in pathlib.Path(args.list).read_text().splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            tests.append(name)
    clean = {p: snapshot(p) for p in [args.primary] + args.replica}
    done = set()
    log = open(args.log, "w")
    runs = 0
    while True:
        todo = [t for t in tests if t not in done]
        if args.only_passing_in:
            # Follow a direct run that is still going: run only what it saw
            # pass, wait for more, stop after 5 minutes without news.
            passing = set()
            log_path = pathlib.Path(args.only_passing_in)
            for line in log_path.read_text(errors="replace").splitlines() if log_path.exists() else []:
                m = RESULT_RE.match(line)
                if m and m.group(2) == "pass":
                    passing.add(m.group(1))
            todo = [t for t in todo if t in passing]
            if not todo:
                if time.time() - (log_path.stat().st_mtime if log_path.exists() else 0) > 300:
                    break
                time.sleep(15)
                continue
        if not todo:
            break
        runs += 1
        cmd = [
            "./mtr", f"--vardir={args.vardir}", "--extern", "host=127.0.0.1",
            "--extern", f"port={args.port}", "--extern", "user=root", "--extern", "protocol=tcp",
            "--force", "--retry=0", "--max-test-fail=1", "--testcase-timeout=3",
        ] + todo
        proc = subprocess.Popen(cmd, cwd=args.mtr_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
        new = set()
        failed = None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            m = RESULT_RE.match(line)
            if m and m.group(1) not in done:
                new.add(m.group(1))
                if m.group(2) == "fail":
                    failed = m.group(1)
        proc.wait()
        done |= new
        if not new:
            print(f"mtr-run: mtr ran none of {len(todo)} remaining tests; stopping", file=sys.stderr)
            break
        if failed:
            if not reset(args.primary, args.replica, clean):
                print(f"mtr-run: WARNING replicas did not catch up after {failed}", file=sys.stderr)
        elif not replicas_caught_up(args.primary, args.replica):
            print("mtr-run: WARNING replicas did not catch up", file=sys.stderr)
    log.close()
    print(f"mtr-run: {len(done)} of {len(tests)} tests reported in {runs} mtr runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

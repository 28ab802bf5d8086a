#!/usr/bin/env python3
"""Connection rate: N sequential connect + `SELECT 1` + disconnect.

Usage: connrate.py HOST PORT USER PASSWORD DB N

Prints one tab-separated line: connections per second, p50 ms, p99 ms (of one
connect + query + close cycle).  Exits non-zero on the first failure, so a
target that refuses or drops connections fails the harness.

Each connect names the schema (DB) in the handshake and passes
`autocommit=None`, which leaves autocommit at the server default: with its
default (autocommit=False) PyMySQL sends `SET AUTOCOMMIT = 0` after every
handshake, an extra round trip that PHP's mysqli/PDO — the short-lived-
connection applications this test stands for — never send.  (PyMySQL 1.1 and
later also send `SET NAMES` on every connect; Debian's PyMySQL 1.0.x, which
load.sh installs, does not.)
"""

import sys
import time

import pymysql


def main():
    host, port, user, password, db, n = sys.argv[1:7]
    port, n = int(port), int(n)
    cycles = []
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        try:
            conn = pymysql.connect(
                host=host,
                port=port,
                user=user,
                password=password,
                database=db,
                autocommit=None,  # no SET AUTOCOMMIT round trip, as PHP
                connect_timeout=10,
                read_timeout=10,
                write_timeout=10,
            )
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                if cur.fetchone() != (1,):
                    raise RuntimeError("SELECT 1 returned something else")
            conn.close()
        except Exception as e:  # report which attempt failed and why
            sys.exit(f"connection {i + 1}/{n} to {host}:{port} failed: {e!r}")
        cycles.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    cycles.sort()
    p50 = cycles[len(cycles) // 2] * 1000
    p99 = cycles[min(len(cycles) - 1, int(len(cycles) * 0.99))] * 1000
    print(f"{n / elapsed:.1f}\t{p50:.3f}\t{p99:.3f}")


if __name__ == "__main__":
    main()

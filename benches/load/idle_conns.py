#!/usr/bin/python3
"""Opens N client connections through rwproxy (full MySQL login, no
database, so no backend connection is needed), holds them all open, and
prints rwproxy's resident memory before and while they are held.

usage: idle_conns.py HOST PORT USER PASSWORD N RWPROXY_PID
output (tab-separated): connections_opened  rss_before_kib  rss_held_kib  seconds
"""
import resource
import sys
import time

import pymysql


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    host, port, user, password, n, pid = sys.argv[1:7]
    n = int(n)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, n + 1024)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    before = rss_kib(pid)
    conns = []
    start = time.time()
    for _ in range(n):
        # autocommit=None: PyMySQL sends no SET on connect, so the client is
        # truly idle and needs no backend connection.
        conns.append(pymysql.connect(host=host, port=int(port), user=user, password=password, connect_timeout=10, autocommit=None))
    took = time.time() - start
    time.sleep(1)
    held = rss_kib(pid)
    # Every connection still answers.
    for c in conns[:: max(1, n // 50)]:
        c.ping(reconnect=False)
    for c in conns:
        c.close()
    print(f"{len(conns)}\t{before}\t{held}\t{took:.1f}")


if __name__ == "__main__":
    main()

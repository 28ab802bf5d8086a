#!/usr/bin/env bash
# Load harness: sysbench through rwproxy, compared with connecting directly
# to the primary and with HAProxy 2.6 in TCP mode.
#
#   benches/load.sh            full run (~10 min), writes benches/results/latest.md
#   SMOKE=1 benches/load.sh    CI-sized run (~1 min), writes benches/results/smoke.md
#
# What it does: builds rwproxy (release), starts a sandbox (MariaDB primary +
# 2 replicas, `rwproxy sandbox up`) in a temporary directory, prepares the
# sysbench tables through the primary, waits for the replicas to catch up,
# starts HAProxy (listener `replicas` → both replicas, listener `primary` → the
# primary) and rwproxy, then runs interleaved rounds (direct, haproxy, rwproxy,
# direct, haproxy, rwproxy, …) of
#   oltp_point_select, oltp_read_only   direct = primary, haproxy = replicas
#   oltp_read_write                     direct = primary, haproxy = primary
# and reports median QPS / p95 / p99 per workload, thread count and target,
# plus a sequential connection-rate test and a concurrent one (sysbench
# connect.lua, CONN_THREADS clients; both interleaved, ROUNDS times),
# and which server rwproxy sent statements to. Everything it started is stopped on
# exit (by recorded PID, never by name).
#
# CPU per statement (robust to the machine's noise, unlike QPS): around every
# measured sysbench run the harness samples the proxy's CPU time (utime+stime
# from /proc/PID/stat, HAProxy or rwproxy, all threads) and the whole
# machine's CPU time from the `cpu ` line of /proc/stat (busy = user + nice +
# system + irq + softirq, idle = idle + iowait; steal is in neither), and
# divides the growth by the statements sysbench completed (the total of its
# `queries:` line), in µs per statement:
#   proxy CPU µs/stmt    CPU the proxy process spent per statement ("–" for
#                        direct runs, or when the proxy's /proc entry is gone)
#   machine busy µs/stmt CPU time all cores spent working per statement (MariaDB
#                        servers, sysbench, the proxy, anything else running)
#   idle µs/stmt         CPU time all cores sat idle per statement; busy + idle
#                        ≈ cores × 10⁶ / QPS
# The window is the whole sysbench process (its connects and statement
# preparation too), so it is slightly longer than --time; the figures are in
# clock ticks (`getconf CLK_TCK`, usually 10 ms) before the division.
# The report also gives per-round ratios: rounds run direct, haproxy and
# rwproxy back to back, so a ratio within one round suffers less from slow
# drift of the machine than the ratio of medians.
#
# Comparing two builds: with RWPROXY_BASE_BIN=/path/to/other/rwproxy a second
# rwproxy ("base", reported as "rwproxy (base binary)") runs from that binary
# with the same config except its ports (listen BASE_PORT+14, http_listen
# BASE_PORT+15, [admin] listen BASE_PORT+16), and every round runs direct,
# haproxy, rwproxy, base back to back; the report adds the per-round ratios
# rwproxy/base (QPS and proxy CPU per statement). Both proxies run for the
# whole benchmark, so each one's monitor (a few statements a second) runs
# during the other's measurements too.
#
# Knobs (environment):
#   ROUNDS=3  DURATION=10  THREADS="8 64"  TABLES=4  TABLE_SIZE=10000
#   WORKLOADS="oltp_point_select oltp_read_only oltp_read_write"
#   CONN_N=2000        connections per target in the sequential connection-rate test
#   CONN_THREADS=8     clients of the concurrent connection test (connect.lua)
#   WARMUP=3           seconds of point selects per target before measuring
#   BASE_PORT=4310     primary; replicas on BASE_PORT+1, BASE_PORT+2
#   PROXY_PORT=BASE_PORT+10  HAPROXY_REPLICAS_PORT=BASE_PORT+11
#   HAPROXY_PRIMARY_PORT=BASE_PORT+12  HTTP_PORT=BASE_PORT+13 (rwproxy /metrics)
#   SYSBENCH_OPTS=""   extra options for every measured sysbench run
#   RWPROXY_LOG=info   RUST_LOG for rwproxy
#   RWPROXY_SETTINGS=""  top-level config lines for rwproxy, e.g.
#                      'pool_mode = "transaction"' or 'worker_threads = 1' (one per line)
#   RESULTS_FILE=benches/results/latest.md (smoke.md with SMOKE=1)
#   SKIP_BUILD=1       use the existing target/release/rwproxy (or RWPROXY_BIN=path)
#   RWPROXY_BASE_BIN=path  also measure the rwproxy binary at path as target "base"
#                      (e.g. a release build of main), to compare two builds
#   IDLE_N=10000       clients held open in the idle-connections test (500 with SMOKE=1)
#   KEEP=1             keep the temporary directory (logs, raw sysbench output)
#
# Exit status: 0 when every run completed (no performance thresholds), 1 when
# a run failed outright (sysbench error, target unreachable, rwproxy died), 2
# on a set-up failure.

set -euo pipefail

# The command line as given, for the report (knobs set in the environment first).
KNOBS=(SMOKE ROUNDS DURATION THREADS TABLES TABLE_SIZE WORKLOADS CONN_N WARMUP
	BASE_PORT PROXY_PORT HAPROXY_REPLICAS_PORT HAPROXY_PRIMARY_PORT HTTP_PORT
	SYSBENCH_OPTS RWPROXY_LOG RWPROXY_SETTINGS RESULTS_FILE SKIP_BUILD RWPROXY_BIN RWPROXY_BASE_BIN IDLE_N CONN_THREADS KEEP)
CMDLINE=""
for k in "${KNOBS[@]}"; do
	if [[ -n "${!k+x}" ]]; then
		CMDLINE+="$k=$(printf '%q' "${!k}") "
	fi
done
CMDLINE+="$(printf '%q' "$0")"
for a in "$@"; do CMDLINE+=" $(printf '%q' "$a")"; done

SMOKE=${SMOKE:-0}
if [[ $SMOKE == 1 ]]; then
	: "${ROUNDS:=1}" "${DURATION:=2}" "${THREADS:=4}" "${TABLE_SIZE:=1000}"
	: "${WORKLOADS:=oltp_point_select oltp_read_write}" "${CONN_N:=200}" "${WARMUP:=1}"
fi
: "${ROUNDS:=3}" "${DURATION:=10}" "${THREADS:=8 64}" "${TABLES:=4}" "${TABLE_SIZE:=10000}"
: "${WORKLOADS:=oltp_point_select oltp_read_only oltp_read_write}" "${CONN_N:=2000}" "${WARMUP:=3}"
: "${BASE_PORT:=4310}"
: "${PROXY_PORT:=$((BASE_PORT + 10))}" "${HAPROXY_REPLICAS_PORT:=$((BASE_PORT + 11))}"
: "${HAPROXY_PRIMARY_PORT:=$((BASE_PORT + 12))}" "${HTTP_PORT:=$((BASE_PORT + 13))}"
: "${SYSBENCH_OPTS:=}" "${RWPROXY_LOG:=info}" "${KEEP:=0}" "${SKIP_BUILD:=0}"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE="$ROOT/benches/load"
if [[ $SMOKE == 1 ]]; then
	: "${RESULTS_FILE:=$ROOT/benches/results/smoke.md}"
else
	: "${RESULTS_FILE:=$ROOT/benches/results/latest.md}"
fi
RW=${RWPROXY_BIN:-$ROOT/target/release/rwproxy}
REPLICA_PORTS=("$((BASE_PORT + 1))" "$((BASE_PORT + 2))")
TARGETS=(direct haproxy rwproxy)
BASE_BIN=${RWPROXY_BASE_BIN:-}
# Ports of the "base" rwproxy (only with RWPROXY_BASE_BIN).
BASE_RW_PORT=$((BASE_PORT + 14)) BASE_RW_HTTP_PORT=$((BASE_PORT + 15)) BASE_RW_ADMIN_PORT=$((BASE_PORT + 16))
if [[ -n $BASE_BIN ]]; then TARGETS=(direct haproxy rwproxy base); fi
read -ra THREAD_LIST <<<"$THREADS"
read -ra WORKLOAD_LIST <<<"$WORKLOADS"
read -ra EXTRA_OPTS <<<"$SYSBENCH_OPTS"

log() { printf '[load %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 2
}

WORK="" SANDBOX_STARTED=0 RW_PID="" HAPROXY_PID="" FAILED=0 RW_DEAD=0 BASE_PID="" BASE_DEAD=0
# RESULTS_TSV columns after "workload threads target round" for a failed run:
# status, qps, p95, p99, ignored, reconnects, queries, then proxy CPU, machine
# busy and idle µs/stmt ("-" = unknown). See benches/load/report.py.
FAIL_COLS=$'fail\t0\t0\t0\t0\t0\t0\t-\t-\t-'

# Stops a child we started, by PID: TERM, then KILL after 10 s.
stop_pid() {
	local pid=$1 name=$2
	[[ -n $pid ]] || return 0
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "$name (pid $pid) ignored SIGTERM; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	set +e
	stop_pid "$RW_PID" rwproxy
	stop_pid "$BASE_PID" "rwproxy (base binary)"
	stop_pid "$HAPROXY_PID" haproxy
	if [[ $SANDBOX_STARTED == 1 ]]; then
		"$RW" sandbox down --dir "$WORK/sandbox" >"$WORK/sandbox-down.log" 2>&1 ||
			log "warning: 'rwproxy sandbox down' failed: $(tail -n 3 "$WORK/sandbox-down.log")"
	fi
	if [[ -n $WORK ]]; then
		if [[ $KEEP == 1 ]]; then
			log "kept $WORK (logs, raw sysbench output, sandbox data)"
		else
			rm -rf "$WORK"
			if [[ $rc -ne 0 ]]; then log "rerun with KEEP=1 to keep the logs in the work directory"; fi
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools ------------------------------------------------------------------

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; fi
APT_UPDATED=0
apt_install() {
	if [[ $APT_UPDATED == 0 ]]; then
		$SUDO apt-get update
		APT_UPDATED=1
	fi
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

missing=()
command -v sysbench >/dev/null || missing+=(sysbench)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v mariadbd >/dev/null || [[ -x /usr/sbin/mariadbd ]] || missing+=(mariadb-server)
command -v mariadb >/dev/null || missing+=(mariadb-client)
if ((${#missing[@]})); then
	log "installing ${missing[*]}"
	apt_install sysbench haproxy mariadb-server mariadb-client
fi
command -v python3 >/dev/null || [[ -x /usr/bin/python3 ]] || apt_install python3
# The connection-rate test needs PyMySQL; Debian's package goes to the system
# Python, which may not be the python3 first in PATH.
PY=""
for p in python3 /usr/bin/python3; do
	if command -v "$p" >/dev/null && "$p" -c 'import pymysql' 2>/dev/null; then
		PY=$p
		break
	fi
done
if [[ -z $PY ]]; then
	log "installing python3-pymysql"
	apt_install python3-pymysql
	PY=/usr/bin/python3
fi
PY_ANY=$(command -v python3 || echo /usr/bin/python3)

# --- build and ports ----------------------------------------------------------

if [[ $SKIP_BUILD != 1 ]]; then
	log "cargo build --release"
	(cd "$ROOT" && cargo build --release) || die "cargo build --release failed"
fi
[[ -x $RW ]] || die "no rwproxy binary at $RW"
if [[ -n $BASE_BIN ]]; then
	[[ -x $BASE_BIN ]] || die "RWPROXY_BASE_BIN: no executable at $BASE_BIN"
	BASE_PORTS=("$BASE_RW_PORT" "$BASE_RW_HTTP_PORT" "$BASE_RW_ADMIN_PORT")
else
	BASE_PORTS=()
fi

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$BASE_PORT" "${REPLICA_PORTS[@]}" "$PROXY_PORT" "$HAPROXY_REPLICAS_PORT" \
	"$HAPROXY_PRIMARY_PORT" "$HTTP_PORT" "${BASE_PORTS[@]}"; do
	if port_busy "$p"; then
		die "port $p is already in use; choose other ports with BASE_PORT=…"
	fi
done
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
[[ $CLK_TCK =~ ^[1-9][0-9]*$ ]] || CLK_TCK=100

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rwproxy-load.XXXXXX")
mkdir -p "$WORK/runs"
RESULTS_TSV="$WORK/results.tsv" ROUTING_TSV="$WORK/routing.tsv" CONNRATE_TSV="$WORK/connrate.tsv"
CONNCONC_TSV="$WORK/connconc.tsv"
: >"$RESULTS_TSV"
: >"$ROUTING_TSV"
: >"$CONNRATE_TSV"
: >"$CONNCONC_TSV"
log "work directory $WORK"

# --- sandbox ------------------------------------------------------------------

# Runs SQL as root over TCP on a backend port; prints tab-separated rows.
sql() {
	local port=$1
	shift
	mariadb --no-defaults --protocol=TCP -h127.0.0.1 -P"$port" -uroot -proot -N -B -e "$*"
}

# Waits until `user`/`password` can run SELECT 1 on port.
wait_sql() {
	local port=$1 user=$2 password=$3 what=$4 deadline=$((SECONDS + 60))
	until mariadb --no-defaults --protocol=TCP -h127.0.0.1 -P"$port" -u"$user" -p"$password" \
		-N -B -e 'SELECT 1' >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "$what (127.0.0.1:$port) not reachable after 60 s"
		sleep 0.2
	done
}

# Waits until every replica has applied the primary's whole binlog.
wait_replicas() {
	local want got port deadline=$((SECONDS + 300))
	want=$(sql "$BASE_PORT" 'SELECT @@gtid_binlog_pos')
	for port in "${REPLICA_PORTS[@]}"; do
		while :; do
			got=$(sql "$port" 'SELECT @@gtid_slave_pos' 2>/dev/null || true)
			[[ $got == "$want" ]] && break
			((SECONDS < deadline)) ||
				die "replica on port $port stuck at gtid_slave_pos '$got' (primary at '$want')"
			sleep 0.2
		done
	done
}

log "rwproxy sandbox up (primary :$BASE_PORT, replicas :${REPLICA_PORTS[*]})"
SANDBOX_STARTED=1
"$RW" sandbox up --dir "$WORK/sandbox" --base-port "$BASE_PORT" --replicas 2 \
	--proxy-port "$PROXY_PORT" >"$WORK/sandbox-up.log" 2>&1 || {
	log "rwproxy sandbox up failed; its output:"
	head -n 40 "$WORK/sandbox-up.log" >&2
	for f in "$WORK"/sandbox/*/error.log; do
		[[ -f $f ]] || continue
		log "last lines of $f:"
		tail -n 10 "$f" >&2
	done
	die "rwproxy sandbox up failed"
}
CONFIG="$WORK/sandbox/rwproxy.toml"
[[ -f $CONFIG ]] || die "sandbox wrote no $CONFIG"
wait_sql "$BASE_PORT" root root "primary"
for port in "${REPLICA_PORTS[@]}"; do wait_sql "$port" root root "replica"; done
wait_sql "$BASE_PORT" app app "primary as app"

SB_COMMON=(--db-driver=mysql --mysql-host=127.0.0.1 --mysql-user=app --mysql-password=app
	--mysql-db=app --tables="$TABLES" --table-size="$TABLE_SIZE")
log "sysbench prepare: $TABLES tables × $TABLE_SIZE rows through the primary"
sysbench oltp_common "${SB_COMMON[@]}" --mysql-port="$BASE_PORT" cleanup >"$WORK/prepare.log" 2>&1 ||
	die "sysbench cleanup failed: $(tail -n 5 "$WORK/prepare.log")"
sysbench oltp_common "${SB_COMMON[@]}" --mysql-port="$BASE_PORT" --threads="$TABLES" prepare \
	>>"$WORK/prepare.log" 2>&1 || die "sysbench prepare failed: $(tail -n 5 "$WORK/prepare.log")"
log "waiting for the replicas to catch up"
wait_replicas

# --- haproxy and rwproxy ------------------------------------------------------

cat >"$WORK/haproxy.cfg" <<EOF
# Generated by benches/load.sh: plain L4 balancing, no health checks (a TCP
# check counts as an aborted connection on MariaDB and can get the host
# blocked after max_connect_errors).
global
    maxconn 8192

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h

listen replicas
    bind 127.0.0.1:$HAPROXY_REPLICAS_PORT
    balance roundrobin
    server replica1 127.0.0.1:${REPLICA_PORTS[0]}
    server replica2 127.0.0.1:${REPLICA_PORTS[1]}

listen primary
    bind 127.0.0.1:$HAPROXY_PRIMARY_PORT
    balance roundrobin
    server primary 127.0.0.1:$BASE_PORT
EOF
haproxy -c -f "$WORK/haproxy.cfg" >"$WORK/haproxy-check.log" 2>&1 ||
	die "invalid haproxy config: $(cat "$WORK/haproxy-check.log")"
haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!
log "haproxy pid $HAPROXY_PID (replicas :$HAPROXY_REPLICAS_PORT, primary :$HAPROXY_PRIMARY_PORT)"

# The sandbox's config with the HTTP endpoint moved to a port of ours, so the
# harness can see in /metrics when rwproxy's monitor has found every server.
# Written next to the original so relative paths in it still resolve.
BENCH_CONFIG="$WORK/sandbox/rwproxy-bench.toml"
{
	printf 'http_listen = "127.0.0.1:%s"\n' "$HTTP_PORT"
	[[ -n ${RWPROXY_SETTINGS:-} ]] && printf '%s\n' "$RWPROXY_SETTINGS"
	grep -v '^[[:space:]]*http_listen[[:space:]]*=' "$CONFIG"
} >"$BENCH_CONFIG"
RWPROXY_LOGFILE="$WORK/rwproxy.log"
# Room for the idle-connections test (10,000 clients).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
RUST_LOG=$RWPROXY_LOG "$RW" run --config "$BENCH_CONFIG" >"$RWPROXY_LOGFILE" 2>&1 &
RW_PID=$!
log "rwproxy pid $RW_PID (:$PROXY_PORT, log $RWPROXY_LOGFILE)"

# The "base" rwproxy (RWPROXY_BASE_BIN): the bench config with its own ports.
# The top-level `listen` and `http_listen` and the [admin] table's `listen`
# are rewritten line by line (anything else, RWPROXY_SETTINGS included, stays
# as it is; a top-level `listen_socket` gets a ".base" suffix), then the result
# is parsed as TOML to check that the three addresses really are the new ones,
# so a config the rewrite does not understand stops the harness instead of
# starting a second proxy on the first one's ports.
BASE_LOGFILE="$WORK/rwproxy-base.log"
if [[ -n $BASE_BIN ]]; then
	BASE_CONFIG="$WORK/sandbox/rwproxy-bench-base.toml"
	"$PY_ANY" - "$BENCH_CONFIG" "$BASE_CONFIG" "127.0.0.1:$BASE_RW_PORT" \
		"127.0.0.1:$BASE_RW_HTTP_PORT" "127.0.0.1:$BASE_RW_ADMIN_PORT" <<'EOF' ||
import re, sys, tomllib
src, dst, listen, http, admin = sys.argv[1:6]
key = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")
table, out, admin_done = None, [], False  # table None: top level
for line in open(src, encoding="utf-8").read().splitlines():
    if line.lstrip().startswith("["):
        if table == "admin" and not admin_done:  # [admin] without listen
            out.append(f'listen = "{admin}"')
            admin_done = True
        table = line.strip().strip("[]").strip().split("]")[0].strip()
    k = key.match(line)
    name = k.group(1) if k else None
    if table is None and name == "listen":
        line = f'listen = "{listen}"'
    elif table is None and name == "http_listen":
        line = f'http_listen = "{http}"'
    elif table is None and name == "listen_socket":
        line = re.sub(r'"\s*$', '.base"', line.rstrip())
    elif table == "admin" and name == "listen":
        line, admin_done = f'listen = "{admin}"', True
    out.append(line)
if table == "admin" and not admin_done:
    out.append(f'listen = "{admin}"')
text = "\n".join(out) + "\n"
cfg = tomllib.loads(text)
if cfg.get("listen") != listen or cfg.get("http_listen") != http or (
    "admin" in cfg and cfg["admin"].get("listen") != admin
):
    sys.exit(f"could not move the listen addresses in {src}")
open(dst, "w", encoding="utf-8").write(text)
EOF
		die "could not write the base rwproxy's config $BASE_CONFIG"
	RUST_LOG=$RWPROXY_LOG "$BASE_BIN" run --config "$BASE_CONFIG" >"$BASE_LOGFILE" 2>&1 &
	BASE_PID=$!
	log "rwproxy (base binary $BASE_BIN) pid $BASE_PID (:$BASE_RW_PORT, log $BASE_LOGFILE)"
fi

strip_ansi() { sed 's/\x1b\[[0-9;]*m//g' "$@"; }
# Whether the rwproxy process of target (rwproxy or base) still runs; says so
# (with its last log lines) the first time it is found gone. Other targets:
# always true.
proxy_alive() { # target
	local pid logfile name
	case $1 in
	rwproxy)
		((RW_DEAD == 0)) || return 1
		pid=$RW_PID logfile=$RWPROXY_LOGFILE name=rwproxy
		;;
	base)
		((BASE_DEAD == 0)) || return 1
		pid=$BASE_PID logfile=$BASE_LOGFILE name="rwproxy (base binary)"
		;;
	*) return 0 ;;
	esac
	if ! kill -0 "$pid" 2>/dev/null; then
		if [[ $1 == base ]]; then BASE_DEAD=1; else RW_DEAD=1; fi
		FAILED=$((FAILED + 1))
		log "$name (pid $pid) is gone; last log lines:"
		strip_ansi "$logfile" | tail -n 30 >&2
		return 1
	fi
}
rwproxy_alive() { proxy_alive rwproxy; }
# Checks every rwproxy process (reporting one that is gone); never fails.
all_alive() {
	proxy_alive rwproxy || true
	if [[ -n $BASE_BIN ]]; then proxy_alive base || true; fi
}
metrics() { curl -fsS --max-time 2 "http://127.0.0.1:${1:-$HTTP_PORT}/metrics" 2>/dev/null; }

# Measure only once an rwproxy's monitor sees all three servers up.
wait_monitor() { # http-port name
	local deadline=$((SECONDS + 30))
	until [[ $(metrics "$1" | grep -c '^rwproxy_server_up{.*} 1$' || true) -ge 3 ]]; do
		if ((SECONDS >= deadline)); then
			log "warning: $2's /metrics does not show 3 servers up after 30 s; measuring anyway"
			break
		fi
		if ((SECONDS >= deadline - 25)) && ! metrics "$1" >/dev/null; then
			log "warning: $2's /metrics (127.0.0.1:$1) not reachable; not waiting for its monitor"
			break
		fi
		sleep 0.2
	done
}

wait_sql "$HAPROXY_REPLICAS_PORT" app app "haproxy (replicas)"
wait_sql "$HAPROXY_PRIMARY_PORT" app app "haproxy (primary)"
rwproxy_alive || die "rwproxy exited at start-up"
wait_sql "$PROXY_PORT" app app "rwproxy"
wait_monitor "$HTTP_PORT" rwproxy
if [[ -n $BASE_BIN ]]; then
	proxy_alive base || die "rwproxy (base binary) exited at start-up"
	wait_sql "$BASE_RW_PORT" app app "rwproxy (base binary)"
	wait_monitor "$BASE_RW_HTTP_PORT" "rwproxy (base binary)"
fi

# --- runs ---------------------------------------------------------------------

target_port() { # workload target
	case $2 in
	direct) echo "$BASE_PORT" ;;
	haproxy) if [[ $1 == oltp_read_write ]]; then echo "$HAPROXY_PRIMARY_PORT"; else echo "$HAPROXY_REPLICAS_PORT"; fi ;;
	rwproxy) echo "$PROXY_PORT" ;;
	base) echo "$BASE_RW_PORT" ;;
	esac
}

# Statements each server has executed so far (its `Questions` counter, which
# counts prepared-statement executions too), one "name<TAB>count" per line.
server_questions() {
	local name port
	for name in primary:"$BASE_PORT" replica1:"${REPLICA_PORTS[0]}" replica2:"${REPLICA_PORTS[1]}"; do
		port=${name#*:}
		printf '%s\t%s\n' "${name%%:*}" "$(sql "$port" "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'QUESTIONS'" || echo 0)"
	done
}

# CPU time (utime + stime, clock ticks, all threads) process $1 has used so
# far; prints nothing and fails when its /proc entry is gone or unreadable.
proc_ticks() {
	local s f
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	# Field 2 (comm) is in parentheses and may hold spaces: drop fields 1–2.
	[[ $s == *") "* ]] || return 1
	s=${s##*) }
	read -ra f <<<"$s" || true
	# f[0] is field 3, so fields 14 and 15 are f[11] and f[12].
	[[ ${f[11]:-} =~ ^[0-9]+$ && ${f[12]:-} =~ ^[0-9]+$ ]] || return 1
	echo $((f[11] + f[12]))
}

# One CPU sample, "proxy busy idle" in clock ticks: the proxy's CPU time
# ("-" when there is no proxy or it is unknown), the whole machine's busy
# (user+nice+system+irq+softirq) and idle (idle+iowait) time from /proc/stat.
cpu_sample() { # [proxy pid]
	local pt=- label user nice system idle iowait irq softirq rest
	if [[ -n ${1:-} ]]; then pt=$(proc_ticks "$1") || pt=-; fi
	read -r label user nice system idle iowait irq softirq rest </proc/stat || true
	if [[ $label == cpu && $softirq =~ ^[0-9]+$ ]]; then
		echo "$pt $((user + nice + system + irq + softirq)) $((idle + iowait))"
	else
		echo "$pt - -"
	fi
}

proxy_pid() { # target
	case $1 in
	haproxy) echo "$HAPROXY_PID" ;;
	rwproxy) echo "$RW_PID" ;;
	base) echo "$BASE_PID" ;;
	esac
}

# Runs one sysbench; prints the parsed stats line, returns non-zero on failure.
# With a sixth argument, writes the CPU samples taken just before and just
# after sysbench ("proxy busy idle proxy busy idle", ticks) to that file.
sysbench_run() { # workload threads target seconds output [cpu-file]
	local w=$1 t=$2 target=$3 secs=$4 out=$5 cpu_file=${6:-} port pid="" before="" extra=()
	port=$(target_port "$w" "$target")
	pid=$(proxy_pid "$target")
	if [[ $w == oltp_read_write ]]; then extra+=("--mysql-ignore-errors=1213,1205"); fi
	if [[ -n $cpu_file ]]; then before=$(cpu_sample "$pid"); fi
	timeout --kill-after=10 $((secs * 3 + 60)) \
		sysbench "$w" "${SB_COMMON[@]}" --mysql-port="$port" --threads="$t" --time="$secs" \
		--db-ps-mode=auto --report-interval=0 --histogram=on --percentile=99 \
		"${extra[@]}" "${EXTRA_OPTS[@]}" run >"$out" 2>&1 || return 1
	if [[ -n $cpu_file ]]; then echo "$before $(cpu_sample "$pid")" >"$cpu_file"; fi
	"$PY_ANY" "$HERE/parse_sysbench.py" "$out" 2>>"$out.parse"
}

# µs per statement from a CPU-samples file and the statement count: one line
# "proxy<TAB>busy<TAB>idle", each "-" when unknown. Never fails.
cpu_per_stmt() { # cpu-file queries
	local res=""
	if [[ -r $1 ]]; then
		res=$(awk -v q="$2" -v hz="$CLK_TCK" '
			function per(a, b) {
				if (a == "-" || b == "-" || b + 0 < a + 0) return "-"
				return sprintf("%.1f", (b - a) * 1e6 / hz / q)
			}
			NF == 6 && q + 0 > 0 { printf "%s\t%s\t%s\n", per($1, $4), per($2, $5), per($3, $6); exit }
		' "$1" 2>/dev/null) || res=""
	fi
	[[ $res == *$'\t'*$'\t'* && $res != *$'\n'* ]] || res=$'-\t-\t-'
	printf '%s\n' "$res"
}

measure() { # workload threads target round
	local w=$1 t=$2 target=$3 r=$4 out stats before=""
	out="$WORK/runs/${w}_t${t}_${target}_r${r}.txt"
	if ! proxy_alive "$target"; then
		printf '%s\t%s\t%s\t%s\t%s\n' "$w" "$t" "$target" "$r" "$FAIL_COLS" >>"$RESULTS_TSV"
		log "round $r $w threads=$t $target: skipped, its rwproxy is gone"
		return
	fi
	if [[ $target == rwproxy ]]; then before=$(server_questions); fi
	if stats=$(sysbench_run "$w" "$t" "$target" "$DURATION" "$out" "$out.cpu"); then
		local qps p95 p99 ign rec queries cpu proxy_us busy_us idle_us errs=""
		IFS=$'\t' read -r qps p95 p99 ign rec queries <<<"$stats"
		cpu=$(cpu_per_stmt "$out.cpu" "$queries")
		IFS=$'\t' read -r proxy_us busy_us idle_us <<<"$cpu"
		printf '%s\t%s\t%s\t%s\tok\t%s\t%s\n' "$w" "$t" "$target" "$r" "$stats" "$cpu" >>"$RESULTS_TSV"
		if ((ign + rec)); then errs=", $ign ignored errors, $rec reconnects"; fi
		log "round $r $w threads=$t $target: $qps qps, p95 $p95 ms, p99 $p99 ms$errs;" \
			"µs/stmt: proxy CPU ${proxy_us/#-/–}, machine busy ${busy_us/#-/–}, idle ${idle_us/#-/–}"
	else
		FAILED=$((FAILED + 1))
		printf '%s\t%s\t%s\t%s\t%s\n' "$w" "$t" "$target" "$r" "$FAIL_COLS" >>"$RESULTS_TSV"
		log "round $r $w threads=$t $target: FAILED; output ($out):"
		{ grep -E 'FATAL|ERROR|error' "$out" | head -n 10 || tail -n 15 "$out"; } >&2
		cat "$out.parse" >&2 2>/dev/null || true
	fi
	if [[ $target == rwproxy && -n $before ]]; then
		# Statements per server during this run (delta of the counters).
		server_questions | awk -v w="$w" -v t="$t" -v r="$r" -F'\t' '
			NR == FNR { b[$1] = $2; next }
			{ printf "%s\t%s\t%s\t%s\t%d\n", w, t, r, $1, $2 - b[$1] }' <(echo "$before") - \
			>>"$ROUTING_TSV"
	fi
	proxy_alive "$target" || true
}

log "warm-up: ${WARMUP}s of oltp_point_select per target"
for target in "${TARGETS[@]}"; do
	if ! sysbench_run oltp_point_select "${THREAD_LIST[0]}" "$target" "$WARMUP" \
		"$WORK/runs/warmup_$target.txt" >/dev/null; then
		FAILED=$((FAILED + 1))
		log "warm-up through $target FAILED:"
		tail -n 15 "$WORK/runs/warmup_$target.txt" >&2
	fi
done
all_alive

for r in $(seq "$ROUNDS"); do
	for w in "${WORKLOAD_LIST[@]}"; do
		for t in "${THREAD_LIST[@]}"; do
			for target in "${TARGETS[@]}"; do
				measure "$w" "$t" "$target" "$r"
				# Writes leave the replicas behind; let them catch up so the
				# next read runs measure reads, not replication apply.
				if [[ $w == oltp_read_write ]]; then wait_replicas; fi
			done
		done
	done
done

log "connection rate: $CONN_N sequential connect + SELECT 1 + close per target, $ROUNDS interleaved round(s)"
for r in $(seq "$ROUNDS"); do
	for target in "${TARGETS[@]}"; do
		port=$(target_port oltp_point_select "$target")
		if res=$("$PY" "$HERE/connrate.py" 127.0.0.1 "$port" app app app "$CONN_N" 2>"$WORK/connrate_$target.err"); then
			printf '%s\tok\t%s\n' "$target" "$res" >>"$CONNRATE_TSV"
			log "round $r connection rate $target: ${res%%$'\t'*} connections/s"
		else
			FAILED=$((FAILED + 1))
			printf '%s\tfail\t0\t0\t0\n' "$target" >>"$CONNRATE_TSV"
			log "round $r connection rate $target FAILED: $(cat "$WORK/connrate_$target.err")"
		fi
	done
done
all_alive

# The same churn from CONN_THREADS concurrent clients (sysbench, C client
# library): connect + close, and connect + SELECT 1 + close; with the proxy's
# CPU per connection.
: "${CONN_THREADS:=8}"
log "concurrent connections: $CONN_THREADS sysbench threads, ${DURATION}s per target, $ROUNDS interleaved round(s)"
for r in $(seq "$ROUNDS"); do
	for q in 0 1; do
		for target in "${TARGETS[@]}"; do
			port=$(target_port oltp_point_select "$target")
			out="$WORK/runs/connect_q${q}_${target}_r${r}.txt"
			pid=$(proxy_pid "$target")
			before=$(cpu_sample "$pid")
			if timeout --kill-after=10 $((DURATION * 3 + 60)) \
				sysbench "$HERE/connect.lua" --db-driver=mysql --mysql-host=127.0.0.1 \
				--mysql-user=app --mysql-password=app --mysql-db=app --mysql-port="$port" \
				--threads="$CONN_THREADS" --time="$DURATION" --query="$q" --report-interval=0 \
				run >"$out" 2>&1 &&
				n=$(awk '/^ *transactions:/ {print $2; exit}' "$out") && [[ $n =~ ^[0-9]+$ ]] && ((n > 0)); then
				echo "$before $(cpu_sample "$pid")" >"$out.cpu"
				IFS=$'\t' read -r pus _ _ <<<"$(cpu_per_stmt "$out.cpu" "$n")"
				rate=$(awk -v n="$n" -v d="$DURATION" 'BEGIN { printf "%.1f", n / d }')
				printf '%s\t%s\tok\t%s\t%s\n' "$target" "$q" "$rate" "$pus" >>"$CONNCONC_TSV"
				log "round $r concurrent connections (query=$q) $target: $rate/s, proxy CPU $pus µs per connection"
			else
				FAILED=$((FAILED + 1))
				printf '%s\t%s\tfail\t0\t-\n' "$target" "$q" >>"$CONNCONC_TSV"
				log "round $r concurrent connections (query=$q) $target FAILED:"
				tail -n 10 "$out" >&2
			fi
		done
	done
done
all_alive

: "${IDLE_N:=$([[ $SMOKE == 1 ]] && echo 500 || echo 10000)}"
log "idle connections: $IDLE_N clients held open through rwproxy"
IDLE_LINE=""
if res=$("$PY" "$HERE/idle_conns.py" 127.0.0.1 "$PROXY_PORT" app app "$IDLE_N" "$RW_PID" 2>"$WORK/idle.err"); then
	IFS=$'\t' read -r idle_n rss_before rss_held idle_secs <<<"$res"
	IDLE_LINE="Idle clients: $idle_n connections held open through rwproxy (opened in ${idle_secs}s): rwproxy RSS $((rss_before / 1024)) MiB before, $((rss_held / 1024)) MiB while held."
	log "$IDLE_LINE"
else
	FAILED=$((FAILED + 1))
	IDLE_LINE="Idle clients: FAILED ($(tail -n 3 "$WORK/idle.err" | tr '\n' ' '))"
	log "$IDLE_LINE"
fi
all_alive

# --- report -------------------------------------------------------------------

REPORT=$("$PY_ANY" "$HERE/report.py" "$RESULTS_TSV" "$ROUTING_TSV" "$CONNRATE_TSV" "$CONNCONC_TSV")
LOG_PROBLEMS=$(strip_ansi "$RWPROXY_LOGFILE" | grep -E '^\S+\s+(WARN|ERROR)' || true)
N_PROBLEMS=$(if [[ -n $LOG_PROBLEMS ]]; then wc -l <<<"$LOG_PROBLEMS"; else echo 0; fi)
BASE_PROBLEMS="" N_BASE_PROBLEMS=0
if [[ -n $BASE_BIN ]]; then
	BASE_PROBLEMS=$(strip_ansi "$BASE_LOGFILE" | grep -E '^\S+\s+(WARN|ERROR)' || true)
	N_BASE_PROBLEMS=$(if [[ -n $BASE_PROBLEMS ]]; then wc -l <<<"$BASE_PROBLEMS"; else echo 0; fi)
fi

printf '\n%s\n\n' "$REPORT"
log "rwproxy log: $N_PROBLEMS WARN/ERROR lines"
if ((N_PROBLEMS)); then head -n 20 <<<"$LOG_PROBLEMS" >&2; fi
if [[ -n $BASE_BIN ]]; then
	log "rwproxy (base binary) log: $N_BASE_PROBLEMS WARN/ERROR lines"
	if ((N_BASE_PROBLEMS)); then head -n 20 <<<"$BASE_PROBLEMS" >&2; fi
fi

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
	commit+=" (with uncommitted changes)"
fi
mkdir -p "$(dirname "$RESULTS_FILE")"
{
	echo "# rwproxy load benchmark$([[ $SMOKE == 1 ]] && echo ' (smoke run: numbers are not meaningful)')"
	echo
	echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	echo "- host: $(nproc) CPUs, $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), everything on one machine"
	echo "- MariaDB: $(sql "$BASE_PORT" 'SELECT VERSION()') (primary + 2 replicas, \`rwproxy sandbox\`)"
	echo "- sysbench: $(sysbench --version)"
	echo "- HAProxy: $(haproxy -v | head -n 1 | awk '{print $3}') (mode tcp, balance roundrobin)"
	echo "- rwproxy: commit $commit, release build"
	if [[ -n $BASE_BIN ]]; then
		echo "  - binary $RW, sha256 $(sha256sum "$RW" | cut -c1-12)"
		echo "- rwproxy (base binary): $BASE_BIN, sha256 $(sha256sum "$BASE_BIN" | cut -c1-12), mtime $(date -u -r "$BASE_BIN" '+%Y-%m-%d %H:%M UTC')"
	fi
	echo "- command: \`$CMDLINE\`"
	echo "- settings: $ROUNDS interleaved round(s) × ${DURATION}s per run, threads \"$THREADS\", $TABLES tables × $TABLE_SIZE rows, \`--db-ps-mode=auto\`, read_write with \`--mysql-ignore-errors=1213,1205\`${SYSBENCH_OPTS:+, extra \`$SYSBENCH_OPTS\`}"
	echo "- percentiles are per sysbench event (a whole transaction for read_only/read_write), from sysbench's latency histogram"
	echo
	echo "$REPORT"
	echo
	echo "$IDLE_LINE"
	echo
	echo "rwproxy log: $N_PROBLEMS WARN/ERROR lines."
	if ((N_PROBLEMS)); then
		echo
		echo '```'
		head -n 20 <<<"$LOG_PROBLEMS"
		echo '```'
	fi
	if [[ -n $BASE_BIN ]]; then
		echo
		echo "rwproxy (base binary) log: $N_BASE_PROBLEMS WARN/ERROR lines."
		if ((N_BASE_PROBLEMS)); then
			echo
			echo '```'
			head -n 20 <<<"$BASE_PROBLEMS"
			echo '```'
		fi
	fi
} >"$RESULTS_FILE"
log "report written to $RESULTS_FILE"

if ((FAILED)); then
	log "$FAILED run(s) failed"
	exit 1
fi

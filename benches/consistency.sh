#!/usr/bin/env bash
# Cost of `consistency = "global"` per read: sysbench oltp_point_select
# through two rwproxy processes in front of the same sandbox, one with
# `consistency = "session"` and one with `consistency = "global"` (configs
# otherwise identical), in interleaved rounds (session, global, session, …),
# so both see the same machine. Reports per round QPS and p95 and the ratios
# global/session, and how many position queries the primary answered.
#
#   benches/consistency.sh     writes benches/results/consistency-global.md
#
# Knobs (environment): ROUNDS=3 DURATION=10 THREADS=8 TABLES=4
#   TABLE_SIZE=10000 BASE_PORT=4510 (primary; replicas +1 +2, proxies +10 +11,
#   their HTTP +12 +13) CAUSAL_WAIT_MS=500 SKIP_BUILD=1 (use
#   target/release/rwproxy as it is) RESULTS_FILE=… KEEP=1.
# Everything it starts is stopped on exit by recorded PID.

set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10} THREADS=${THREADS:-8}
TABLES=${TABLES:-4} TABLE_SIZE=${TABLE_SIZE:-10000} BASE_PORT=${BASE_PORT:-4510}
CAUSAL_WAIT_MS=${CAUSAL_WAIT_MS:-500}
RESULTS_FILE=${RESULTS_FILE:-$ROOT/benches/results/consistency-global.md}
RW=$ROOT/target/release/rwproxy
log() { printf '[consistency] %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 2
}

command -v sysbench >/dev/null || die "sysbench missing (scripts/install-deps.sh)"
if [[ -z ${SKIP_BUILD:-} ]]; then
	(cd "$ROOT" && cargo build --release >&2) || die "build failed"
fi
[[ -x $RW ]] || die "no $RW"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rwproxy-consistency.XXXXXX")
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	"$RW" sandbox down --dir "$WORK/sandbox" >/dev/null 2>&1 || true
	if [[ -z ${KEEP:-} ]]; then rm -rf "$WORK"; else log "kept $WORK"; fi
}
trap cleanup EXIT

sql() {
	local port=$1
	shift
	mariadb --no-defaults --protocol=TCP -h127.0.0.1 -P"$port" -uroot -proot -N -B -e "$*"
}

log "sandbox up in $WORK (primary :$BASE_PORT)"
"$RW" sandbox up --dir "$WORK/sandbox" --base-port "$BASE_PORT" --replicas 2 \
	--proxy-port $((BASE_PORT + 10)) >"$WORK/sandbox-up.log" 2>&1 ||
	die "sandbox up failed: $(tail -n 5 "$WORK/sandbox-up.log")"
CONFIG="$WORK/sandbox/rwproxy.toml"

SB_COMMON=(--db-driver=mysql --mysql-host=127.0.0.1 --mysql-user=app --mysql-password=app
	--mysql-db=app --tables="$TABLES" --table-size="$TABLE_SIZE")
log "sysbench prepare ($TABLES × $TABLE_SIZE)"
sysbench oltp_common "${SB_COMMON[@]}" --mysql-port="$BASE_PORT" --threads="$TABLES" prepare \
	>"$WORK/prepare.log" 2>&1 || die "prepare failed: $(tail -n 5 "$WORK/prepare.log")"
want=$(sql "$BASE_PORT" 'SELECT @@gtid_binlog_pos')
for port in $((BASE_PORT + 1)) $((BASE_PORT + 2)); do
	until [[ $(sql "$port" 'SELECT @@gtid_slave_pos') == "$want" ]]; do sleep 0.2; done
done

# One proxy per mode: the sandbox's config with its own listen ports.
start_proxy() { # mode port http
	local mode=$1 port=$2 http=$3 cfg="$WORK/rwproxy-$1.toml"
	{
		printf 'listen = "127.0.0.1:%s"\nhttp_listen = "127.0.0.1:%s"\n' "$port" "$http"
		printf 'consistency = "%s"\ncausal_wait_ms = %s\n' "$mode" "$CAUSAL_WAIT_MS"
		grep -vE '^[[:space:]]*(listen|http_listen|consistency|causal_wait_ms)[[:space:]]*=' "$CONFIG" |
			awk '/^\[admin\]/{skip=1} /^\[/{if($0!="[admin]")skip=0} !skip'
	} >"$cfg"
	RUST_LOG=warn "$RW" run --config "$cfg" >"$WORK/rwproxy-$mode.log" 2>&1 &
	PIDS+=($!)
	until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.2; done
}
start_proxy session $((BASE_PORT + 10)) $((BASE_PORT + 12))
start_proxy global $((BASE_PORT + 11)) $((BASE_PORT + 13))
sleep 2

# Runs one measurement; prints "qps p95_ms".
run() { # port out
	sysbench oltp_point_select "${SB_COMMON[@]}" --mysql-port="$1" --threads="$THREADS" \
		--time="$DURATION" --percentile=95 --db-ps-mode=auto run >"$2" 2>&1 ||
		die "sysbench failed: $(tail -n 5 "$2")"
	awk '/queries:/ {gsub(/[(]/,""); q=$3} /95th percentile:/ {p=$3} END {print q, p}' "$2"
}

# Warm-up (connections, prepared statements).
run $((BASE_PORT + 10)) "$WORK/warm-s.txt" >/dev/null
run $((BASE_PORT + 11)) "$WORK/warm-g.txt" >/dev/null

rows=()
for r in $(seq 1 "$ROUNDS"); do
	read -r sq sp < <(run $((BASE_PORT + 10)) "$WORK/s$r.txt")
	before=$(sql "$BASE_PORT" "SHOW GLOBAL STATUS LIKE 'Com_select'" | cut -f2)
	read -r gq gp < <(run $((BASE_PORT + 11)) "$WORK/g$r.txt")
	after=$(sql "$BASE_PORT" "SHOW GLOBAL STATUS LIKE 'Com_select'" | cut -f2)
	rows+=("$r $sq $sp $gq $gp $((after - before))")
	log "round $r: session $sq qps p95 $sp ms | global $gq qps p95 $gp ms"
done

{
	echo "# consistency = \"global\" vs \"session\": oltp_point_select"
	echo
	echo "Command: \`benches/consistency.sh\` (ROUNDS=$ROUNDS DURATION=$DURATION THREADS=$THREADS TABLES=$TABLES TABLE_SIZE=$TABLE_SIZE CAUSAL_WAIT_MS=$CAUSAL_WAIT_MS), $(date -u +%Y-%m-%d), commit $(cd "$ROOT" && git rev-parse --short HEAD)."
	echo "Sandbox: MariaDB $(sql "$BASE_PORT" 'SELECT VERSION()') primary + 2 replicas, all on this machine ($(nproc) cores, shared with other builds); sysbench $(sysbench --version | cut -d' ' -f2), $THREADS threads, prepared statements."
	echo "Two rwproxy processes (configs identical except \`consistency\`) run side by side; rounds interleave session and global."
	echo
	echo "| round | session QPS | session p95 ms | global QPS | global p95 ms | QPS global/session | p95 global/session | primary Com_select during the global run |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
	for row in "${rows[@]}"; do
		read -r r sq sp gq gp pc <<<"$row"
		printf '| %s | %s | %s | %s | %s | %.2f | %.2f | %s |\n' "$r" "$sq" "$sp" "$gq" "$gp" \
			"$(echo "$gq / $sq" | bc -l)" "$(echo "$gp / $sp" | bc -l)" "$pc"
	done
} >"$RESULTS_FILE"
cat "$RESULTS_FILE"

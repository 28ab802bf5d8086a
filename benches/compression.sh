#!/usr/bin/env bash
# Compression cost and savings, each leg on its own: bytes on the wire and
# rwproxy CPU per statement for sysbench oltp_point_select (8 threads) and
# for a 100,000-row result read with the `mariadb` CLI, in four set-ups:
#   client leg plain / zlib  ×  server leg plain / zlib ([[servers]] compression)
#
#   benches/compression.sh      writes benches/results/compression.md
#
# Bytes: the client leg from the proxy's own socket counters
# (rwproxy_client_bytes_total, counted on the wire, after compression); the
# server leg from the servers' own counters (global Bytes_sent +
# Bytes_received of all three, which MariaDB counts on the wire, after
# compression; the monitor's few queries per second are in it, the same in
# every set-up; no writes run, so no replication traffic). CPU: utime + stime of the proxy process (/proc/PID/stat) around
# each run, divided by the statements completed. Two rwproxy processes run
# side by side (server leg plain and zlib); every run alternates them, and
# ROUNDS rounds are interleaved, medians reported.
#
# Knobs: ROUNDS=3 DURATION=10 BASE_PORT=4410 SKIP_BUILD=1 KEEP=1
set -euo pipefail
cd "$(dirname "$0")/.."
: "${ROUNDS:=3}" "${DURATION:=10}" "${BASE_PORT:=4410}" "${THREADS:=8}"
RESULTS_FILE=${RESULTS_FILE:-benches/results/compression.md}
WORK=$(mktemp -d /tmp/rwproxy-comp.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	[ -x "${RW:-}" ] && "$RW" sandbox down --dir "$WORK/sandbox" >/dev/null 2>&1 || true
	[ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

scripts/install-deps.sh >/dev/null
if [ -z "${SKIP_BUILD:-}" ]; then cargo build --release --workspace --quiet; fi
RW=${RWPROXY_BIN:-target/release/rwproxy}
"$RW" sandbox up --dir "$WORK/sandbox" --base-port "$BASE_PORT" --replicas 2 \
	--proxy-port $((BASE_PORT + 10)) >"$WORK/sandbox.log" 2>&1
P=$BASE_PORT
SB=(--db-driver=mysql --mysql-host=127.0.0.1 --mysql-user=app --mysql-password=app
	--mysql-db=app --tables=4 --table-size=10000)
sysbench oltp_common "${SB[@]}" --mysql-port="$P" --threads=4 prepare >"$WORK/prepare.log" 2>&1
sleep 2

# Two proxies: server leg plain (port +10) and zlib (port +20).
start_proxy() { # port http_port compression; sets STARTED (its PID)
	local cfg="$WORK/proxy-$1.toml"
	sed -e "s/^listen = .*/listen = \"127.0.0.1:$1\"/" \
		-e "s/^http_listen = .*/http_listen = \"127.0.0.1:$2\"/" \
		-e '/^\[admin\]/,/^$/d' "$WORK/sandbox/rwproxy.toml" >"$cfg"
	if [ "$3" = zlib ]; then
		sed -i 's/^role = \(.*\)$/role = \1\ncompression = "zlib"/' "$cfg"
	fi
	"$RW" run --config "$cfg" >"$WORK/proxy-$1.log" 2>&1 &
	STARTED=$!
	PIDS+=("$STARTED")
}
PLAIN_PORT=$((P + 10)) ZLIB_PORT=$((P + 20))
start_proxy $PLAIN_PORT $((P + 11)) off
PLAIN_PID=$STARTED
start_proxy $ZLIB_PORT $((P + 21)) zlib
ZLIB_PID=$STARTED
for port in $PLAIN_PORT $ZLIB_PORT; do
	for _ in $(seq 50); do mariadb -h127.0.0.1 -P$port -uapp -papp -e 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
done
for pid in $PLAIN_PID $ZLIB_PID; do
	kill -0 "$pid" 2>/dev/null || { log "a proxy exited: $(tail -n 3 "$WORK"/proxy-*.log)"; exit 1; }
done

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
server_bytes() {
	local port s=0 v
	for port in $P $((P + 1)) $((P + 2)); do
		v=$(mariadb -h127.0.0.1 -P"$port" -uroot -proot -N -e \
			"SELECT SUM(VARIABLE_VALUE) FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME IN ('BYTES_SENT', 'BYTES_RECEIVED')")
		s=$((s + v))
	done
	echo $s
}
client_bytes() { curl -s "http://127.0.0.1:$1/metrics" | awk '/^rwproxy_client_bytes_total/ {s += $2} END {printf "%d", s}'; }
HZ=$(getconf CLK_TCK)

# measure NAME PID HTTP_PORT STATEMENTS_CMD... → prints name, stmts, cpu, client bytes, server bytes
measure() {
	local name=$1 pid=$2 http=$3
	shift 3
	local t0 i0 c0 t1 i1 c1 n
	t0=$(ticks "$pid"); i0=$(server_bytes); c0=$(client_bytes "$http")
	n=$("$@")
	t1=$(ticks "$pid"); i1=$(server_bytes); c1=$(client_bytes "$http")
	local cb=$((c1 - c0)) sb=$((i1 - i0))
	[ -n "${DEBUG:-}" ] && log "$name: pid $pid ticks $t0 -> $t1"
	awk -v name="$name" -v n="$n" -v t=$((t1 - t0)) -v hz="$HZ" -v cb=$cb -v sb=$sb \
		'BEGIN {printf "%s\t%d\t%.1f\t%.0f\t%.0f\n", name, n, t * 1e6 / hz / n, cb / n, sb / n}'
}
point_select() { # port compression(on|off)
	sysbench oltp_point_select "${SB[@]}" --mysql-port="$1" --threads="$THREADS" --time="$DURATION" \
		--mysql-compression="$2" --report-interval=0 run 2>&1 |
		awk '/queries:/ {print $2; exit}'
}
big_result() { # port compress-flag
	local i
	for i in 1 2 3; do
		mariadb -h127.0.0.1 -P"$1" -uapp -papp app -N $2 \
			-e 'SELECT seq, REPEAT(CHAR(65 + seq % 26), seq % 300) FROM seq_1_to_100000' >/dev/null
	done
	echo 3
}

RAW="$WORK/raw.tsv"
: >"$RAW"
for round in $(seq "$ROUNDS"); do
	log "round $round/$ROUNDS"
	for client in off on; do
		for leg in plain zlib; do
			if [ $leg = plain ]; then pid=$PLAIN_PID port=$PLAIN_PORT http=$((P + 11)); else pid=$ZLIB_PID port=$ZLIB_PORT http=$((P + 21)); fi
			flag=""; [ $client = on ] && flag=--compress
			measure "point_select client=$client server=$leg" "$pid" "$http" point_select "$port" "$client" >>"$RAW"
			measure "100k rows client=$client server=$leg" "$pid" "$http" big_result "$port" "$flag" >>"$RAW"
		done
	done
done

median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
{
	echo "# Compression: bytes on the wire and rwproxy CPU per statement"
	echo
	echo "\`benches/compression.sh\`, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD), $ROUNDS interleaved rounds, medians."
	echo "point_select: sysbench oltp_point_select, $THREADS threads, ${DURATION}s, \`--mysql-compression\` for the client leg."
	echo "100k rows: \`mariadb [--compress] -e 'SELECT seq, REPEAT(CHAR(65 + seq % 26), seq % 300) FROM seq_1_to_100000'\` (~16 MB of text), per result."
	echo
	echo "| workload | client leg | server leg | proxy CPU µs/stmt | client-leg bytes/stmt | server-leg bytes/stmt |"
	echo "| --- | --- | --- | ---: | ---: | ---: |"
	cut -f1 "$RAW" | awk '!seen[$0]++' | while read -r name; do
		rows=$(awk -F'\t' -v n="$name" '$1 == n' "$RAW")
		cpu=$(cut -f3 <<<"$rows" | median) cb=$(cut -f4 <<<"$rows" | median) sb=$(cut -f5 <<<"$rows" | median)
		w=${name% client=*} c=${name#* client=}; c=${c% server=*}; s=${name##* server=}
		[ "$c" = on ] && c=zlib || c=plain
		printf '| %s | %s | %s | %s | %s | %s |\n' "$w" "$c" "$s" "$cpu" "$cb" "$sb"
	done
} | tee "$RESULTS_FILE"

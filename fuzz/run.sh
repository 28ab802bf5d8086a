#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECS seconds each, one after
# the other, at low priority, and appends libFuzzer's final lines to
# fuzz/logs/<target>.log. Usage: fuzz/run.sh [SECS] [target...]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(packet handshake command classify set compress)
mkdir -p logs
max_len() {
  case $1 in
    packet | compress) echo 1048576 ;;
    *) echo 65536 ;;
  esac
}
for t in "${targets[@]}"; do
  echo "== $t: ${secs}s" >&2
  nice -n 10 cargo +nightly fuzz run -O -a "$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
    -max_len="$(max_len "$t")" -print_final_stats=1 \
    > "logs/$t.log" 2>&1 || { echo "$t FAILED (see fuzz/logs/$t.log)" >&2; exit 1; }
  grep -E "^(#[0-9]+\s+DONE|Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb|stat::new_units_added)" "logs/$t.log" >&2 || true
done

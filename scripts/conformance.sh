#!/usr/bin/env bash
# Conformance: other projects' test suites run both directly against the
# primary of a replicated sandbox and through rwproxy in front of it, with the
# default configuration (issue 16, item 10):
#   mtr     MariaDB's mysql-test-run `main` suite in --extern mode, over the
#           curated list conformance/mtr-main.txt (exclusions, each with its
#           reason: conformance/mtr-excluded.txt);
#   go      go-sql-driver/mysql's own tests (Debian golang-github-go-sql-driver-mysql-dev);
#   python  mysql-connector-python's unittests.py (PyPI sdist, pinned in
#           scripts/install-deps.sh) with --use-external-server.
# Each suite and each way gets a fresh sandbox (`rwproxy sandbox up`) and a
# fresh rwproxy, so no run sees what another left behind. Prints, per suite,
# pass/fail/skip directly and through rwproxy and the ratio of the pass
# counts; writes conformance/results/latest.md (or quick.md) and keeps the
# raw logs under target/conformance/.
#
# Usage: scripts/conformance.sh [--quick] [--select] [--suites "mtr go python"]
#                               [--ways "direct rwproxy"] [--mtr-list FILE]
#   --quick   the CI subset (conformance/*-quick.txt; at most 5 minutes): fails
#             when a test that passes directly fails through rwproxy and is not
#             listed in conformance/known-differences.md, or when the ratio of
#             a suite falls below conformance/quick-baseline.txt
#   --select  run every static candidate of `main` directly only and print the
#             curated list (how conformance/mtr-main.txt was made)
# Environment: CONFORMANCE_WORK (default target/conformance: logs, sandbox),
# CONFORMANCE_BASE_PORT (default 5600: primary; replicas follow,
# rwproxy listens on base+100, admin base+99, HTTP base+3100),
# CONFORMANCE_MTR_ARGS (more options for conformance/mtr-run.py, e.g.
# `--only-passing-in LOG` to skip what a direct run has seen fail).
set -euo pipefail

# The whole script is one function, parsed before it runs: editing this file
# while a run is under way cannot change what that run does.
main() {
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

quick=0
select=0
suites="mtr go python"
ways="direct rwproxy"
mtr_list=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --select) select=1; suites="mtr" ;;
    --suites) suites="$2"; shift ;;
    --ways) ways="$2"; shift ;;
    --mtr-list) mtr_list="$2"; shift ;;
    *) echo "usage: $0 [--quick] [--select] [--suites \"mtr go python\"] [--ways \"direct rwproxy\"] [--mtr-list FILE]" >&2; exit 2 ;;
  esac
  shift
done

conf="$root/conformance"
work="${CONFORMANCE_WORK:-$root/target/conformance}"
base_port="${CONFORMANCE_BASE_PORT:-5600}"
proxy_port=$((base_port + 100))
mtr_dir=/usr/share/mysql/mysql-test
gosrc=/usr/share/gocode/src/github.com/go-sql-driver/mysql
py_version="$(sed -n 's/^MYSQL_CONNECTOR_VERSION=//p' scripts/install-deps.sh)"
rwproxy="$root/target/release/rwproxy"
sb="$work/sandbox"
proxy_pid=""

for need in "$mtr_dir/mtr" "$gosrc/driver.go" "$root/.venv-tools/bin/python"; do
  [ -e "$need" ] || { echo "conformance: $need missing: run scripts/install-deps.sh" >&2; exit 1; }
done
command -v go >/dev/null || { echo "conformance: go missing: run scripts/install-deps.sh" >&2; exit 1; }
cargo build --release --workspace --quiet
mkdir -p "$work" "$conf/results"

sql() { # sql PORT [args...]: the mariadb CLI as root (no password after prep)
  local port=$1; shift
  mariadb --no-defaults -h127.0.0.1 -P"$port" -uroot "$@"
}

stop_all() {
  if [ -n "$proxy_pid" ]; then
    kill "$proxy_pid" 2>/dev/null || true
    wait "$proxy_pid" 2>/dev/null || true
    proxy_pid=""
  fi
  if [ -d "$sb" ]; then
    "$rwproxy" sandbox down --dir "$sb" >/dev/null 2>&1 || true
  fi
}
trap stop_all EXIT

# A new sandbox, prepared as mysql-test-run prepares the servers it starts
# itself, and a new rwproxy in front of it with the generated (default)
# configuration. $1 names the suite (python gets bounded lock waits).
fresh_sandbox() {
  local suite=$1 p
  stop_all
  rm -rf "$sb"
  "$rwproxy" sandbox up --dir "$sb" --base-port "$base_port" --proxy-port "$proxy_port" >"$work/sandbox-up.log" 2>&1
  mariadb --no-defaults -h127.0.0.1 -P"$base_port" -uroot -proot <"$conf/mtr-accounts.sql"
  sql "$base_port" mysql <"/usr/share/mysql/mysql_test_data_timezone.sql"
  # mysql-test-run's own schema `mtr` (mtr.add_suppression, check_testcase);
  # the files use mysqltest's `delimiter X;` spelling.
  for f in mtr_warnings.sql mtr_check.sql; do
    sed -E -e 's/^delimiter (.*);$/delimiter \1/' -e '/^ *--SELECT/d' "$mtr_dir/include/$f" | sql "$base_port" mtr >/dev/null
  done
  sql "$base_port" -e "CREATE DATABASE IF NOT EXISTS gotest; CREATE DATABASE IF NOT EXISTS myconnpy"
  for p in "$base_port" $((base_port + 1)) $((base_port + 2)); do
    # The drivers' suites expect a server's own defaults (InnoDB, utf8mb4):
    # mysql-test-run's settings are for mtr only.
    if [ "$suite" = mtr ]; then
      sql "$p" <"$conf/mtr-server-prep.sql"
    fi
    if [ "$suite" = python ]; then
      # unittests.py's PEP 249 isolation test leaves a transaction open and
      # then drops its table from another connection: without a bound the
      # metadata-lock wait lasts a day (lock_wait_timeout's default).
      sql "$p" -e "SET GLOBAL lock_wait_timeout = 20"
    fi
  done
  # ANALYZE TABLE (use_stat_tables = PREFERABLY, as mtr sets it) fills
  # mysql.column_stats on each server by itself, so a later row event that
  # deletes a primary's statistics row finds no such row on a replica and
  # stops replication (1032; seen with main.selectivity_innodb_notembedded).
  # The replicas of this test sandbox skip such events.
  if [ "$suite" = mtr ]; then
    for p in $((base_port + 1)) $((base_port + 2)); do
      sql "$p" -e "STOP SLAVE SQL_THREAD; SET GLOBAL slave_exec_mode = 'IDEMPOTENT'; START SLAVE SQL_THREAD"
    done
  fi
  # The replicas have applied the preparation before any test starts.
  local pos
  pos=$(sql "$base_port" -N -e "SELECT @@gtid_binlog_pos")
  for p in $((base_port + 1)) $((base_port + 2)); do
    sql "$p" -N -e "SELECT MASTER_GTID_WAIT('$pos', 30)" | grep -qx 0 || { echo "conformance: replica $p did not catch up" >&2; exit 1; }
  done
  "$rwproxy" run --config "$sb/rwproxy.toml" --log-color never >>"$work/rwproxy.log" 2>&1 &
  proxy_pid=$!
  local deadline=$((SECONDS + 30))
  until sql "$proxy_port" -N -e "SELECT 1" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "conformance: rwproxy did not start (see $work/rwproxy.log)" >&2; exit 1; }
    sleep 0.2
  done
}

port_of() { if [ "$1" = direct ]; then echo "$base_port"; else echo "$proxy_port"; fi; }

# mysql-test-run against an --extern server, one test at a time (the tests
# share the database `test`, so --parallel is not an option), no retries;
# conformance/mtr-run.py cleans the servers after each failure.
run_mtr() {
  local way=$1 list=$2 port
  port=$(port_of "$way")
  fresh_sandbox mtr
  rm -rf "$work/mtr-$way"
  /usr/bin/python3 "$conf/mtr-run.py" --mtr-dir "$mtr_dir" --vardir "$work/mtr-$way" \
    --port "$port" --primary "$base_port" --replica $((base_port + 1)) --replica $((base_port + 2)) \
    --list "$list" --log "$work/mtr-$way.log" ${CONFORMANCE_MTR_ARGS:-}
}

# go-sql-driver/mysql's tests in a copy of Debian's source (no network: the
# module has no dependencies). Go 1.19 has no -skip: the excluded tests are
# left out of an explicit -run list.
run_go() {
  local way=$1 list=$2 port names
  port=$(port_of "$way")
  fresh_sandbox go
  rm -rf "$work/go/src"
  mkdir -p "$work/go"
  cp -r "$gosrc" "$work/go/src"
  chmod -R u+w "$work/go/src"
  names=$(grep -v '^#' "$list" | sed 's/[[:space:]]*#.*//' | grep . | paste -sd'|')
  (cd "$work/go/src" && GOCACHE="$work/go/cache" GOPATH="$work/go/gopath" GO111MODULE=on \
    GOFLAGS=-mod=mod GOPROXY=off MYSQL_TEST_ADDR="127.0.0.1:$port" MYSQL_TEST_USER=root \
    MYSQL_TEST_PASS= MYSQL_TEST_DBNAME=gotest go test -v -count=1 -timeout 20m -run "^($names)\$" .) \
    >"$work/go-$way.log" 2>&1 || true
}

# mysql-connector-python's unittests.py from the sdist of the pinned
# version, with the project's venv (which has that version installed).
run_python() {
  local way=$1 regex=$2 port srcdir
  port=$(port_of "$way")
  srcdir="$work/python/mysql_connector_python-$py_version"
  if [ ! -f "$srcdir/unittests.py" ]; then
    mkdir -p "$work/python"
    "$root/.venv-tools/bin/pip" download --quiet --disable-pip-version-check --no-binary :all: \
      --no-deps -d "$work/python" "mysql-connector-python==$py_version"
    tar -xzf "$work/python/mysql_connector_python-$py_version.tar.gz" -C "$work/python"
  fi
  fresh_sandbox python
  (cd "$srcdir" && timeout 1800 "$root/.venv-tools/bin/python" unittests.py --use-external-server \
    --host 127.0.0.1 --port "$port" --user root --password '' --verbosity 2 -r "$regex") \
    >"$work/python-$way.log" 2>&1 || true
}

started=$SECONDS
for suite in $suites; do
  case "$suite" in
    mtr)
      if [ $select = 1 ]; then
        rm -f "$work/mtr-static-excluded.txt"
        /usr/bin/python3 "$conf/mtr-select.py" "$mtr_dir" "$work/mtr-static-excluded.txt" >"$work/mtr-candidates.txt"
        run_mtr direct "$work/mtr-candidates.txt"
        continue
      fi
      list="$conf/mtr-main.txt"
      [ $quick = 1 ] && list="$conf/mtr-quick.txt"
      [ -n "$mtr_list" ] && list="$mtr_list"
      for way in $ways; do
        t0=$SECONDS; run_mtr "$way" "$list"; echo "mtr $way: $((SECONDS - t0)) s"
      done
      ;;
    go)
      list="$conf/go-tests.txt"
      [ $quick = 1 ] && list="$conf/go-quick.txt"
      for way in $ways; do
        t0=$SECONDS; run_go "$way" "$list"; echo "go $way: $((SECONDS - t0)) s"
      done
      ;;
    python)
      regex="$(grep -v '^#' "$conf/python-modules.txt" | sed 's/[[:space:]]*#.*//' | grep . | paste -sd'|')"
      [ $quick = 1 ] && regex="$(grep -v '^#' "$conf/python-quick.txt" | sed 's/[[:space:]]*#.*//' | grep . | paste -sd'|')"
      for way in $ways; do
        t0=$SECONDS; run_python "$way" "^($regex)\$"; echo "python $way: $((SECONDS - t0)) s"
      done
      ;;
    *) echo "conformance: unknown suite $suite" >&2; exit 2 ;;
  esac
done
stop_all
elapsed=$((SECONDS - started))

if [ $select = 1 ]; then
  /usr/bin/python3 "$conf/report.py" select --work "$work" --conf "$conf"
  exit 0
fi
mode=full
[ $quick = 1 ] && mode=quick
/usr/bin/python3 "$conf/report.py" "$mode" --work "$work" --conf "$conf" --suites "$suites" \
  --elapsed "took $elapsed s" --commit "$(git rev-parse --short HEAD)"
}

main "$@"

#!/usr/bin/env bash
# The demo: a local MariaDB primary + 2 replicas (GTID replication) with
# rwproxy in front. Ctrl-C stops rwproxy; `target/release/rwproxy sandbox
# down --dir "$DIR"` stops the servers.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${DIR:-$PWD/.sandbox}"

scripts/install-deps.sh
cargo build --release --workspace --quiet
bin=target/release/rwproxy
$bin sandbox up --dir "$DIR" --replicas 2
echo
echo "rwproxy:  mariadb -h127.0.0.1 -P6033 -uapp -papp app"
echo "admin:    mariadb -h127.0.0.1 -P6032 -uadmin -padmin -e 'SHOW SERVERS'"
echo "metrics:  curl -s http://127.0.0.1:9033/metrics | head"
echo "stop:     Ctrl-C here, then: $bin sandbox down --dir $DIR"
echo
exec $bin run --config "$DIR/rwproxy.toml"

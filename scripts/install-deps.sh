#!/usr/bin/env bash
# Installs what rwproxy's demo, tests and benchmarks need from the distro,
# only if missing: MariaDB server + client, PyMySQL, sysbench, HAProxy.
# Usage: scripts/install-deps.sh [--bench]
set -euo pipefail

need=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || need+=(mariadb-client)
command -v mariadb-install-db >/dev/null 2>&1 || [ -x /usr/bin/mariadb-install-db ] || need+=(mariadb-server)
/usr/bin/python3 -c 'import pymysql' >/dev/null 2>&1 || need+=(python3-pymysql)
command -v sysbench >/dev/null 2>&1 || need+=(sysbench)
if [ "${1:-}" = "--bench" ]; then
  command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
  command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
fi

if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  # The Debian package does not need its own server running: rwproxy's
  # sandbox starts private instances. policy-rc.d-style refusals to start
  # the system service are harmless here.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo (Rust >= 1.85, edition 2024) is required: https://rustup.rs" >&2
  exit 1
fi

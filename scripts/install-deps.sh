#!/usr/bin/env bash
# Installs what rwproxy's demo, tests and benchmarks need from the distro,
# only if missing: MariaDB server + client, PyMySQL, sysbench, HAProxy; and
# what scripts/conformance.sh needs: mariadb-test, golang-go,
# golang-github-go-sql-driver-mysql-dev; and
# what scripts/validate-deploy.sh needs: promtool (Debian `prometheus`),
# docker-compose, and kubernetes-validate (PyPI, pinned) in the project
# venv .venv-tools, made with Debian's /usr/bin/python3.
# Usage: scripts/install-deps.sh [--bench]
set -euo pipefail

need=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || need+=(mariadb-client)
command -v mariadb-install-db >/dev/null 2>&1 || [ -x /usr/bin/mariadb-install-db ] || need+=(mariadb-server)
/usr/bin/python3 -c 'import pymysql' >/dev/null 2>&1 || need+=(python3-pymysql)
command -v sysbench >/dev/null 2>&1 || need+=(sysbench)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
/usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# scripts/conformance.sh: MariaDB's mysql-test-run (`main` suite), Go and
# go-sql-driver/mysql's source with its tests.
[ -x /usr/share/mysql/mysql-test/mtr ] || need+=(mariadb-test)
command -v go >/dev/null 2>&1 || need+=(golang-go)
[ -f /usr/share/gocode/src/github.com/go-sql-driver/mysql/driver_test.go ] || need+=(golang-github-go-sql-driver-mysql-dev)
if [ "${1:-}" = "--bench" ]; then
  command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
fi
# Only promtool is wanted from this package: without recommends it pulls in
# no exporters (and policy-rc.d or the absence of systemd keeps its service
# from starting).
need_norec=()
command -v promtool >/dev/null 2>&1 || need_norec+=(prometheus)

if [ $((${#need[@]} + ${#need_norec[@]})) -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "installing: ${need[*]} ${need_norec[*]}"
  $sudo apt-get update -qq
  # The Debian package does not need its own server running: rwproxy's
  # sandbox starts private instances. policy-rc.d-style refusals to start
  # the system service are harmless here.
  if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  if [ ${#need_norec[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_norec[@]}" >/dev/null
  fi
fi

# The project's Python tools, in the venv .venv-tools made with Debian's
# /usr/bin/python3, each pinned: kubernetes-validate ships the Kubernetes
# API schemas inside its wheel (see scripts/validate-deploy.sh for why this
# validator); mysql-connector-python is a client the tests drive through
# rwproxy (compression, tests/compression.rs); scripts/conformance.sh runs
# the unittests.py of this same version's sdist (downloaded by that script).
KUBERNETES_VALIDATE_VERSION=1.37.0
MYSQL_CONNECTOR_VERSION=26.10.0
venv="$(cd "$(dirname "$0")/.." && pwd)/.venv-tools"
[ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -qF "$KUBERNETES_VALIDATE_VERSION"; then
  echo "installing: kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into $venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
if ! "$venv/bin/python" -c "import mysql.connector, sys; sys.exit(mysql.connector.__version__ != '$MYSQL_CONNECTOR_VERSION')" 2>/dev/null; then
  echo "installing: mysql-connector-python==$MYSQL_CONNECTOR_VERSION into $venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "mysql-connector-python==$MYSQL_CONNECTOR_VERSION"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo (Rust >= 1.85, edition 2024) is required: https://rustup.rs" >&2
  exit 1
fi

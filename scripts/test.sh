#!/usr/bin/env bash
# The whole test suite: validation of deploy/ and docker/, unit tests,
# integration tests against real MariaDB sandboxes (started and stopped by
# the tests themselves), the conformance subset, and a CI-sized smoke run of
# the load harness.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --bench
# Kubernetes manifests, alert rules, dashboard, compose file: offline, fast.
scripts/validate-deploy.sh
# A Debian sid chroot with MySQL 9.7 (client and server), created once and
# reused: tests that need a real MySQL program run it from there.
scripts/mysql-chroot.sh >/dev/null
# Integration tests start several MariaDB servers each; run test binaries
# one at a time and keep two test threads per binary on a 2-core machine.
# The sandbox program (`rwproxy sandbox …` runs it) is a workspace member.
cargo build --release --workspace
cargo test --release --workspace --no-fail-fast -- --test-threads=2
# Conformance subset (at most 5 minutes): MariaDB's own mysql-test-run tests
# and two drivers' test suites, directly and through rwproxy; fails when a
# test that passes directly fails through rwproxy and is not listed in
# conformance/known-differences.md. The full run: scripts/conformance.sh.
scripts/conformance.sh --quick
if [ -x benches/load.sh ]; then
  SMOKE=1 benches/load.sh
fi

#!/usr/bin/env bash
# Offline validation of deploy/ and docker/ (no cluster, no Docker engine,
# no network). Installs nothing: scripts/install-deps.sh provides
#   - promtool (Debian package `prometheus`): alert rules, their unit tests,
#     docker/prometheus.yml;
#   - kubernetes-validate (PyPI, pinned, in the project venv .venv-tools made
#     with Debian's /usr/bin/python3): the Kubernetes manifests against the
#     API's JSON schemas. Chosen because its wheel ships the schemas of every
#     Kubernetes release from 1.25 to 1.37 (strict variants reject unknown
#     fields), so it needs no download at run time; kubeconform and kubeval
#     fetch schemas from GitHub, which CI cannot reach;
#   - docker-compose (Debian package): `config` parses docker/compose.yml.
# Usage: scripts/validate-deploy.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-tools
# Oldest and newest API versions the manifests are checked against
# (unhealthyPodEvictionPolicy in the PDB needs 1.27).
K8S_VERSIONS="1.27.0 1.37.0"

fail() {
  echo "validate-deploy: FAILED: $*" >&2
  exit 1
}
step() { echo "== $*"; }

command -v promtool >/dev/null || fail "promtool not found: run scripts/install-deps.sh (Debian package prometheus)"
command -v docker-compose >/dev/null || fail "docker-compose not found: run scripts/install-deps.sh"
[ -x "$VENV/bin/kubernetes-validate" ] || fail "$VENV/bin/kubernetes-validate not found: run scripts/install-deps.sh"

step "Kubernetes manifests against the API schemas (strict) of $K8S_VERSIONS"
for v in $K8S_VERSIONS; do
  out=$("$VENV/bin/kubernetes-validate" --strict -k "$v" deploy/kubernetes/*.yaml 2>&1) || {
    echo "$out" >&2
    fail "kubernetes-validate $v"
  }
  echo "$out"
  # An unknown kind or apiVersion is only a warning to the tool: here it is
  # an error, since nothing would have been checked.
  if grep -qE '^(WARN|ERROR)' <<<"$out"; then
    fail "kubernetes-validate $v reported warnings"
  fi
done

step "Kubernetes manifests agree with each other and with the ConfigMap's rwproxy.toml"
"$VENV/bin/python" scripts/check-k8s.py || fail "scripts/check-k8s.py"

rwproxy_bin=${RWPROXY_BIN:-target/release/rwproxy}
if [ -x "$rwproxy_bin" ]; then
  step "ConfigMap's rwproxy.toml through rwproxy check-config ($rwproxy_bin)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # The secret files the config names, with dummy contents, under $tmp.
  "$VENV/bin/python" - "$tmp" <<'PY' || fail "extracting rwproxy.toml from the ConfigMap"
import sys, yaml
tmp = sys.argv[1]
cm = yaml.safe_load(open("deploy/kubernetes/configmap.yaml"))
toml = cm["data"]["rwproxy.toml"].replace("/etc/rwproxy-secrets/", tmp + "/")
open(tmp + "/rwproxy.toml", "w").write(toml)
sec = yaml.safe_load(open("deploy/kubernetes/secret.yaml"))
for k in sec["stringData"]:
    open(f"{tmp}/{k}", "w").write("x\n")
PY
  RUST_BACKTRACE=0 "$rwproxy_bin" check-config "$tmp/rwproxy.toml" || fail "rwproxy check-config rejects the ConfigMap's rwproxy.toml"
else
  step "skipped: rwproxy check-config of the ConfigMap ($rwproxy_bin not built yet)"
fi

step "Prometheus alert rules: syntax and unit tests"
promtool check rules deploy/prometheus/rwproxy-alerts.yml || fail "promtool check rules"
(cd deploy/prometheus && promtool test rules rwproxy-alerts.test.yml) || fail "promtool test rules"

step "docker/prometheus.yml with the rules where compose.yml mounts them"
ptmp=$(mktemp -d)
cp docker/prometheus.yml "$ptmp/prometheus.yml"
mkdir "$ptmp/rules"
cp deploy/prometheus/rwproxy-alerts.yml "$ptmp/rules/"
promtool check config "$ptmp/prometheus.yml" || { rm -rf "$ptmp"; fail "promtool check config docker/prometheus.yml"; }
rm -rf "$ptmp"

step "Dashboard and rules use only metrics rwproxy exports; dashboard queries parse"
/usr/bin/python3 scripts/check-metric-names.py || fail "scripts/check-metric-names.py"

step "docker/compose.yml"
docker-compose -f docker/compose.yml config -q || fail "docker-compose config"
for f in docker/grafana/provisioning/*/*.yml; do
  "$VENV/bin/python" -c 'import sys, yaml; yaml.safe_load(open(sys.argv[1]))' "$f" || fail "$f is not YAML"
done

echo "validate-deploy: all checks passed"

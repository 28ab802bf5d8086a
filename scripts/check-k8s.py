#!/usr/bin/env python3
"""What a JSON schema cannot see in deploy/kubernetes/: the manifests agree
with each other and with the rwproxy.toml inside the ConfigMap.

- terminationGracePeriodSeconds > preStop sleep + shutdown_timeout_ms, so
  the kubelet's SIGKILL never cuts a drain short;
- liveness on /live (never the databases), readiness on /health;
- the ports rwproxy listens on are the container's ports, and the Services'
  target ports exist;
- every `*_file` secret path is a key of the mounted Secret.

Run by scripts/validate-deploy.sh with the tools venv's Python (PyYAML;
tomllib needs Python >= 3.11).
"""
import sys
import tomllib

import yaml

K8S = "deploy/kubernetes"
errors = []


def load(name):
    """The file's documents by kind and by kind/name."""
    with open(f"{K8S}/{name}", encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {d["kind"]: d for d in docs}
    return by_kind | {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def check(cond, msg):
    if not cond:
        errors.append(msg)


dep = load("deployment.yaml")["Deployment"]
cm = load("configmap.yaml")["ConfigMap"]
secret = load("secret.yaml")["Secret"]
services = load("service.yaml")
pdb = load("pdb.yaml")["PodDisruptionBudget"]

conf = tomllib.loads(cm["data"]["rwproxy.toml"])
pod = dep["spec"]["template"]["spec"]
(c,) = [c for c in pod["containers"] if c["name"] == "rwproxy"]

# Drain fits in the grace period.
grace = pod["terminationGracePeriodSeconds"]
cmd = c["lifecycle"]["preStop"]["exec"]["command"]
check(cmd[0] == "/bin/sleep" and len(cmd) == 2, f"preStop should be [/bin/sleep, N], is {cmd}")
pre_stop = float(cmd[-1])
shutdown = conf.get("shutdown_timeout_ms", 30000) / 1000
check(
    grace > pre_stop + shutdown,
    f"terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop} s + shutdown_timeout_ms {shutdown} s",
)

# Probes.
check(c["livenessProbe"]["httpGet"]["path"] == "/live", "livenessProbe must use /live (independent of the databases)")
check(c["readinessProbe"]["httpGet"]["path"] == "/health", "readinessProbe must use /health")

# Ports.
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
listen_port = int(conf["listen"].rsplit(":", 1)[1])
http_port = int(conf["http_listen"].rsplit(":", 1)[1])
check(ports.get("mysql") == listen_port, f"container port mysql {ports.get('mysql')} != listen {conf['listen']}")
check(ports.get("http") == http_port, f"container port http {ports.get('http')} != http_listen {conf['http_listen']}")
for probe in ("livenessProbe", "readinessProbe"):
    check(c[probe]["httpGet"]["port"] in ports, f"{probe} port is not a container port")
check(not conf["listen"].startswith("127."), "listen must not be loopback in a pod")
check(not conf["http_listen"].startswith("127."), "http_listen must not be loopback (probes, Prometheus)")
labels = dep["spec"]["template"]["metadata"]["labels"]
for key, svc in services.items():
    if "/" not in key:
        continue
    for p in svc["spec"]["ports"]:
        check(p["targetPort"] in ports, f"{key}: targetPort {p['targetPort']} is not a container port")
    sel = svc["spec"]["selector"]
    check(all(labels.get(k) == v for k, v in sel.items()), f"{key}: selector does not match the pods")
sel = pdb["spec"]["selector"]["matchLabels"]
check(all(labels.get(k) == v for k, v in sel.items()), "PodDisruptionBudget selector does not match the pods")
check(
    dep["spec"]["replicas"] >= 2 and pdb["spec"].get("maxUnavailable", 0) < dep["spec"]["replicas"],
    "several replicas, and the PDB must leave at least one",
)

# Config and secrets are mounted where the config says.
mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
vols = {v["name"]: v for v in pod["volumes"]}
(cfg_vol,) = [n for n, v in vols.items() if v.get("configMap", {}).get("name") == cm["metadata"]["name"]]
check(c["args"][-1] == f"{mounts[cfg_vol]}/rwproxy.toml", "--config must point into the ConfigMap mount")
(sec_vol,) = [n for n, v in vols.items() if v.get("secret", {}).get("secretName") == secret["metadata"]["name"]]
secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))


def walk(d, path=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from walk(v, f"{path}{k}.")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                if isinstance(x, dict):
                    yield from walk(x, f"{path}{k}[{i}].")
        else:
            yield f"{path}{k}", v


file_fields = 0
for key, value in walk(conf):
    if key.endswith(("password", "password_hash")):
        errors.append(f"{key}: a password in the ConfigMap; use {key}_file and the Secret")
    if key.endswith("_file"):
        file_fields += 1
        d, _, f = value.rpartition("/")
        check(d == mounts[sec_vol], f"{key} = {value}: not under the Secret mount {mounts[sec_vol]}")
        check(f in secret_keys, f"{key} = {value}: {f} is not a key of Secret {secret['metadata']['name']}")
check(file_fields >= 2, "monitor and admin passwords must come from the Secret")

if errors:
    sys.exit("check-k8s: " + "\ncheck-k8s: ".join(errors))
print(f"ok: manifests consistent (grace {grace} s > preStop {pre_stop:g} s + drain {shutdown:g} s; {file_fields} secrets from files)")

"""Structural checks of the Kubernetes manifests in ``deploy/k8s`` and of ``deploy/Dockerfile``
(used by tests/unit/test_deploy_manifests.py; docs/DEPLOY.md says what they stand for).

Each check takes the parsed documents (a :data:`Bundle`) and returns its problems, one line
each naming the object and the bad value; empty means fine. Nothing here talks to a cluster:
the gateway config goes through CATO's real loader, the Dockerfile's command through the real
CLI's ``--help``, the probe paths against the routes of the real app.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator
from unittest import mock

import yaml

from cato.gateway.config import ConfigError, GatewayConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
NAMESPACE = "cato"
WORKLOADS = ("Deployment", "StatefulSet")
CLUSTER_SCOPED = ("Namespace", "Kustomization")
GATEWAY_CONFIG = "cato-gateway-config"

Doc = dict[str, Any]
Bundle = list[tuple[str, Doc]]     # (file relative to deploy/k8s, document)


#: Alternatives applied instead of some main files, not with them.
ALTERNATIVES = ("ray",)


def load_bundle(*, under: str = "") -> Bundle:
    """Every YAML document under deploy/k8s/``under``; by default all but the alternatives'
    folders (the main manifests and the optional monitoring ones)."""
    out: Bundle = []
    for p in sorted((K8S / under).rglob("*.yaml")):
        if not under and p.relative_to(K8S).parts[0] in ALTERNATIVES:
            continue
        for doc in yaml.safe_load_all(p.read_text()):
            if doc is not None:
                out.append((str(p.relative_to(K8S)), doc))
    return out


def object_name(doc: Doc) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def pod_spec(doc: Doc) -> Doc:
    return dict(doc["spec"]["template"]["spec"])


def containers(doc: Doc, *, init: bool = True) -> list[Doc]:
    pod = pod_spec(doc)
    return list(pod.get("containers") or []) + (list(pod.get("initContainers") or [])
                                                if init else [])


def _ports(doc: Doc) -> dict[str | int, int]:
    """A workload's container ports by name and by number -> number."""
    out: dict[str | int, int] = {}
    for c in containers(doc):
        for p in c.get("ports") or []:
            out[p["containerPort"]] = p["containerPort"]
            if "name" in p:
                out[p["name"]] = p["containerPort"]
    return out


def _labels(doc: Doc) -> dict[str, str]:
    return dict((doc["spec"]["template"].get("metadata") or {}).get("labels") or {})


def _selects(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in (selector or {}).items())


def _of(bundle: Bundle, *kinds: str) -> list[Doc]:
    return [d for _, d in bundle if d.get("kind") in kinds]


def _probes(c: Doc) -> Iterator[tuple[str, Doc]]:
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        if kind in c:
            yield kind, c[kind]


# ------------------------------------------------------------------------------- the checks

def document_problems(bundle: Bundle) -> list[str]:
    out = []
    for path, d in bundle:
        meta = d.get("metadata") or {}
        if not d.get("apiVersion") or not d.get("kind"):
            out.append(f"{path}: a document needs apiVersion and kind: {object_name(d)}")
            continue
        if d["kind"] == "Kustomization":
            continue
        if not meta.get("name"):
            out.append(f"{path}: {d['kind']} needs metadata.name")
        if d["kind"] not in CLUSTER_SCOPED and meta.get("namespace") != NAMESPACE:
            out.append(f"{path}: {object_name(d)} namespace {meta.get('namespace')!r}, want "
                       f"{NAMESPACE!r}")
    return out


def kustomization_problems(bundle: Bundle) -> list[str]:
    ks = [d for p, d in bundle if d.get("kind") == "Kustomization" and "/" not in p]
    if len(ks) != 1:
        return [f"want one kustomization.yaml in deploy/k8s, found {len(ks)}"]
    listed = sorted(ks[0].get("resources") or [])
    files = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    return [] if listed == files else [f"kustomization resources {listed} != files {files}"]


def workload_problems(bundle: Bundle) -> list[str]:
    out = []
    for d in _of(bundle, *WORKLOADS):
        n = object_name(d)
        sel = (d["spec"].get("selector") or {}).get("matchLabels")
        if not _selects(sel, _labels(d)):
            out.append(f"{n}: selector {sel} does not match the template labels {_labels(d)}")
        ports = _ports(d)
        volumes = {v["name"] for v in pod_spec(d).get("volumes") or []}
        volumes |= {v["metadata"]["name"] for v in d["spec"].get("volumeClaimTemplates") or []}
        if not containers(d, init=False):
            out.append(f"{n}: no containers")
        for c in containers(d):
            where = f"{n} container {c.get('name')!r}"
            if not c.get("name") or not c.get("image"):
                out.append(f"{where}: needs a name and an image")
            for m in c.get("volumeMounts") or []:
                if m["name"] not in volumes:
                    out.append(f"{where}: mounts volume {m['name']!r}, not among {volumes}")
            for kind, probe in _probes(c):
                port = (probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port")
                if port not in ports:
                    out.append(f"{where}: {kind} port {port!r} is no container port")
        for c in containers(d, init=False):
            if not c.get("ports"):
                out.append(f"{n} container {c.get('name')!r}: serves on no declared port")
    return out


def service_problems(bundle: Bundle) -> list[str]:
    out = []
    workloads = _of(bundle, *WORKLOADS)
    services = _of(bundle, "Service")
    for s in services:
        sel = s["spec"].get("selector")
        targets = [w for w in workloads if _selects(sel, _labels(w))]
        if not targets:
            out.append(f"{object_name(s)}: selector {sel} matches no workload's pods")
        for p in s["spec"].get("ports") or []:
            tp = p.get("targetPort", p.get("port"))
            for w in targets:
                if tp not in _ports(w):
                    out.append(f"{object_name(s)}: targetPort {tp!r} is no port of {object_name(w)}")
    for w in _of(bundle, "StatefulSet"):
        svc = [s for s in services if s["metadata"]["name"] == w["spec"].get("serviceName")]
        if not svc or svc[0]["spec"].get("clusterIP") != "None" \
                or not _selects(svc[0]["spec"].get("selector"), _labels(w)):
            out.append(f"{object_name(w)}: serviceName {w['spec'].get('serviceName')!r} must be a "
                       f"headless Service (clusterIP: None) over its pods")
    for m in _of(bundle, "ServiceMonitor"):
        sel = m["spec"]["selector"].get("matchLabels")
        match = [s for s in services if _selects(sel, s["metadata"].get("labels") or {})]
        names = {p.get("name") for s in match for p in s["spec"].get("ports") or []}
        for e in m["spec"]["endpoints"]:
            if e.get("port") not in names:
                out.append(f"{object_name(m)}: port {e.get('port')!r} is not a port of a Service it "
                           f"selects ({sorted(str(x) for x in names)})")
    return out


def _secret_refs(bundle: Bundle) -> Iterator[tuple[str, str, str | None, bool]]:
    """(where, secret, key or None for all of it, optional) of every Secret reference."""
    for w in _of(bundle, *WORKLOADS):
        for c in containers(w):
            where = f"{object_name(w)} container {c.get('name')!r}"
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    yield where, ref["name"], ref["key"], bool(ref.get("optional"))
            for e in c.get("envFrom") or []:
                if "secretRef" in e:
                    yield where, e["secretRef"]["name"], None, bool(e["secretRef"].get("optional"))
    for m in _of(bundle, "ServiceMonitor"):
        for e in m["spec"]["endpoints"]:
            cred = (e.get("authorization") or {}).get("credentials")
            if cred:
                yield object_name(m), cred["name"], cred["key"], False


def _secret_keys(d: Doc) -> set[str]:
    return set(d.get("stringData") or {}) | set(d.get("data") or {})


def secret_problems(bundle: Bundle) -> list[str]:
    out = []
    secrets = {d["metadata"]["name"]: _secret_keys(d) for d in _of(bundle, "Secret")}
    used: set[tuple[str, str | None]] = set()
    for where, name, key, optional in _secret_refs(bundle):
        used.add((name, key))
        if name not in secrets:
            if not optional:
                out.append(f"{where}: Secret {name!r} is not among {sorted(secrets)}")
        elif key is not None and key not in secrets[name]:
            out.append(f"{where}: Secret {name!r} has no key {key!r}")
    for name, keys in secrets.items():
        for k in sorted(keys):
            if (name, k) not in used and (name, None) not in used:
                out.append(f"Secret {name!r} key {k!r} is referenced by no workload")
    return out


def gateway(bundle: Bundle) -> Doc:
    found = [w for w in _of(bundle, "Deployment")
             if any(v.get("configMap", {}).get("name") == GATEWAY_CONFIG
                    for v in pod_spec(w).get("volumes") or [])]
    assert len(found) == 1, f"want one Deployment mounting {GATEWAY_CONFIG}: {found}"
    return found[0]


def gateway_config(bundle: Bundle) -> GatewayConfig:
    """The ConfigMap's config.yaml through the real loader, with the Secrets' keys in the
    environment under the names the gateway container maps them to. Raises ConfigError."""
    cms = [d for d in _of(bundle, "ConfigMap") if d["metadata"]["name"] == GATEWAY_CONFIG]
    assert len(cms) == 1, f"want one ConfigMap {GATEWAY_CONFIG}, found {len(cms)}"
    text = cms[0]["data"]["config.yaml"]
    secrets = {d["metadata"]["name"]: {**(d.get("stringData") or {})} for d in _of(bundle, "Secret")}
    env = {}
    main = containers(gateway(bundle), init=False)[0]
    for e in main.get("env") or []:
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref and ref["key"] in secrets.get(ref["name"], {}):
            env[e["name"]] = secrets[ref["name"]][ref["key"]]
        elif "value" in e:
            env[e["name"]] = e["value"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(text)
        with mock.patch.dict(os.environ, env, clear=True):   # only what the pod would have
            return load_config(path)


def _flags(args: list[str]) -> dict[str, str]:
    out, i = {}, 0
    while i < len(args):
        a = args[i]
        if a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1)
            out[k] = v
        elif a.startswith("--"):
            nxt = args[i + 1] if i + 1 < len(args) else ""
            if nxt and not nxt.startswith("--"):
                out[a[2:]] = nxt
                i += 1
            else:
                out[a[2:]] = ""
        i += 1
    return out


def config_problems(bundle: Bundle) -> list[str]:
    """The gateway config against the objects it names (engines, ports, volumes)."""
    try:
        cfg = gateway_config(bundle)
    except ConfigError as e:
        return [f"{GATEWAY_CONFIG}: {e}"]
    out = []
    gw = gateway(bundle)
    main = containers(gw, init=False)[0]
    if cfg.listen.port not in _ports(gw):
        out.append(f"listen.port {cfg.listen.port} is no port of the gateway container")
    if cfg.listen.host not in ("0.0.0.0", "::"):
        out.append(f"listen.host {cfg.listen.host!r}: the Service cannot reach a pod that "
                   "listens on loopback")
    mounts = [m["mountPath"] for m in main.get("volumeMounts") or [] if not m.get("readOnly")]
    if cfg.profile_path is None or not any(cfg.profile_path.startswith(m + "/") for m in mounts):
        out.append(f"profile_path {cfg.profile_path!r} is not on a writable mount {mounts}")
    statefulsets = {w["metadata"]["name"]: w for w in _of(bundle, "StatefulSet")}
    for m in cfg.models:
        for r in m.replicas:
            hit = re.fullmatch(r"http://([a-z0-9-]+)-(\d+)\.([a-z0-9-]+)\.([a-z0-9-]+)"
                               r"\.svc\.cluster\.local:(\d+)", r.url)
            if hit is None:
                out.append(f"model {m.name!r} replica {r.url}: not a StatefulSet pod's DNS "
                           "name (http://<sts>-<i>.<service>.<ns>.svc.cluster.local:<port>)")
                continue
            sts_name, idx, svc, ns, port = hit.groups()
            sts = statefulsets.get(sts_name)
            if sts is None or sts["spec"].get("serviceName") != svc or ns != NAMESPACE:
                out.append(f"replica {r.url}: no StatefulSet {sts_name!r} with serviceName "
                           f"{svc!r} in namespace {ns!r}")
                continue
            if int(idx) >= sts["spec"]["replicas"]:
                out.append(f"replica {r.url}: the StatefulSet has {sts['spec']['replicas']} pods")
            if int(port) not in _ports(sts):
                out.append(f"replica {r.url}: port {port} is no container port of {sts_name}")
            flags = _flags(containers(sts, init=False)[0].get("args") or [])
            if flags.get("served-model-name") != m.name:
                out.append(f"model {m.name!r}: vLLM serves --served-model-name="
                           f"{flags.get('served-model-name')!r}")
            if m.accepts_priority and flags.get("scheduling-policy") != "priority":
                out.append(f"model {m.name!r}: accepts_priority needs vLLM's "
                           "--scheduling-policy=priority")
            if m.concurrency is not None and flags.get("max-num-seqs") != str(m.concurrency):
                out.append(f"model {m.name!r}: concurrency {m.concurrency} != vLLM's "
                           f"--max-num-seqs={flags.get('max-num-seqs')}")
    return list(dict.fromkeys(out))      # once per model, not once per replica


def app_routes() -> set[str]:
    """The paths the gateway's app serves (built, not started, over a config of one engine)."""
    from cato.gateway.app import create_app
    from cato.gateway.config import parse_config
    from cato.gateway.gateway import Gateway
    cfg = parse_config({"models": [{"name": "m", "replicas": [{"url": "http://127.0.0.1:9"}]}]})
    return {str(getattr(r, "path", "")) for r in create_app(Gateway(cfg)).routes}


def probe_problems(bundle: Bundle, routes: set[str]) -> list[str]:
    out = []
    for c in containers(gateway(bundle), init=False):
        kinds = dict(_probes(c))
        if set(kinds) < {"livenessProbe", "readinessProbe"}:
            out.append(f"gateway container {c['name']!r}: needs liveness and readiness probes")
        for kind, probe in kinds.items():
            path = (probe.get("httpGet") or {}).get("path")
            if path not in routes:
                out.append(f"gateway {kind} path {path!r} is not a gateway route")
    return out


def _dockerfile_exec(text: str, instr: str) -> list[str]:
    lines = [ln for ln in text.splitlines() if ln.startswith(instr + " ")]
    if not lines:
        return []
    value: list[str] = json.loads(lines[-1][len(instr) + 1:])
    return value


def dockerfile_problems(text: str, bundle: Bundle) -> list[str]:
    out = []
    argv = _dockerfile_exec(text, "ENTRYPOINT") + _dockerfile_exec(text, "CMD")
    if argv[:1] != ["cato"] or len(argv) < 2:
        return [f"ENTRYPOINT + CMD {argv}: want cato <subcommand> ..."]
    help_run = subprocess.run([sys.executable, "-m", "cato", argv[1], "--help"],
                              capture_output=True, text=True, timeout=120)
    if help_run.returncode != 0:
        return [f"`cato {argv[1]}` is no cato command: {help_run.stderr.strip()[-300:]}"]
    for flag in (a.split("=")[0] for a in argv[2:] if a.startswith("-")):
        if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_run.stdout):
            out.append(f"`cato {argv[1]}` has no flag {flag}")
    user = [ln.split()[1] for ln in text.splitlines() if ln.startswith("USER ")]
    if not user or user[-1].split(":")[0] in ("root", "0"):
        out.append(f"the image must run as a non-root USER, got {user}")
    cfg = gateway_config(bundle)
    exposed = [int(p.split("/")[0]) for ln in text.splitlines() if ln.startswith("EXPOSE ")
               for p in ln.split()[1:]]
    if cfg.listen.port not in exposed:
        out.append(f"EXPOSE {exposed} lacks the listen port {cfg.listen.port}")
    gw = containers(gateway(bundle), init=False)[0]
    if gw.get("args", argv[1:]) != argv[1:] or "command" in gw:
        out.append(f"the gateway container runs {gw.get('command')} {gw.get('args')}, not the "
                   f"image's {argv}")
    if "--config" in argv:
        conf = argv[argv.index("--config") + 1]
        mounts = [m["mountPath"] for m in gw.get("volumeMounts") or []
                  for v in pod_spec(gateway(bundle))["volumes"]
                  if v["name"] == m["name"] and v.get("configMap", {}).get("name")
                  == GATEWAY_CONFIG]
        if conf not in [f"{m}/config.yaml" for m in mounts]:
            out.append(f"--config {conf} is not the mounted ConfigMap's config.yaml {mounts}")
    return out

"""The Kubernetes deployment on paper (``deploy/k8s``, ``deploy/Dockerfile``, docs/DEPLOY.md)
holds together: what Kubernetes needs of each object, and what CATO needs of the whole.

No cluster and no schema validator here (kubectl cannot validate offline, and no binary is
downloaded), so the checks (tests/k8s_manifests.py) are structural; each returns problems
(empty: fine) and is tried on the real files and on spoiled copies, so that each can fail:

* every YAML document parses and has ``apiVersion``, ``kind``, ``metadata.name`` and the
  ``cato`` namespace; the kustomization lists exactly the top-level files;
* Deployments/StatefulSets: a selector matching the template's labels, containers with an
  image, ports on the serving containers, probes on existing ports, mounts of existing volumes;
* Services select some workload's pods and target ports its containers have; a StatefulSet's
  ``serviceName`` is a headless Service over its pods; ServiceMonitors select a Service port;
* every Secret key is referenced, every reference names an existing Secret key;
* the gateway ConfigMap loads through the real :func:`cato.gateway.config.load_config` (with
  the Secret's keys in the environment, as the Deployment maps them); its replica URLs are the
  StatefulSet's per-pod DNS names on the engine port; model name, priority scheduling and
  concurrency agree with the vLLM flags; the listen port is the container port; the gateway's
  probes hit real routes of :func:`cato.gateway.app.create_app`;
* the Dockerfile runs ``cato serve --config <the ConfigMap's mount>`` (flags checked with the
  real CLI's ``--help``), as a non-root user, exposing the listen port;
* the init container's wait-for-engines script, run for real, returns once a real ``cato
  engine`` answers and keeps waiting while none does.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import yaml

from cato.edge.procs import free_port
from k8s_manifests import (DOCKERFILE, GATEWAY_CONFIG, Bundle, Doc, app_routes,
                           config_problems, containers, document_problems,
                           dockerfile_problems, gateway, gateway_config,
                           kustomization_problems, load_bundle, object_name, pod_spec,
                           probe_problems, secret_problems, service_problems,
                           workload_problems)


def test_every_document_has_what_kubernetes_needs() -> None:
    bundle = load_bundle()
    assert {d["kind"] for _, d in bundle} >= {"Namespace", "ConfigMap", "Secret", "Deployment",
                                             "Service", "StatefulSet", "NetworkPolicy",
                                             "ServiceMonitor", "Kustomization"}
    for check in (document_problems, workload_problems, service_problems, secret_problems):
        assert check(bundle) == [], check.__name__
    assert kustomization_problems(bundle) == []


@pytest.mark.parametrize("variant", ["", "ray"])
def test_the_gateway_config_loads_through_the_real_loader(variant: str) -> None:
    """The main manifests, and the Ray variant's ConfigMap in their place."""
    bundle = load_bundle()
    if variant:
        bundle = [(p, d) for p, d in bundle if object_name(d) != f"ConfigMap/{GATEWAY_CONFIG}"]
        bundle += load_bundle(under=variant)
        assert document_problems(bundle) == []
    cfg = gateway_config(bundle)
    if variant:
        assert cfg.models[0].autoscale is not None
        assert cfg.models[0].autoscale.provider == "ray" and cfg.ray.address
    else:
        assert config_problems(bundle) == []
        assert len(cfg.auth.api_keys) == 2 and cfg.auth.metrics_keys


def test_the_gateway_probes_hit_real_routes() -> None:
    assert probe_problems(load_bundle(), app_routes()) == []


def test_the_dockerfile_runs_a_real_cato_command() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text(), load_bundle()) == []


# ---- each check can fail: one spoiled copy per check

def _doc(bundle: Bundle, name: str) -> Doc:
    return next(d for _, d in bundle if object_name(d) == name)


def _set_config(bundle: Bundle, edit: Callable[[str], str]) -> None:
    cm = _doc(bundle, f"ConfigMap/{GATEWAY_CONFIG}")
    cm["data"]["config.yaml"] = edit(cm["data"]["config.yaml"])


SPOILERS: list[tuple[str, Callable[[Bundle], None], Callable[[Bundle], list[str]], str]] = [
    ("no name", lambda b: _doc(b, "Service/vllm")["metadata"].pop("name"),
     document_problems, "metadata.name"),
    ("other namespace", lambda b: _doc(b, "Service/vllm")["metadata"].update(namespace="x"),
     document_problems, "namespace"),
    ("selector", lambda b: _doc(b, "Deployment/cato-gateway")["spec"]["selector"].update(
        matchLabels={"app.kubernetes.io/name": "other"}), workload_problems, "selector"),
    ("no image", lambda b: containers(_doc(b, "StatefulSet/vllm"))[0].pop("image"),
     workload_problems, "image"),
    ("probe port", lambda b: containers(_doc(b, "Deployment/cato-gateway"))[0][
        "livenessProbe"]["httpGet"].update(port="metrics"), workload_problems, "livenessProbe"),
    ("mount", lambda b: containers(_doc(b, "Deployment/cato-gateway"))[0][
        "volumeMounts"].append({"name": "nope", "mountPath": "/x"}), workload_problems, "nope"),
    ("service selector", lambda b: _doc(b, "Service/cato-gateway")["spec"].update(
        selector={"app": "gone"}), service_problems, "matches no workload"),
    ("target port", lambda b: _doc(b, "Service/cato-gateway")["spec"]["ports"][0].update(
        targetPort=9999), service_problems, "targetPort 9999"),
    ("not headless", lambda b: _doc(b, "Service/vllm")["spec"].pop("clusterIP"),
     service_problems, "headless"),
    ("monitor port", lambda b: _doc(b, "ServiceMonitor/cato-gateway")["spec"]["endpoints"][0]
     .update(port="web"), service_problems, "'web'"),
    ("unused secret key", lambda b: _doc(b, "Secret/cato-keys")["stringData"].update(
        EXTRA="unused-secret-value"), secret_problems, "'EXTRA' is referenced by no"),
    ("missing secret key", lambda b: _doc(b, "Secret/cato-keys")["stringData"].pop(
        "CATO_ADMIN_KEY"), secret_problems, "no key 'CATO_ADMIN_KEY'"),
    ("bad config field", lambda b: _set_config(b, lambda t: t.replace(
        "routing: {policy: cato}", "routing: {policy: cato, nope: 1}")),
     config_problems, "routing.nope"),
    ("key not mapped", lambda b: containers(_doc(b, "Deployment/cato-gateway"), init=False)[0][
        "env"].pop(0), config_problems, "CATO_KEY_IDE"),
    ("replica dns", lambda b: _set_config(b, lambda t: t.replace("vllm-1.vllm", "vllm-7.vllm")),
     config_problems, "has 2 pods"),
    ("replica service", lambda b: _set_config(b, lambda t: t.replace(
        "vllm-0.vllm.cato", "vllm-0.engines.cato")), config_problems, "serviceName 'engines'"),
    ("model name", lambda b: _set_config(b, lambda t: t.replace(
        "- name: starcoder2-7b", "- name: starcoder2-15b").replace(
        ": starcoder2-7b", ": starcoder2-15b")), config_problems, "--served-model-name"),
    ("priority", lambda b: containers(_doc(b, "StatefulSet/vllm"), init=False)[0][
        "args"].remove("--scheduling-policy=priority"), config_problems, "priority"),
    ("loopback", lambda b: _set_config(b, lambda t: t.replace("host: 0.0.0.0",
                                                              "host: 127.0.0.1")),
     config_problems, "loopback"),
    ("profile path", lambda b: _set_config(b, lambda t: t.replace(
        "/var/cache/cato/profile.json", "/home/cato/profile.json")), config_problems,
     "profile_path"),
]


@pytest.mark.parametrize("what, spoil, check, complaint", SPOILERS, ids=[s[0] for s in SPOILERS])
def test_each_check_can_fail(what: str, spoil: Callable[[Bundle], None],
                             check: Callable[[Bundle], list[str]], complaint: str) -> None:
    bundle = copy.deepcopy(load_bundle())
    spoil(bundle)
    problems = check(bundle)
    assert any(complaint in p for p in problems), problems


def test_probe_and_dockerfile_checks_can_fail() -> None:
    bundle = copy.deepcopy(load_bundle())
    containers(_doc(bundle, "Deployment/cato-gateway"), init=False)[0]["readinessProbe"][
        "httpGet"]["path"] = "/readyz"
    assert any("'/readyz'" in p for p in probe_problems(bundle, app_routes()))
    good = DOCKERFILE.read_text()
    for bad, complaint in [
        (good.replace('CMD ["serve"', 'CMD ["servee"'), "no cato command"),
        (good.replace('"--config"', '"--conf"'), "no flag --conf"),
        (good.replace("USER 10001:10001", "USER root"), "non-root"),
        (good.replace("EXPOSE 8000", "EXPOSE 8080"), "EXPOSE"),
        (good.replace("/etc/cato/config.yaml", "/etc/cato/cato.yaml"), "mounted ConfigMap"),
    ]:
        assert bad != good
        problems = dockerfile_problems(bad, load_bundle())
        assert any(complaint in p for p in problems), (complaint, problems)


# ---- the init container's script, run for real

def _init_script() -> list[str]:
    init = pod_spec(gateway(load_bundle()))["initContainers"][0]
    assert init["command"][0] == "python"
    return [sys.executable, *init["command"][1:], *init["args"][:-1]]


def test_wait_for_engines_returns_once_a_real_engine_answers(tmp_path: Path) -> None:
    """Started before the engine: the script waits, then returns once ``cato engine`` is up."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"models": [{"name": "m", "replicas": [{"url": url}]}]}))
    waiter = subprocess.Popen([*_init_script(), str(cfg)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    engine = subprocess.Popen([sys.executable, "-m", "cato", "engine", "--port", str(port),
                               "--model", "m"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        out, err = waiter.communicate(timeout=60)
        assert waiter.returncode == 0, err
        assert f"engine up: {url}" in out
        assert engine.poll() is None            # it returned because the engine answered
    finally:
        for p in (waiter, engine):
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=15)


def test_wait_for_engines_waits_while_none_answers(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"models": [{"name": "m", "replicas": [
        {"url": f"http://127.0.0.1:{free_port()}"}]}]}))
    proc = subprocess.Popen([*_init_script(), str(cfg)], stdout=subprocess.PIPE, text=True)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=3.0)
    finally:
        proc.kill()
        out, _ = proc.communicate()
    assert "waiting for" in out, out

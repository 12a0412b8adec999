"""docker-compose.yml: valid Compose, and everything it names exists and fits the services' settings.

Without an engine: the file is checked against the Compose Specification's JSON schema (vendored in
deploy/schemas) and against the repository: settings fields, ports, files, images. tests/containers
runs it for real where a Docker engine answers.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import shutil
import subprocess

import jsonschema
import pytest
import tomllib
import yaml

from ddnn.paths import REPO_ROOT
from ddnn.serving.settings import load_settings
from deploy.docker.triton_serve import TritonServeSettings
from services.cloud.settings import CloudSettings
from services.edge.settings import EdgeSettings
from services.loadgen.settings import LoadgenSettings

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
SCHEMA = json.loads((REPO_ROOT / "deploy" / "schemas" / "compose-spec.json").read_text())
VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]

# compose service -> (settings dataclass, environment prefix, Dockerfile of its image)
DDNN_SERVICES = {
    "edge": (EdgeSettings, "DDNN_EDGE", "deploy/docker/edge.Dockerfile"),
    "cloud": (CloudSettings, "DDNN_CLOUD", "deploy/docker/cloud.Dockerfile"),
    "triton": (TritonServeSettings, "DDNN_TRITON_SERVE", "deploy/docker/cloud.Dockerfile"),
    "loadgen": (LoadgenSettings, "DDNN_LOADGEN", "deploy/docker/loadgen.Dockerfile"),
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def validator() -> jsonschema.Draft201909Validator:
    return jsonschema.Draft201909Validator(SCHEMA, format_checker=jsonschema.Draft201909Validator.FORMAT_CHECKER)


def test_compose_file_matches_the_compose_specification(compose):
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator().iter_errors(compose)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("mutate, where", [
    (lambda c: c["services"]["edge"].update(helthcheck={"test": ["CMD", "true"]}), "services/edge"),
    (lambda c: c["services"]["edge"]["depends_on"]["cloud"].update(condition="service_ready"),
     "services/edge/depends_on/cloud/condition"),
    (lambda c: c["services"]["loadgen"].update(volumes="results:/results"), "services/loadgen/volumes"),
])
def test_the_schema_rejects_what_compose_would(compose, mutate, where):
    """The vendored schema is strict enough to catch a misspelt key, a bad condition, a wrong type."""
    bad = copy.deepcopy(compose)
    mutate(bad)
    paths = ["/".join(map(str, e.absolute_path)) for e in validator().iter_errors(bad)]
    assert any(p.startswith(where) or (where.startswith(p) and p) for p in paths), paths


def test_docker_compose_loads_the_file():
    """Compose's own loader (docker-compose 1.29, Debian's package) resolves the file without an engine."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: apt-get install docker-compose (.ci/run does)")
    done = subprocess.run([binary, "-f", str(COMPOSE_FILE), "config"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"})
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert set(resolved["services"]) == set(yaml.safe_load(COMPOSE_FILE.read_text())["services"])
    # The x-hardening anchor was merged into every ddnn service.
    assert all(resolved["services"][s]["read_only"] is True for s in DDNN_SERVICES)


def container_path(value: str):
    """The checkout path a /app/... path in the image corresponds to (the images copy the repo layout)."""
    return REPO_ROOT / value.removeprefix("/app/") if value.startswith("/app/") else None


def dockerfile_copies(dockerfile: str) -> set[str]:
    """Repository paths the final stage of a Dockerfile copies from the build context."""
    text = (REPO_ROOT / dockerfile).read_text().replace("\\\n", " ")
    final = text[text.rindex("\nFROM "):]
    out = set()
    for line in final.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            out.update(a.rstrip("/") for a in line.split()[1:-1])
    return out


@pytest.mark.parametrize("service", sorted(DDNN_SERVICES))
def test_environment_is_real_settings_that_load(compose, service, monkeypatch):
    cls, prefix, _ = DDNN_SERVICES[service]
    env = {k: str(v) for k, v in compose["services"][service]["environment"].items()}
    fields = {f"{prefix}_{f.name.upper()}" for f in dataclasses.fields(cls)}
    unknown = sorted(set(env) - fields)
    assert not unknown, f"{service}: not settings of {cls.__name__}: {unknown}"
    # The values convert and pass the dataclass's own checks, as in the container.
    for k in [k for k in os.environ if k.startswith("DDNN_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = load_settings(cls, prefix, argv=[])
    for f in dataclasses.fields(cls):
        raw = env.get(f"{prefix}_{f.name.upper()}")
        if raw is not None:
            value = getattr(settings, f.name)
            expected = raw.lower() in ("1", "true", "yes", "on") if isinstance(value, bool) else type(value)(raw)
            assert value == expected, (f.name, raw, value)


@pytest.mark.parametrize("service", sorted(DDNN_SERVICES))
def test_files_named_in_the_environment_exist_and_are_in_the_image(compose, service):
    _, _, dockerfile = DDNN_SERVICES[service]
    copied = dockerfile_copies(dockerfile)
    for key, value in compose["services"][service]["environment"].items():
        path = container_path(str(value))
        if path is None:
            continue
        assert path.exists(), f"{service} {key}={value}: {path} does not exist"
        rel = str(path.relative_to(REPO_ROOT))
        assert any(rel == c or rel.startswith(c + "/") for c in copied), f"{dockerfile} does not copy {rel}"


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def settings_value(compose, service: str, field: str):
    cls, prefix, _ = DDNN_SERVICES[service]
    env = compose["services"][service].get("environment", {})
    key = f"{prefix}_{field.upper()}"
    if key in env:
        return env[key]
    return next(f.default for f in dataclasses.fields(cls) if f.name == field)


def networks_of(service: dict) -> dict[str, dict]:
    nets = service.get("networks", [])
    return {n: {} for n in nets} if isinstance(nets, list) else {n: (v or {}) for n, v in nets.items()}


def names_on_shared_networks(compose, client: str, server: str) -> set[str]:
    """The names under which ``client`` can resolve ``server`` (its service name and its aliases on shared networks)."""
    services = compose["services"]
    shared = set(networks_of(services[client])) & set(networks_of(services[server]))
    return ({server} if shared else set()) | {a for n in shared for a in networks_of(services[server])[n].get(
        "aliases", [])}


def test_the_testbed_is_wired_loadgen_edge_cloud_triton(compose):
    """Each hop's address names the next service and the port it listens on (Fig. 4 of the testbed)."""
    services = compose["services"]
    hops = [("loadgen", "edge", "edge", "listen"), ("edge", "cloud", "cloud", "listen"),
            ("cloud", "triton_url", "triton", "grpc_port")]
    for client, field, server, server_field in hops:
        host, _, port = str(settings_value(compose, client, field)).rpartition(":")
        assert host in names_on_shared_networks(compose, client, server), f"{client}.{field} -> {host}"
        listen = settings_value(compose, server, server_field)
        assert int(port) == (port_of(listen) if isinstance(listen, str) else int(listen))
        assert services[client]["depends_on"][server] == {"condition": "service_healthy"}


def test_the_edge_reaches_the_cloud_only_over_the_backhaul(compose):
    """The shaped link of `ddnn testbed --compose` carries edge<->cloud traffic and nothing else."""
    services = compose["services"]
    on_backhaul = sorted(name for name, svc in services.items() if "backhaul" in networks_of(svc))
    assert on_backhaul == ["cloud", "edge"]
    host = str(settings_value(compose, "edge", "cloud")).rpartition(":")[0]
    assert host in networks_of(services["cloud"])["backhaul"]["aliases"]
    assert host not in {a for n, v in networks_of(services["cloud"]).items() if n != "backhaul"
                        for a in v.get("aliases", [])}
    assert set(compose["networks"]) == {"testbed", "backhaul"}


def test_servers_listen_on_all_interfaces_and_healthchecks_probe_their_ports(compose):
    for service, field in (("edge", "listen"), ("cloud", "listen")):
        listen = settings_value(compose, service, field)
        assert listen.startswith("0.0.0.0:")
        assert settings_value(compose, service, "metrics_addr") == "0.0.0.0"
        probe = compose["services"][service]["healthcheck"]["test"]
        assert f"127.0.0.1:{port_of(listen)}" in probe and f"ddnn.v1.{service.title()}" in probe
    assert settings_value(compose, "loadgen", "metrics_addr") == "0.0.0.0"
    assert settings_value(compose, "triton", "host") == "0.0.0.0"
    triton_probe = compose["services"]["triton"]["healthcheck"]["test"]
    assert f"127.0.0.1:{settings_value(compose, 'triton', 'grpc_port')}" in triton_probe


def test_every_dependency_waits_for_health_or_completion(compose):
    services = compose["services"]
    for name, svc in services.items():
        for dep, cond in svc.get("depends_on", {}).items():
            assert cond["condition"] == "service_healthy", (name, dep)
            assert "healthcheck" in services[dep], f"{name} waits for {dep}, which has no healthcheck"


def test_prometheus_scrapes_the_ports_the_services_expose(compose):
    cfg = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    metrics_field = {"edge": "metrics_port", "cloud": "metrics_port", "loadgen": "metrics_port",
                     "triton": "metrics_port"}
    jobs = {}
    for sc in cfg["scrape_configs"]:
        for static in sc["static_configs"]:
            for target in static["targets"]:
                jobs[sc["job_name"]] = target
    assert set(metrics_field) <= set(jobs), f"prometheus.yml scrapes {sorted(jobs)}"
    for service, field in metrics_field.items():
        assert jobs[service] == f"{service}:{settings_value(compose, service, field)}"
    assert jobs["prometheus"] == "localhost:9090"


def test_mounted_files_exist_and_grafana_finds_what_it_is_given(compose):
    services = compose["services"]
    mounts = {}
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (REPO_ROOT / source).exists(), f"{name} mounts missing {source}"
                mounts[target] = REPO_ROOT / source
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"
    prom_cmd = services["prometheus"]["command"]
    config = next(a.split("=", 1)[1] for a in prom_cmd if a.startswith("--config.file="))
    assert config.startswith("/etc/prometheus/") and (mounts["/etc/prometheus"] / config.rsplit("/", 1)[1]).is_file()
    provider = yaml.safe_load((mounts["/etc/grafana/provisioning"] / "dashboards" / "ddnn.yml").read_text())
    dash_dir = provider["providers"][0]["options"]["path"]
    assert sorted(p.name for p in mounts[dash_dir].glob("*.json")), f"no dashboards in {dash_dir}"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (mounts[dash_dir] / home.removeprefix(dash_dir + "/")).is_file()
    ds = yaml.safe_load((mounts["/etc/grafana/provisioning"] / "datasources" / "prometheus.yml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090" and "prometheus" in services


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ``${VAR:-default}`` substitution, with ``env`` (default: nothing set)."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: (env or {}).get(m.group(1), m.group(2)), value)


def test_images_are_pinned_and_ddnn_images_carry_the_package_version(compose):
    for name, svc in compose["services"].items():
        image = interpolate(svc["image"])
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), f"{name}: unpinned {image}"
        if repo.startswith("ddnn-"):
            assert tag == VERSION, f"{name}: {image} should be tagged {VERSION}"
        if "build" in svc:
            assert (REPO_ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
    built = {svc["image"] for svc in compose["services"].values() if "build" in svc}
    used = {svc["image"] for svc in compose["services"].values() if svc["image"].startswith("ddnn-")}
    assert used == built, f"images used but never built: {used - built}"


def test_results_of_the_load_generator_land_in_a_volume(compose):
    loadgen = compose["services"]["loadgen"]
    out = settings_value(compose, "loadgen", "out")
    assert any(v.split(":")[1] == out for v in loadgen["volumes"]), f"DDNN_LOADGEN_OUT={out} is not a volume"
    assert float(settings_value(compose, "loadgen", "linger_s")) > 2 * 5, "lingers too briefly for a last scrape"


def test_prometheus_image_is_upstream_unless_ci_names_the_debian_one(compose):
    """Users get prom/prometheus; make images builds ddnn-prometheus:<version> for machines without a registry."""
    image = compose["services"]["prometheus"]["image"]
    assert interpolate(image) == "prom/prometheus:v2.42.0"
    ci = f"ddnn-prometheus:{VERSION}"
    assert interpolate(image, {"DDNN_PROMETHEUS_IMAGE": ci}) == ci
    assert (REPO_ROOT / "deploy" / "docker" / "prometheus.Dockerfile").is_file()
    # Its healthcheck needs only promtool, which both images have (upstream's has no python, Debian's no wget).
    assert compose["services"]["prometheus"]["healthcheck"]["test"][:2] == ["CMD", "promtool"]


def test_grafana_is_optional_and_host_ports_stay_on_loopback(compose):
    services = compose["services"]
    assert services["grafana"]["profiles"] == ["grafana"]
    assert all("profiles" not in svc for name, svc in services.items() if name != "grafana")
    assert not [n for n, svc in services.items() if "grafana" in svc.get("depends_on", {})]
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert interpolate(port).startswith("127.0.0.1:"), (name, port)
    # A fixed network name would stop two projects (a user's and a test's) from running side by side.
    assert all("name" not in (net or {}) for net in compose["networks"].values())


def test_containers_are_hardened(compose):
    for name in [*DDNN_SERVICES, "prometheus"]:
        svc = compose["services"][name]
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in svc["security_opt"], name
        assert "testbed" in networks_of(svc), name  # and the edge and cloud on backhaul: see above

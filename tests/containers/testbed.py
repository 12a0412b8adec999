"""The compose testbed driven through the ``docker`` SDK: one project per test session, real containers.

``Testbed`` brings docker-compose.yml up under a unique project name (its own network, volumes and
containers, nothing published beyond loopback), finds containers by their compose labels, runs extra
load generators on the project's network and tears everything down. ``Timeline`` prints what a fault
test did and saw, with times relative to its start.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time
import urllib.request
import uuid
from pathlib import Path

import docker
import tomllib
import yaml
from docker.models.containers import Container

from ddnn.launch import compose_command
from ddnn.paths import REPO_ROOT

VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
PROMETHEUS_IMAGE = f"ddnn-prometheus:{VERSION}"
LOADGEN_IMAGE = f"ddnn-loadgen:{VERSION}"
PROBE = "/app/deploy/docker/grpc_health_probe.py"
TEST_LABEL = "ddnn.tests.containers"
# What the session's replay does (the compose file's defaults replay 5 x 10 000 images: too long here).
REPLAY = {"DDNN_LOADGEN_LIMIT": "2000", "DDNN_LOADGEN_REPEAT": "1", "DDNN_LOADGEN_RATE": "8",
          "DDNN_LOADGEN_LINGER_S": "30"}
# The SLO controller (p95 0.5 s in the compose file) sets the exit's knob from the recent traffic: even
# with a target it never reaches, its knob is a quantile estimate of the policy's, so a few samples
# near the threshold exit differently (seen here). The session's edge runs the policy alone, as
# `ddnn eval` does; the SLO panel is checked by tests/integration/test_deploy_live_prometheus.py.
EDGE = {"DDNN_EDGE_SLO": "", "DDNN_EDGE_CLOUD_TIMEOUT_S": "5"}
SLO_ONLY = "ddnn_edge_slo_"  # dashboard series that exist only with an SLO controller


def engine_problem() -> str | None:
    """Why the container suite cannot run here, or None when a Docker engine and Compose answer."""
    try:
        docker.from_env(timeout=10).ping()
    except Exception as exc:  # any failure to reach the engine means: skip
        return f"no Docker engine answers ({type(exc).__name__}: {str(exc)[:120]})"
    if compose_command() is None:
        return "the Docker engine answers but neither 'docker-compose' nor 'docker compose' is installed"
    return None


class Timeline:
    """Prints ``[name] +12.3s what`` lines as a fault test goes, and keeps them for its assertions."""

    def __init__(self, name: str):
        self.name, self.t0, self.events = name, time.monotonic(), []
        print(f"\n[{name}] timeline", flush=True)

    def mark(self, what: str) -> float:
        t = time.monotonic() - self.t0
        self.events.append((t, what))
        print(f"[{self.name}] +{t:6.1f}s {what}", flush=True)
        return t


def wait_until(what: str, check, timeout: float, interval: float = 1.0):
    """Call ``check`` until it returns something truthy; raise naming ``what`` after ``timeout`` s."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (docker.errors.APIError, OSError) as exc:
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class Testbed:
    """docker-compose.yml as project ``ddnn-ct-<random>``, with a test override file."""

    def __init__(self, work: Path):
        self.client = docker.from_env(timeout=120)
        self.project = f"ddnn-ct-{uuid.uuid4().hex[:8]}"
        self.work = work
        self.network = f"{self.project}_testbed"
        self.backhaul = f"{self.project}_backhaul"  # the edge<->cloud link alone
        override = {"services": {"edge": {"environment": EDGE}, "loadgen": {"environment": REPLAY}}}
        self.override = work / "docker-compose.test.yml"
        self.override.write_text(yaml.safe_dump(override))
        extra = os.environ.get("DDNN_CT_COMPOSE_OVERRIDE")  # e.g. a local experiment; never needed by CI
        files = [COMPOSE_FILE, self.override, *([Path(extra)] if extra else [])]
        self.base = [*compose_command(), "-p", self.project, *(a for f in files for a in ("-f", str(f)))]
        self.env = {**os.environ, "DDNN_PROMETHEUS_IMAGE": PROMETHEUS_IMAGE, "DDNN_EDGE_PORT": "0",
                    "DDNN_PROMETHEUS_PORT": "0", "DDNN_GRAFANA_PORT": "0"}
        self.exit_codes: dict[str, int] = {}

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        done = subprocess.run([*self.base, *args], cwd=REPO_ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"docker compose {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
        return done

    def up(self) -> None:
        """Start every service; Compose itself waits for each dependency's health (triton -> cloud -> edge)."""
        self.compose("up", "-d", "--no-build", timeout=900)

    def container(self, service: str) -> Container:
        found = self.client.containers.list(all=True, filters={"label": [
            f"com.docker.compose.project={self.project}", f"com.docker.compose.service={service}"]})
        if not found:
            raise LookupError(f"no container for service {service} in project {self.project}")
        return found[0]

    def services(self) -> list[str]:
        """The services ``up`` starts: all but those in a profile (Grafana's is off)."""
        resolved = yaml.safe_load(self.compose("config").stdout)["services"]
        return sorted(name for name, svc in resolved.items() if not svc.get("profiles"))

    def ip(self, service: str) -> str:
        c = self.container(service)
        c.reload()
        return c.attrs["NetworkSettings"]["Networks"][self.network]["IPAddress"]

    def health(self, service: str, address: str, name: str = "") -> str:
        """What the service's own probe says, run inside its container (SERVING, NOT_SERVING, UNAVAILABLE...)."""
        result = self.container(service).exec_run(["python", PROBE, address, "--service", name, "--timeout", "3"])
        return result.output.decode().strip().rsplit(" ", 1)[-1]

    def docker_health(self, service: str) -> str:
        c = self.container(service)
        c.reload()
        return c.attrs["State"].get("Health", {}).get("Status", "none")

    def wait_healthy(self, service: str, timeout: float = 300) -> None:
        wait_until(f"{service} healthy", lambda: self.docker_health(service) == "healthy", timeout)

    def edge_metric(self, prefix: str) -> float:
        """Sum of the edge's /metrics samples whose line starts with ``prefix`` (scraped over the project's network)."""
        with urllib.request.urlopen(f"http://{self.ip('edge')}:9101/metrics", timeout=10) as r:
            text = r.read().decode()
        return sum(float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith(prefix))

    def edge_samples(self) -> float:
        """Samples the edge has answered so far."""
        return self.edge_metric("ddnn_edge_samples_total{")

    def edge_cloud_connected(self) -> bool:
        """The edge's own view of its stream to the cloud (``ddnn_edge_cloud_connected``)."""
        return self.edge_metric("ddnn_edge_cloud_connected ") == 1.0

    def logs(self, service: str, tail: int = 60) -> str:
        return self.container(service).logs(tail=tail).decode(errors="replace")

    def read_file(self, container: Container, path: str) -> bytes:
        """A file out of a container (running or exited), through the engine's archive API."""
        stream, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            return tar.extractfile(tar.getmembers()[0]).read()

    def loadgen_binds(self) -> list[str]:
        """Host paths the compose loadgen service mounts (none in docker-compose.yml; an override's)."""
        resolved = yaml.safe_load(self.compose("config").stdout)["services"]["loadgen"].get("volumes", [])
        out = []
        for v in resolved:
            src, dst, mode = ((v["source"], v["target"], "ro" if v.get("read_only") else "rw") if isinstance(v, dict)
                              else [*v.split(":"), "rw"][:3])
            if src.startswith("/"):
                out.append(f"{src}:{dst}:{mode}")
        return out

    def run_loadgen(self, name: str, limit: int, rate: float, **settings: str) -> LoadgenRun:
        """Another load generator on the project's network (hardened like the compose services)."""
        out = self.work / name
        out.mkdir(mode=0o777)
        out.chmod(0o777)  # the container's user 10001 writes the report here
        env = {"DDNN_LOADGEN_EDGE": "edge:50051", "DDNN_LOADGEN_LIMIT": str(limit), "DDNN_LOADGEN_LOOP": "open",
               "DDNN_LOADGEN_RATE": str(rate), "DDNN_LOADGEN_METRICS_PORT": "-1", "DDNN_LOADGEN_OUT": "/results",
               "DDNN_LOADGEN_PROGRESS": "false", **settings}
        c = self.client.containers.run(
            LOADGEN_IMAGE, detach=True, name=f"{self.project}-{name}", network=self.network, environment=env,
            read_only=True, tmpfs={"/tmp": ""}, cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
            volumes=[f"{out}:/results:rw", *self.loadgen_binds()], labels={TEST_LABEL: self.project})
        return LoadgenRun(c, out)

    def stop_all(self, timeout: int = 60) -> dict[str, int]:
        """``docker compose stop``: SIGTERM, drain, exit; then every service's exit code."""
        self.compose("stop", "-t", str(timeout), timeout=timeout * 6 + 60)
        for c in self.client.containers.list(all=True, filters={"label": f"com.docker.compose.project={self.project}"}):
            c.reload()
            self.exit_codes[c.labels["com.docker.compose.service"]] = c.attrs["State"]["ExitCode"]
        return self.exit_codes

    def down(self) -> None:
        """Remove the project's containers, network and volumes, and this session's extra containers."""
        for c in self.client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={self.project}"}):
            c.remove(force=True)
        try:
            self.compose("down", "-v", "--remove-orphans", "-t", "30", timeout=300)
        except RuntimeError as exc:
            print(f"docker compose down: {exc}")


class LoadgenRun:
    """A load generator container and the host folder it writes its report to."""

    def __init__(self, container: Container, out: Path):
        self.container, self.out = container, out

    def wait(self, timeout: float = 600) -> dict:
        """Its exit and report.json (raises with its log if it did not write one)."""
        status = self.container.wait(timeout=timeout)
        report = self.out / "report.json"
        if not report.exists():
            raise AssertionError(f"load generator exited {status['StatusCode']} without a report:\n"
                                 + self.container.logs(tail=80).decode(errors="replace"))
        return {"exit_code": status["StatusCode"], **json.loads(report.read_text())}

    def rows(self) -> list[dict]:
        import csv

        with open(self.out / "samples.csv") as f:
            return list(csv.DictReader(f))

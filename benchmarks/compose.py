"""The compose testbed against the local-process demo (issue 13), and the images it runs.

One run alternates the two (local, compose, local, compose, ...) on the same machine and reports
the ratio of their median closed-loop replay throughputs, both read from the load generator's own
report (its clock starts once the edge answers, so neither side's start-up counts):

* local: ``ddnn demo`` itself (:func:`ddnn.cli.demo.run`): cloud with its own Triton, edge and load
  generator as processes on loopback;
* compose: docker-compose.yml under a project of its own with a generated override that makes the
  load generator replay what the demo replays (closed loop, same images, batch size and streams) and
  the edge and Triton run what the demo's do (engine, policy, mode, payload, no SLO controller,
  Triton's ONNX Runtime threads); then ``down -v``.

Both sides' CPU is sampled over the replay (benchmarks/cpu.py), so a ratio below 1 can be told apart
as cores not obtained or CPU spent per sample; the compose testbed's cost at rest (healthchecks,
Prometheus) is measured after its replay. It also records each ddnn image's size and whether torch
is installed in it. Without a Docker engine, Compose or the images, the section records why it did
not run instead of failing.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import statistics
import subprocess
import tarfile
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import tomllib

from benchmarks import cpu
from benchmarks.compose_report import summarize
from ddnn.launch import compose_command
from ddnn.paths import REPO_ROOT

VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
IMAGES = ("edge", "cloud", "loadgen", "prometheus")  # ddnn-<name>:VERSION, built by make images
PYTHON_IMAGES = ("edge", "cloud", "loadgen")  # the ones that must serve without torch
MB = 1e6  # as `docker images` and make images print sizes
# As tests/containers does: the Prometheus image make images builds, host ports chosen by the engine.
COMPOSE_ENV = {"DDNN_PROMETHEUS_IMAGE": f"ddnn-prometheus:{VERSION}", "DDNN_EDGE_PORT": "0",
               "DDNN_PROMETHEUS_PORT": "0", "DDNN_GRAFANA_PORT": "0"}
# The demo's load generator reads DDNN_LOADGEN_* too: no progress bar, as the compose one (whose
# report otherwise carries the same settings).
LOCAL_ENV = {"DDNN_LOADGEN_PROGRESS": "false"}
UP_TIMEOUT_S = 900  # triton exports and starts (minutes on 2 shared cores), then cloud, edge, loadgen
REPLAY_TIMEOUT_S = 1800
# After the replay the compose testbed stays up this long with nothing to serve: what it costs at rest
# (healthchecks every 5 s, Prometheus scrapes every 5 s) is measured over it.
REST_S = 20.0
DOWN_TIMEOUT_S = 300
TORCH_PROBE = ("import importlib.metadata as m, json\n"
               "try:\n    v = m.version('torch')\nexcept m.PackageNotFoundError:\n    v = None\n"
               "try:\n    import torch  # noqa\n    ok = True\nexcept ImportError:\n    ok = False\n"
               "print(json.dumps({'installed': v, 'importable': ok}))")
# CPU seconds one run of the images' healthcheck probe costs (python + grpc import + one call), in a container.
PROBE_COST = ("import resource, subprocess, sys\n"
              "subprocess.run([sys.executable, '/app/deploy/docker/grpc_health_probe.py', '127.0.0.1:1', '--timeout', "
              "'0.5'], capture_output=True)\n"
              "r = resource.getrusage(resource.RUSAGE_CHILDREN)\nprint(r.ru_utime + r.ru_stime)")


@dataclasses.dataclass(frozen=True)
class Workload:
    """What both sides replay and run: the demo's settings, with its engine and policy resolved once."""

    images: int
    batch_size: int
    concurrency: int
    engine: str
    policy: str
    mode: str
    payload: str
    backend: str


def demo_parser() -> argparse.ArgumentParser:
    from ddnn.cli import demo

    parser = argparse.ArgumentParser(prog="ddnn")
    demo.register(parser.add_subparsers())
    return parser


def demo_args(images: int, engine: str, policy: str, out: Path) -> argparse.Namespace:
    """``ddnn demo --limit N --engine E --policy P --out DIR`` with every other option at its default."""
    return demo_parser().parse_args(["demo", "--limit", str(images), "--engine", engine, "--policy", policy,
                                     "--out", str(out)])


def workload(images: int) -> Workload:
    from ddnn.cli.demo import edge_choice

    engine, _, policy = edge_choice()  # what `ddnn demo` picks by default
    a = demo_args(images, engine, policy, Path("unused"))
    return Workload(images, a.batch_size, a.concurrency, a.engine, a.policy, a.mode, a.payload, a.backend)


def override(w: Workload) -> dict:
    """The compose override that runs ``w`` (YAML is a superset of JSON: written as JSON).

    Differences from docker-compose.yml it removes: the loadgen replays 5 x 10,000 images open-loop at
    5 batches/s and lingers 60 s (here: ``w.images`` once, closed loop, exit at once); the edge runs
    onnxruntime with the fp32 policy and an SLO controller (here: the demo's engine and policy, no
    controller, as ``ddnn demo`` runs it); triton_serve.py gives ONNX Runtime cores/instances threads
    where the demo's cloud starts Triton with its ``--triton-threads`` default.
    """
    from services.cloud.settings import CloudSettings

    if w.backend != "triton":
        raise ValueError(f"the compose cloud runs Triton; the demo's backend is {w.backend!r}")
    policy = Path(w.policy)
    if policy.parent.resolve() != (REPO_ROOT / "models").resolve():
        raise ValueError(f"the edge image holds models/*.policy.json only, not {policy}")
    cloud = {f.name: f.default for f in dataclasses.fields(CloudSettings)}
    return {"services": {
        "triton": {"environment": {"DDNN_TRITON_SERVE_THREADS": str(cloud["triton_threads"]),
                                   "DDNN_TRITON_SERVE_MAX_BATCH": str(cloud["max_batch"])}},
        "edge": {"environment": {"DDNN_EDGE_ENGINE": w.engine, "DDNN_EDGE_POLICY": f"/app/models/{policy.name}",
                                 "DDNN_EDGE_MODE": w.mode, "DDNN_EDGE_PAYLOAD": w.payload, "DDNN_EDGE_SLO": ""}},
        "loadgen": {"environment": {
            "DDNN_LOADGEN_LIMIT": str(w.images), "DDNN_LOADGEN_REPEAT": "1", "DDNN_LOADGEN_LOOP": "closed",
            "DDNN_LOADGEN_RATE": "0", "DDNN_LOADGEN_BATCH_SIZE": str(w.batch_size),
            "DDNN_LOADGEN_CONCURRENCY": str(w.concurrency), "DDNN_LOADGEN_LINGER_S": "0",
            "DDNN_LOADGEN_PROGRESS": "false"}}}}


# -- can it run here? ------------------------------------------------------------------------------

def skip_reason(engine_error: str | None, compose: list[str] | None, missing: list[str]) -> str | None:
    """Why the section cannot run (None: it can). ``missing``: the ddnn images the engine lacks."""
    if engine_error:
        return f"no Docker engine answers ({engine_error})"
    if not compose:
        return "the Docker engine answers but neither 'docker-compose' nor 'docker compose' is installed"
    if missing:
        return f"images missing: {', '.join(missing)}; run make images first"
    return None


def engine_client():
    """(docker client, None) or (None, why not)."""
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
        return client, None
    except Exception as exc:  # no SDK, no socket, no daemon: all mean "skip"
        return None, f"{type(exc).__name__}: {str(exc)[:160]}"


def missing_images(client) -> list[str]:
    have = {tag for image in client.images.list() for tag in image.tags}
    return [f"ddnn-{n}:{VERSION}" for n in IMAGES if f"ddnn-{n}:{VERSION}" not in have]


def python_in(client, image: str, code: str) -> str:
    """The last line ``python -c code`` prints in ``image``, without a network."""
    out = client.containers.run(image, ["-c", code], entrypoint="python", network_mode="none", remove=True)
    return out.decode().strip().splitlines()[-1]


def probe_cpu_s(client) -> float:
    """CPU seconds of one healthcheck probe in the edge image (median of three)."""
    return statistics.median(float(python_in(client, f"ddnn-edge:{VERSION}", PROBE_COST)) for _ in range(3))


def image_facts(client) -> dict:
    """Size (MB) of every ddnn image and, for the Python ones, whether torch is installed/importable."""
    out = {}
    for name in IMAGES:
        tag = f"ddnn-{name}:{VERSION}"
        facts = {"tag": tag, "size_mb": client.images.get(tag).attrs["Size"] / MB}
        if name in PYTHON_IMAGES:
            facts["torch"] = json.loads(python_in(client, tag, TORCH_PROBE))
        out[name] = facts
    return out


# -- one round of each -----------------------------------------------------------------------------

def side(report: dict) -> dict:
    """What a round keeps of a load generator report."""
    cfg = report["config"]
    return {"throughput": report["throughput_samples_per_s"], "wall_s": report["wall_s"],
            "samples": report["samples"], "integrity_ok": report["integrity"]["ok"],
            "exit_rates": report["exit_rates"], "accuracy": report["accuracy"]["overall"],
            "latency_p50_s": report["latency_s"]["overall"]["p50"],
            "replay": {k: cfg[k] for k in ("batch_size", "concurrency", "loop", "limit", "repeat", "shuffle", "seed")}}


@contextlib.contextmanager
def environ(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def local_round(w: Workload, out: Path) -> dict:
    """``ddnn demo`` (start-up, replay, shutdown), the replay's report."""
    from ddnn.cli.demo import run as demo_run

    t0 = time.monotonic()
    reader = cpu.LocalReader(os.getpid())
    with cpu.Sampler(reader) as sampler, environ(**LOCAL_ENV):
        rc = demo_run(demo_args(w.images, w.engine, w.policy, out))
    if rc != 0:
        raise RuntimeError(f"ddnn demo exited {rc}; logs in {out / 'logs'}")
    report = json.loads((out / "report.json").read_text())
    return {**side(report), "total_s": time.monotonic() - t0,
            "cpu": replay_cpu(sampler, report, (out / "report.json").stat().st_mtime)}


def replay_cpu(sampler: cpu.Sampler, report: dict, written: float) -> dict:
    """CPU over the replay: the ``wall_s`` before the report was written (at wall time ``written``)."""
    return cpu.window(sampler.samples, written - report["wall_s"], written, report["samples"])


def docker_time(text: str) -> float:
    """'2026-12-03T10:31:38.204349096Z' (Docker's UTC, nanoseconds) as a Unix time."""
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head).replace(tzinfo=timezone.utc).timestamp() + float(f"0.{frac or 0}")


def read_from(container, path: str) -> tuple[bytes, float]:
    """A file out of a (running or exited) container, through the engine's archive API, and its mtime."""
    stream, stat = container.get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        return tar.extractfile(tar.getmembers()[0]).read(), docker_time(stat["mtime"])


def compose_round(w: Workload, work: Path, client, compose: list[str]) -> dict:
    """``up -d`` a fresh project with the override, wait for the loadgen's exit, read its report, ``down -v``."""
    project = f"ddnn-bench-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "docker-compose.bench.yml").write_text(json.dumps(override(w), indent=2))
    base = [*compose, "-p", project, "-f", str(COMPOSE_FILE), "-f", str(work / "docker-compose.bench.yml")]
    env = {**os.environ, **COMPOSE_ENV}

    def call(*args: str, timeout: float) -> None:
        done = subprocess.run([*base, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(compose)} {' '.join(args)} failed ({done.returncode}):\n"
                               f"{done.stderr[-3000:]}")

    t0 = time.monotonic()
    try:
        print(f"compose project {project}: up ...", flush=True)
        call("up", "-d", "--no-build", timeout=UP_TIMEOUT_S)
        up_s = time.monotonic() - t0
        containers = {c.labels["com.docker.compose.service"]: c for c in client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={project}"})}
        loadgen = containers["loadgen"]
        with cpu.Sampler(cpu.container_reader({s: c.id for s, c in containers.items()})) as sampler:
            code = loadgen.wait(timeout=REPLAY_TIMEOUT_S)["StatusCode"]
            rest = time.time()
            time.sleep(REST_S)
        print(loadgen.logs(tail=30).decode(errors="replace"), flush=True)
        if code != 0:
            raise RuntimeError(f"compose loadgen exited {code}")
        data, written = read_from(loadgen, "/results/report.json")
        report = json.loads(data)
    finally:
        call("down", "-v", "--remove-orphans", "-t", "30", timeout=DOWN_TIMEOUT_S)
    return {**side(report), "up_s": up_s, "total_s": time.monotonic() - t0, "project": project,
            "cpu": replay_cpu(sampler, report, written), "at_rest": cpu.window(sampler.samples, rest, rest + REST_S)}


# -- the whole section -----------------------------------------------------------------------------

def run(images: int = 10_000, rounds: int = 3, work: Path | None = None) -> dict:
    client, error = engine_client()
    compose = compose_command()
    reason = skip_reason(error, compose, missing_images(client) if client else [])
    if reason:
        print(f"compose section skipped: {reason}", flush=True)
        return {"skipped": reason}
    work = work or Path(tempfile.mkdtemp(prefix="ddnn-bench-compose-"))
    w = workload(images)
    result = {"workload": dataclasses.asdict(w), "override": override(w), "compose": " ".join(compose),
              "images": image_facts(client), "healthcheck_probe_cpu_s": probe_cpu_s(client),
              "machine_cores": os.cpu_count(), "rounds": []}
    result["workload"]["policy"] = Path(w.policy).name
    for r in range(rounds):  # alternate, so drift in the machine's load hits both sides
        local = local_round(w, work / f"local{r}")
        result["rounds"].append({"local": local, "compose": compose_round(w, work / f"compose{r}", client, compose)})
    result.update(summarize(result["rounds"]))
    return result


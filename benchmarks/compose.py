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

It also records each ddnn image's size and whether torch is installed in it. Without a Docker
engine, Compose or the images, the section records why it did not run instead of failing.
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
from pathlib import Path

import tomllib

from ddnn.launch import compose_command
from ddnn.paths import REPO_ROOT

VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
IMAGES = ("edge", "cloud", "loadgen", "prometheus")  # ddnn-<name>:VERSION, built by make images
PYTHON_IMAGES = ("edge", "cloud", "loadgen")  # the ones that must serve without torch
RATIO_GOAL = 0.9  # compose throughput / local throughput
EDGE_SIZE_GOAL_MB = 400
MB = 1e6  # as `docker images` and make images print sizes
# As tests/containers does: the Prometheus image make images builds, host ports chosen by the engine.
COMPOSE_ENV = {"DDNN_PROMETHEUS_IMAGE": f"ddnn-prometheus:{VERSION}", "DDNN_EDGE_PORT": "0",
               "DDNN_PROMETHEUS_PORT": "0", "DDNN_GRAFANA_PORT": "0"}
# The demo's load generator reads DDNN_LOADGEN_* too: no progress bar, as the compose one (whose
# report otherwise carries the same settings).
LOCAL_ENV = {"DDNN_LOADGEN_PROGRESS": "false"}
UP_TIMEOUT_S = 900  # triton exports and starts (minutes on 2 shared cores), then cloud, edge, loadgen
REPLAY_TIMEOUT_S = 1800
DOWN_TIMEOUT_S = 300
TORCH_PROBE = ("import importlib.metadata as m, json\n"
               "try:\n    v = m.version('torch')\nexcept m.PackageNotFoundError:\n    v = None\n"
               "try:\n    import torch  # noqa\n    ok = True\nexcept ImportError:\n    ok = False\n"
               "print(json.dumps({'installed': v, 'importable': ok}))")


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


def image_facts(client) -> dict:
    """Size (MB) of every ddnn image and, for the Python ones, whether torch is installed/importable."""
    out = {}
    for name in IMAGES:
        tag = f"ddnn-{name}:{VERSION}"
        facts = {"size_mb": client.images.get(tag).attrs["Size"] / MB}
        if name in PYTHON_IMAGES:
            logs = client.containers.run(tag, ["-c", TORCH_PROBE], entrypoint="python", network_mode="none",
                                         remove=True)
            facts["torch"] = json.loads(logs.decode().strip().splitlines()[-1])
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
    with environ(**LOCAL_ENV):
        rc = demo_run(demo_args(w.images, w.engine, w.policy, out))
    if rc != 0:
        raise RuntimeError(f"ddnn demo exited {rc}; logs in {out / 'logs'}")
    return {**side(json.loads((out / "report.json").read_text())), "total_s": time.monotonic() - t0}


def read_from(container, path: str) -> bytes:
    """A file out of a (running or exited) container, through the engine's archive API."""
    stream, _ = container.get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        return tar.extractfile(tar.getmembers()[0]).read()


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
        [loadgen] = client.containers.list(all=True, filters={"label": [
            f"com.docker.compose.project={project}", "com.docker.compose.service=loadgen"]})
        code = loadgen.wait(timeout=REPLAY_TIMEOUT_S)["StatusCode"]
        print(loadgen.logs(tail=30).decode(errors="replace"), flush=True)
        if code != 0:
            raise RuntimeError(f"compose loadgen exited {code}")
        report = json.loads(read_from(loadgen, "/results/report.json"))
    finally:
        call("down", "-v", "--remove-orphans", "-t", "30", timeout=DOWN_TIMEOUT_S)
    return {**side(report), "up_s": up_s, "total_s": time.monotonic() - t0, "project": project}


# -- the whole section -----------------------------------------------------------------------------

def summarize(rounds: list[dict]) -> dict:
    """Medians of each side, their ratio (compose / local), each round's ratio, and the goal."""
    local = [r["local"]["throughput"] for r in rounds]
    comp = [r["compose"]["throughput"] for r in rounds]
    ratio = statistics.median(comp) / statistics.median(local)
    return {"local_median": statistics.median(local), "compose_median": statistics.median(comp), "ratio": ratio,
            "round_ratios": [c / lo for c, lo in zip(comp, local, strict=True)], "goal_met": ratio >= RATIO_GOAL}


def same_workload(rounds: list[dict]) -> bool:
    """Both sides replayed the same way and gave the same exits and accuracy (same engine, policy, data)."""
    keys = ("replay", "samples", "exit_rates", "accuracy")
    first = rounds[0]["local"]
    return all(r[s][k] == first[k] for r in rounds for s in ("local", "compose") for k in keys)


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
              "images": image_facts(client), "rounds": []}
    result["workload"]["policy"] = Path(w.policy).name
    for r in range(rounds):  # alternate, so drift in the machine's load hits both sides
        local = local_round(w, work / f"local{r}")
        result["rounds"].append({"local": local, "compose": compose_round(w, work / f"compose{r}", client, compose)})
    result.update(summarize(result["rounds"]), same_workload=same_workload(result["rounds"]))
    return result


# -- BENCHMARKS.md ---------------------------------------------------------------------------------

def _rates(x: dict) -> str:
    return f"cloud {100 * x['exit_rates']['cloud']:.2f}%, acc. {100 * x['accuracy']:.2f}%"


def render(r: dict) -> list[str]:
    if "skipped" in r:
        return [f"Not measured: {r['skipped']}."]
    w = r["workload"]
    lines = [f"Closed-loop replay of the first {w['images']:,} test images (shuffled, seed 0) in batches of "
             f"{w['batch_size']} on {w['concurrency']} streams; edge engine {w['engine']} with policy "
             f"`{w['policy']}`, mode {w['mode']}, payload {w['payload']}, cloud on Triton. **local**: `ddnn demo` "
             "(processes on loopback; the cloud starts its own Triton). **compose**: docker-compose.yml under a "
             f"fresh project (`{r['compose']} -p ddnn-bench-<random> -f docker-compose.yml -f <override> up -d "
             "--no-build`, then `down -v`) with an override that sets the same replay, engine, policy and no "
             "SLO controller on the edge, and Triton's ONNX Runtime threads to the demo's. Throughput is the load "
             "generator's own (samples / replay wall time, clock started once the edge answers: start-up "
             "excluded), alternating local and compose on the same machine:", "",
             "| round | local samples/s | compose samples/s | compose / local | compose up (s) |",
             "|---|---|---|---|---|"]
    for i, (x, c) in enumerate(zip(r["rounds"], r["round_ratios"], strict=True)):
        lines.append(f"| {i + 1} | {x['local']['throughput']:,.0f} | {x['compose']['throughput']:,.0f} | {c:.2f} | "
                     f"{x['compose']['up_s']:.0f} |")
    first = r["rounds"][0]
    lines += ["", f"Medians: local {r['local_median']:,.0f}, compose {r['compose_median']:,.0f} samples/s; ratio "
              f"**{r['ratio']:.2f}**: goal >= {RATIO_GOAL} {'met' if r['goal_met'] else '**missed**'}. "
              f"Same workload on both sides (replay settings, exits and accuracy equal in every round): "
              f"{'yes' if r['same_workload'] else '**no**'} (local {_rates(first['local'])}; compose "
              f"{_rates(first['compose'])}).", "",
              f"Images (`docker image inspect` Size, MB = 10^6 bytes; goal: edge <= {EDGE_SIZE_GOAL_MB} MB, no torch):",
              "", "| image | MB | torch |", "|---|---|---|"]
    for name, f in r["images"].items():
        t = f.get("torch")
        torch = "-" if t is None else ("not installed, not importable" if not t["installed"] and not t["importable"]
                                       else f"installed {t['installed']}, importable {t['importable']}")
        lines.append(f"| ddnn-{name}:{VERSION} | {f['size_mb']:,.0f} | {torch} |")
    edge = r["images"]["edge"]
    ok = edge["size_mb"] <= EDGE_SIZE_GOAL_MB and not any(
        f["torch"]["installed"] or f["torch"]["importable"] for f in r["images"].values() if "torch" in f)
    lines += ["", f"Edge {edge['size_mb']:,.0f} MB, no torch in any service image: "
              f"goal {'met' if ok else '**missed**'}."]
    return lines

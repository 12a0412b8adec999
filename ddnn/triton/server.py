"""Run a Triton server for a model repository, or use one that is already running.

``TritonServer`` starts the ``tritonserver`` binary that the nvidia-pytriton wheel ships (or the
one ``$DDNN_TRITONSERVER`` names) as a subprocess on loopback ports of its own, with the Python
backend's stub for this interpreter, and the environment that lets the stub import torch and
ddnn from this interpreter's environment (see docs/triton.md). ``ExistingTriton`` waits for a
server given by address. Both are context managers with the same ``url`` / ``start`` / ``stop``.

Example::

    with TritonServer("triton-repo") as triton:
        client = TritonClient(triton.url)
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import weakref
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from ddnn.errors import NotFound, NotReady
from ddnn.triton.repository import MANIFEST_NAME, load_manifest

log = logging.getLogger(__name__)

ENV_BINARY = "DDNN_TRITONSERVER"
ENV_BACKEND_DIR = "DDNN_TRITON_BACKEND_DIR"
ENV_SITE_DIRS = "DDNN_TRITON_SITE_DIRS"  # read by backend_model.py inside the stub
STUB_NAME = "triton_python_backend_stub"
CONTROL_KEY = "ddnn-model-control"  # --grpc-restricted-protocol=model-repository:<key>=<secret>
# ... and the metadata key a gRPC client then sends (Triton prefixes the key it was given).
CONTROL_HEADER = f"triton-grpc-protocol-{CONTROL_KEY}"
BACKEND_LIB = "libtriton_python.so"


class TritonNotInstalled(FileNotFoundError):
    """The tritonserver binary, the Python backend or its stub for this Python is missing."""


class TritonStartupError(NotReady):
    """tritonserver exited or did not become ready in time; the message ends with its log tail."""

    def __init__(self, message: str, log_tail: str = ""):
        self.log_tail = log_tail
        super().__init__(f"{message}\n--- tritonserver log (last lines) ---\n{log_tail}" if log_tail else message)


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


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free right now (bind port 0, read it back, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def repository_models(repository: Path) -> list[str]:
    """Models a repository serves: from its manifest, else every directory with a config.pbtxt."""
    if (repository / MANIFEST_NAME).is_file():
        return list(load_manifest(repository).model_names)
    return sorted(p.parent.name for p in repository.glob("*/config.pbtxt"))


def wait_until_ready(url: str, models: list[str], timeout: float, process: subprocess.Popen | None = None,
                     log_path: Path | None = None, interval: float = 0.1) -> None:
    """Poll ``url`` until the server and every model are ready; raise TritonStartupError otherwise.

    Fails at once if ``process`` exits, and names the models that never became ready.
    """
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    deadline = time.monotonic() + timeout
    pending = list(models)
    server_ready = False
    last_error = ""
    with grpcclient.InferenceServerClient(url) as client:
        while True:
            if process is not None and process.poll() is not None:
                raise TritonStartupError(f"tritonserver exited with code {process.returncode} during startup",
                                         log_tail(log_path))
            try:
                server_ready = client.is_server_ready(client_timeout=2.0)
                if server_ready:
                    pending = [m for m in pending if not client.is_model_ready(m, client_timeout=2.0)]
                    if not pending:
                        return
            except InferenceServerException as exc:
                last_error = exc.message() or str(exc)
            if time.monotonic() >= deadline:
                what = f"models not ready: {pending}" if server_ready else "server not ready"
                detail = f" (last error: {last_error})" if last_error else ""
                raise TritonStartupError(f"Triton at {url} not ready after {timeout:g}s; {what}{detail}",
                                         log_tail(log_path))
            time.sleep(interval)


def log_tail(path: Path | None, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ('' if there is none)."""
    if path is None or not Path(path).is_file():
        return ""
    with open(path, errors="replace") as f:
        return "".join(deque(f, maxlen=lines)).rstrip()


_STALE_SHM = re.compile(r"^ddnn_triton_(?:client_)?(\d+)_")
_WORK_DIR_PREFIX = "ddnn-triton-"
_STALE_WORK_DIR = re.compile(rf"^{_WORK_DIR_PREFIX}(\d+)-")


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_stale_shared_memory(shm_dir: Path = Path("/dev/shm")) -> list[str]:
    """Remove shared-memory files that ddnn's Tritons and clients made in processes that are gone.

    Named ``ddnn_triton_<pid>_…`` (the Python backend's regions, prefix set by the launcher) and
    ``ddnn_triton_client_<pid>_…`` (client regions); a server or client killed with SIGKILL leaves them.
    """
    removed = []
    for f in shm_dir.glob("ddnn_triton_*"):
        m = _STALE_SHM.match(f.name)
        if m and _pid_gone(int(m.group(1))):
            with contextlib.suppress(OSError):
                f.unlink()
                removed.append(f.name)
    return removed


def remove_stale_work_dirs(tmp_dir: Path | None = None) -> list[str]:
    """Remove launcher work directories (``ddnn-triton-<pid>-…``) whose launcher process is gone."""
    removed = []
    for d in Path(tmp_dir or tempfile.gettempdir()).glob(f"{_WORK_DIR_PREFIX}*"):
        m = _STALE_WORK_DIR.match(d.name)
        if m and d.is_dir() and _pid_gone(int(m.group(1))):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d.name)
    return removed


def _die_with_parent():
    """preexec_fn for Linux: Triton gets SIGTERM when the thread that launched it dies.

    Without it a launcher killed by SIGKILL (or by SIGTERM without a handler) leaves tritonserver
    running forever, since it runs in a session of its own.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork: the child only calls it
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    """Wait until no process of the group is left (killed stubs take a moment to be reaped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return True
        time.sleep(0.05)
    return False


def _cleanup(proc: subprocess.Popen, shm_prefix: str) -> None:
    """Last resort when a server object is collected or the interpreter exits while Triton runs."""
    if proc.poll() is None:
        _kill_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    _kill_group(proc.pid, signal.SIGKILL)  # stubs orphaned by a killed server
    if not _wait_group_gone(proc.pid, 5.0):
        log.warning("processes of tritonserver's group %s still exist after SIGKILL", proc.pid)
    for f in Path("/dev/shm").glob(f"{shm_prefix}*"):
        with contextlib.suppress(OSError):
            f.unlink()


class TritonServer:
    """A ``tritonserver`` subprocess serving one or more model repositories.

    Args:
        repositories: model repository directories (``ddnn export-triton`` output).
        models: models to load and wait for; default every model the repositories list.
        host: address the endpoints bind to (``0.0.0.0`` to serve other machines).
        grpc_port, http_port, metrics_port: 0 = a free port of its own; ``http_port=None`` or
            ``metrics_port=None`` turns that endpoint off.
        startup_timeout: seconds to wait for the server and every model to be ready.
        stop_grace: seconds between SIGTERM (Triton drains in-flight requests) and SIGKILL.
        log_path: tritonserver's stdout/stderr; default a temporary file removed on stop.
        model_control_mode: ``explicit`` (load ``models`` at startup) or ``poll`` (also reload
            changed models every ``poll_secs``).
        shm_bytes: initial shared memory per model instance between Triton and the stub (the
            backend grows it in steps of the same size; a 1 MiB default would grow per request).
        extra_args: more tritonserver flags.
        lock_model_control: refuse Triton's model-repository API (load/unload/index) to any
            client without the header :attr:`control_header`, a secret made per server, so
            whoever reaches Triton's ports cannot unload the models the cloud depends on
            (HTTP, when on, asks for the header ``ddnn-model-control`` with the same secret).

    On Linux Triton is told to stop (SIGTERM) when the thread that called :meth:`start` dies, so
    a killed launcher leaves no server behind: start it from a thread that outlives the server.
    """

    def __init__(self, repositories: str | Path | list[str | Path], *, models: list[str] | None = None,
                 host: str = "127.0.0.1", grpc_port: int = 0, http_port: int | None = 0,
                 metrics_port: int | None = 0, startup_timeout: float = 120.0, stop_grace: float = 10.0,
                 log_path: str | Path | None = None, model_control_mode: str = "explicit", poll_secs: int = 5,
                 shm_bytes: int = 16 << 20, extra_args: list[str] | None = None,
                 install: TritonInstall | None = None, lock_model_control: bool = True):
        repos = [repositories] if isinstance(repositories, (str, Path)) else list(repositories)
        self.repositories = [Path(r).resolve() for r in repos]
        for r in self.repositories:
            if not r.is_dir():
                raise NotFound(f"model repository {r} does not exist")
        if model_control_mode not in ("explicit", "poll"):
            raise ValueError(f"model_control_mode must be 'explicit' or 'poll', got {model_control_mode!r}")
        self.models = list(models) if models is not None else [m for r in self.repositories
                                                                  for m in repository_models(r)]
        self.host = host
        self._ports = {"grpc": grpc_port, "http": http_port, "metrics": metrics_port}
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self._log_path = Path(log_path) if log_path else None
        self.model_control_mode = model_control_mode
        self.poll_secs = poll_secs
        self.shm_bytes = shm_bytes
        self.extra_args = list(extra_args or [])
        self._control_secret = secrets.token_hex(16) if lock_model_control else ""
        self._install = install
        self.process: subprocess.Popen | None = None
        self.ports: dict[str, int | None] = {}
        self.log_path: Path | None = None
        self._work_dir: str | None = None
        self._backend_dir: Path | None = None
        self._shm_prefix = ""
        self._finalizer = None

    # -- endpoints ---------------------------------------------------------------------------
    @property
    def _connect_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    @property
    def url(self) -> str:
        """gRPC address for tritonclient (``host:port``)."""
        return f"{self._connect_host}:{self.ports['grpc']}"

    @property
    def http_url(self) -> str | None:
        return f"{self._connect_host}:{self.ports['http']}" if self.ports.get("http") else None

    @property
    def metrics_url(self) -> str | None:
        return f"http://{self._connect_host}:{self.ports['metrics']}/metrics" if self.ports.get("metrics") else None

    @property
    def control_header(self) -> dict[str, str] | None:
        """gRPC metadata that unlocks Triton's model-repository API (None: not locked)."""
        return {CONTROL_HEADER: self._control_secret} if self._control_secret else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- lifecycle ---------------------------------------------------------------------------
    def command(self) -> list[str]:
        """The tritonserver command line for the current ports (after :meth:`start` picked them)."""
        install = self._install
        p = self.ports
        cmd = [str(install.binary)]
        cmd += [f"--model-repository={r}" for r in self.repositories]
        cmd += [f"--backend-directory={self._backend_dir}",
                f"--model-control-mode={self.model_control_mode}",
                "--strict-readiness=true", "--exit-on-error=true",
                # The configs are complete: without this the Python backend starts one extra stub per
                # model (importing torch) only to ask model.py for a config.
                "--disable-auto-complete-config",
                f"--exit-timeout-secs={max(1, int(self.stop_grace))}",
                f"--grpc-address={self.host}", f"--grpc-port={p['grpc']}",
                # Let clients keep idle connections alive with pings every >= 10 s (see TritonClient).
                "--grpc-keepalive-permit-without-calls=true", "--grpc-http2-max-pings-without-data=0",
                "--grpc-http2-min-recv-ping-interval-without-data=10000",
                f"--backend-config=python,shm-default-byte-size={self.shm_bytes}",
                f"--backend-config=python,shm-growth-byte-size={self.shm_bytes}",
                f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
                "--log-verbose=0", "--log-info=true"]
        if self._control_secret:
            cmd += [f"--grpc-restricted-protocol=model-repository:{CONTROL_KEY}={self._control_secret}"]
            if self._ports["http"] is not None:
                cmd += [f"--http-restricted-api=model-repository:{CONTROL_KEY}={self._control_secret}"]
        if self.model_control_mode == "explicit":
            cmd += [f"--load-model={m}" for m in self.models] if self.models else ["--load-model=*"]
        else:
            cmd += [f"--repository-poll-secs={self.poll_secs}"]
        if p["http"] is None:
            cmd += ["--allow-http=false"]
        else:
            cmd += ["--allow-http=true", f"--http-address={self.host}", f"--http-port={p['http']}"]
        if p["metrics"] is None:
            cmd += ["--allow-metrics=false"]
        else:
            cmd += ["--allow-metrics=true", "--allow-gpu-metrics=false", f"--metrics-address={self.host}",
                    f"--metrics-port={p['metrics']}"]
        return cmd + self.extra_args

    def start(self) -> TritonServer:
        """Launch tritonserver and wait until it and every model is ready.

        Raises:
            TritonNotInstalled: the binary, backend or stub is missing (named).
            TritonStartupError: the server exited or was not ready within ``startup_timeout``;
                the message ends with the tail of its log. The process is stopped first.
        """
        if self.running:
            return self
        self._install = self._install or find_tritonserver()
        for name in remove_stale_shared_memory():
            log.info("removed stale shared memory /dev/shm/%s", name)
        for name in remove_stale_work_dirs():
            log.info("removed the work directory %s of a launcher that is gone", name)
        self._work_dir = tempfile.mkdtemp(prefix=f"{_WORK_DIR_PREFIX}{os.getpid()}-")
        weakref.finalize(self, shutil.rmtree, self._work_dir, True)  # if stop() is never called
        self._backend_dir = assemble_backend_directory(self._install, Path(self._work_dir) / "backends")
        self.log_path = self._log_path or Path(self._work_dir) / "tritonserver.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = stub_environment(install=self._install)
        for attempt in range(3):  # a port picked free can be taken before Triton binds it
            self.ports = {k: (free_port(self.host) if v == 0 else v) for k, v in self._ports.items()}
            self._shm_prefix = f"ddnn_triton_{os.getpid()}_{id(self) & 0xFFFFFF:x}_{attempt}_"
            self._launch(env)
            try:
                deadline = time.monotonic() + self.startup_timeout
                wait_until_ready(self.url, self.models, self.startup_timeout, self.process, self.log_path)
                self._wait_other_endpoints(deadline)
                log.info("Triton ready at %s (models %s, log %s)", self.url, self.models, self.log_path)
                return self
            except TritonStartupError as exc:
                self.stop(keep_work_dir=True)
                if not (attempt < 2 and self._picked_port_was_taken(exc.log_tail)):
                    self._remove_work_dir()
                    raise
                log.warning("a port picked for Triton was taken before Triton bound it; retrying with new ports")
        raise AssertionError("unreachable")

    def _picked_port_was_taken(self, log_text: str) -> bool:
        """Whether Triton failed because a port *we* picked was taken meanwhile (a fixed one stays taken)."""
        lines = [ln for ln in log_text.splitlines() if "in use" in ln.lower()]
        picked = [port for name, port in self.ports.items() if self._ports[name] == 0 and port]
        return any(f":{port}" in ln for ln in lines for port in picked)

    def _wait_other_endpoints(self, deadline: float) -> None:
        """Triton reports ready over gRPC before it has bound HTTP and metrics, and exits if either
        port is taken: wait until they answer too (or the process exits)."""
        import urllib.error
        import urllib.request

        urls = [u for u in (f"http://{self.http_url}/v2/health/ready" if self.http_url else None, self.metrics_url)
                if u]
        for url in urls:
            while True:
                if self.process.poll() is not None:
                    raise TritonStartupError(f"tritonserver exited with code {self.process.returncode} during "
                                             "startup", log_tail(self.log_path))
                try:
                    with urllib.request.urlopen(url, timeout=2) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() >= deadline:
                    raise TritonStartupError(f"Triton endpoint {url} not answering after {self.startup_timeout:g}s",
                                             log_tail(self.log_path))
                time.sleep(0.1)
        if self.process.poll() is not None:
            raise TritonStartupError(f"tritonserver exited with code {self.process.returncode} during startup",
                                     log_tail(self.log_path))

    def _launch(self, env: dict[str, str]) -> None:
        cmd = self.command()
        log.debug("starting %s", " ".join(cmd))
        with open(self.log_path, "ab") as logf:
            # Own session: stop() can signal Triton and the stub processes it forks, and nothing else.
            self.process = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env, start_new_session=True, cwd=self._work_dir,
                                            preexec_fn=_die_with_parent())
        self._finalizer = weakref.finalize(self, _cleanup, self.process, self._shm_prefix)

    def stop(self, keep_work_dir: bool = False) -> int | None:
        """SIGTERM (Triton drains in-flight requests), SIGKILL after ``stop_grace``; returns the exit code."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_grace + 5)  # Triton itself gives up on in-flight work after stop_grace
            except subprocess.TimeoutExpired:
                log.warning("tritonserver (pid %s) did not stop after SIGTERM; killing it", proc.pid)
                _kill_group(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if self._finalizer is not None:
            self._finalizer()  # stray stubs, leftover shared memory
            self._finalizer = None
        if not keep_work_dir:
            self._remove_work_dir()
        return proc.returncode

    def _remove_work_dir(self) -> None:
        if self._work_dir:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class ExistingTriton:
    """A Triton server run by someone else (a container, another host): wait for it, never stop it."""

    def __init__(self, address: str, *, models: list[str] | None = None, startup_timeout: float = 60.0):
        self.url = address.removeprefix("grpc://")
        self.models = list(models or [])
        self.startup_timeout = startup_timeout

    def start(self) -> ExistingTriton:
        wait_until_ready(self.url, self.models, self.startup_timeout)
        return self

    def stop(self) -> None:
        """Nothing to stop: the server is not ours."""

    def __enter__(self) -> ExistingTriton:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def triton(address: str | None = None, repository: str | Path | list[str | Path] | None = None,
           **kwargs) -> TritonServer | ExistingTriton:
    """The Triton a service should use: the one at ``address`` if given, else one launched on ``repository``.

    ``models`` (and the other keyword arguments of :class:`TritonServer`) pass through.
    """
    if address:
        allowed = {k: v for k, v in kwargs.items() if k in ("models", "startup_timeout")}
        return ExistingTriton(address, **allowed)
    if repository is None:
        raise ValueError("give a Triton address or a model repository to launch Triton on")
    return TritonServer(repository, **kwargs)


def main(argv: list[str] | None = None) -> int:
    """``python -m ddnn.triton.server REPO [REPO ...]``: run Triton in the foreground until SIGTERM/Ctrl-C."""
    import argparse
    import json

    from ddnn.logs import configure_logging

    p = argparse.ArgumentParser(prog="python -m ddnn.triton.server", description=main.__doc__)
    p.add_argument("repositories", nargs="+", help="model repositories (ddnn export-triton output)")
    p.add_argument("--models", help="models to load, comma-separated (default: every model listed)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--grpc-port", type=int, default=0, help="0 = a free port")
    p.add_argument("--http-port", type=int, default=0, help="0 = a free port, -1 = off")
    p.add_argument("--metrics-port", type=int, default=0, help="0 = a free port, -1 = off")
    p.add_argument("--log", help="tritonserver log file (default: a temporary file)")
    p.add_argument("--startup-timeout", type=float, default=120.0)
    args = p.parse_args(argv)
    configure_logging()
    server = TritonServer(args.repositories, models=args.models.split(",") if args.models else None,
                          host=args.host, grpc_port=args.grpc_port,
                          http_port=None if args.http_port < 0 else args.http_port,
                          metrics_port=None if args.metrics_port < 0 else args.metrics_port,
                          log_path=args.log, startup_timeout=args.startup_timeout)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    try:
        with server:
            print(json.dumps({"grpc": server.url, "http": server.http_url, "metrics": server.metrics_url,
                              "models": server.models, "log": str(server.log_path), "pid": server.process.pid}),
                  flush=True)
            while not stopping and server.running:
                time.sleep(0.5)
            if not server.running:
                log.error("tritonserver exited with code %s:\n%s", server.process.returncode, server.log_tail())
                return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

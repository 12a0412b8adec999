"""Run a Triton server for a model repository, or use one that is already running.

``TritonServer`` starts the ``tritonserver`` binary (found by :mod:`ddnn.triton.install`) as a
subprocess on loopback ports of its own, with flags built by its
:class:`~ddnn.triton.config.TritonServerConfig`, in a process group tied to the launcher's life
(:mod:`ddnn.triton.processes`), after removing what killed launchers left behind
(:mod:`ddnn.triton.cleanup`). ``ExistingTriton`` waits for a server given by address. Both are
context managers with the same ``url`` / ``start`` / ``stop``. ``python -m ddnn.triton`` runs one
in the foreground.

Example::

    with TritonServer("triton-repo") as triton:
        client = TritonClient(triton.url)

The names other modules used to import from here when this module did all of the above are
re-exported, so ``from ddnn.triton.server import free_port`` keeps working.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from dataclasses import replace
from pathlib import Path

from ddnn.errors import NotFound
from ddnn.triton.cleanup import (
    remove_shared_memory,
    remove_stale_shared_memory,
    remove_stale_work_dirs,
    server_shm_prefix,
    work_dir_prefix,
)
from ddnn.triton.config import CONTROL_HEADER, CONTROL_KEY, TritonServerConfig
from ddnn.triton.install import (
    ENV_SITE_DIRS,
    TritonInstall,
    TritonNotInstalled,
    assemble_backend_directory,
    find_tritonserver,
    stub_environment,
)
from ddnn.triton.processes import die_with_parent, kill_group, wait_group_gone
from ddnn.triton.readiness import (
    TritonStartupError,
    free_port,
    log_tail,
    repository_models,
    wait_http_endpoints,
    wait_until_ready,
)

__all__ = [
    "CONTROL_HEADER",
    "CONTROL_KEY",
    "ENV_SITE_DIRS",
    "ExistingTriton",
    "TritonInstall",
    "TritonNotInstalled",
    "TritonServer",
    "TritonServerConfig",
    "TritonStartupError",
    "assemble_backend_directory",
    "find_tritonserver",
    "free_port",
    "log_tail",
    "remove_stale_shared_memory",
    "remove_stale_work_dirs",
    "repository_models",
    "stub_environment",
    "wait_until_ready",
]

log = logging.getLogger(__name__)


def _cleanup(proc: subprocess.Popen, shm_prefix: str, wait: float) -> None:
    """Last resort when a server object is collected or the interpreter exits while Triton runs."""
    if proc.poll() is None:
        kill_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
    kill_group(proc.pid, signal.SIGKILL)  # stubs orphaned by a killed server
    if not wait_group_gone(proc.pid, wait):
        log.warning("processes of tritonserver's group %s still exist after SIGKILL", proc.pid)
    remove_shared_memory(shm_prefix)


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

    :meth:`from_config` takes a :class:`~ddnn.triton.config.TritonServerConfig` instead, which
    also names every wait of the launcher (probe deadlines, kill and cleanup waits).

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
        config = TritonServerConfig(
            tuple(Path(r) for r in repos), tuple(models) if models is not None else None, host, grpc_port,
            http_port, metrics_port, Path(log_path) if log_path else None, model_control_mode, poll_secs, shm_bytes,
            tuple(extra_args or ()), lock_model_control, startup_timeout=startup_timeout, stop_grace=stop_grace)
        self._setup(config, install)

    @classmethod
    def from_config(cls, config: TritonServerConfig, install: TritonInstall | None = None) -> TritonServer:
        """A server for ``config`` (not started)."""
        server = cls.__new__(cls)
        server._setup(config, install)
        return server

    def _setup(self, config: TritonServerConfig, install: TritonInstall | None) -> None:
        config = replace(config, repositories=tuple(Path(r).resolve() for r in config.repositories))
        for r in config.repositories:
            if not r.is_dir():
                raise NotFound(f"model repository {r} does not exist")
        if config.models is None:
            config = replace(config, models=tuple(m for r in config.repositories for m in repository_models(r)))
        self.config = config
        self._control_secret = secrets.token_hex(16) if config.lock_model_control else ""
        self._install = install
        self.process: subprocess.Popen | None = None
        self.ports: dict[str, int | None] = {}
        self.log_path: Path | None = None
        self._work_dir: str | None = None
        self._backend_dir: Path | None = None
        self._shm_prefix = ""
        self._finalizer: weakref.finalize | None = None

    # -- settings ----------------------------------------------------------------------------
    @property
    def repositories(self) -> list[Path]:
        return list(self.config.repositories)

    @property
    def models(self) -> list[str]:
        return list(self.config.models or ())

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def startup_timeout(self) -> float:
        return self.config.startup_timeout

    @property
    def stop_grace(self) -> float:
        return self.config.stop_grace

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
        if self._install is None or self._backend_dir is None:
            raise RuntimeError("TritonServer.command() is known once start() has found the install")
        return [str(self._install.binary),
                *self.config.flags(self.ports, self._backend_dir, self._shm_prefix, self._control_secret)]

    def start(self) -> TritonServer:
        """Launch tritonserver and wait until it and every model is ready.

        Raises:
            TritonNotInstalled: the binary, backend or stub is missing (named).
            TritonStartupError: the server exited or was not ready within ``startup_timeout``;
                the message ends with the tail of its log. The process is stopped first.
        """
        if self.running:
            return self
        cfg = self.config
        self._install = self._install or find_tritonserver()
        for name in remove_stale_shared_memory():
            log.info("removed stale shared memory /dev/shm/%s", name)
        for name in remove_stale_work_dirs():
            log.info("removed the work directory %s of a launcher that is gone", name)
        self._work_dir = tempfile.mkdtemp(prefix=work_dir_prefix())
        weakref.finalize(self, shutil.rmtree, self._work_dir, True)  # if stop() is never called
        self._backend_dir = assemble_backend_directory(self._install, Path(self._work_dir) / "backends")
        log_path = self.log_path = cfg.log_path or Path(self._work_dir) / "tritonserver.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = stub_environment(install=self._install)
        for attempt in range(cfg.port_attempts):
            self.ports = {k: (free_port(cfg.host) if v == 0 else v) for k, v in cfg.requested_ports.items()}
            self._shm_prefix = server_shm_prefix(id(self), attempt)
            process = self._launch(env, log_path)
            try:
                deadline = time.monotonic() + cfg.startup_timeout
                wait_until_ready(self.url, self.models, cfg.startup_timeout, process, log_path,
                                 interval=cfg.probe_interval, probe_timeout=cfg.probe_timeout)
                urls = [u for u in (f"http://{self.http_url}/v2/health/ready" if self.http_url else None,
                                    self.metrics_url) if u]
                wait_http_endpoints(urls, deadline, cfg.startup_timeout, process, log_path,
                                    interval=cfg.probe_interval, probe_timeout=cfg.probe_timeout)
                log.info("Triton ready at %s (models %s, log %s)", self.url, self.models, self.log_path)
                return self
            except TritonStartupError as exc:
                self.stop(keep_work_dir=True)
                if not (attempt < cfg.port_attempts - 1 and self._picked_port_was_taken(exc.log_tail)):
                    self._remove_work_dir()
                    raise
                log.warning("a port picked for Triton was taken before Triton bound it; retrying with new ports")
        raise AssertionError("unreachable")

    def _picked_port_was_taken(self, log_text: str) -> bool:
        """Whether Triton failed because a port *we* picked was taken meanwhile (a fixed one stays taken)."""
        lines = [ln for ln in log_text.splitlines() if "in use" in ln.lower()]
        requested = self.config.requested_ports
        picked = [port for name, port in self.ports.items() if requested[name] == 0 and port]
        return any(f":{port}" in ln for ln in lines for port in picked)

    def _launch(self, env: dict[str, str], log_path: Path) -> subprocess.Popen:
        cmd = self.command()
        log.debug("starting %s", " ".join(cmd))
        with open(log_path, "ab") as logf:
            # Own session: stop() can signal Triton and the stub processes it forks, and nothing else.
            self.process = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env, start_new_session=True, cwd=self._work_dir,
                                            preexec_fn=die_with_parent())
        self._finalizer = weakref.finalize(self, _cleanup, self.process, self._shm_prefix, self.config.cleanup_wait)
        return self.process

    def stop(self, keep_work_dir: bool = False) -> int | None:
        """SIGTERM (Triton drains in-flight requests), SIGKILL after ``stop_grace``; returns the exit code."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                # Triton itself gives up on in-flight work after stop_grace; the margin is its teardown.
                proc.wait(self.config.stop_grace + self.config.stop_margin)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver (pid %s) did not stop after SIGTERM; killing it", proc.pid)
                kill_group(proc.pid, signal.SIGKILL)
                proc.wait(self.config.kill_wait)
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


if __name__ == "__main__":  # `python -m ddnn.triton.server`, as documented before `python -m ddnn.triton`
    import runpy

    runpy.run_module("ddnn.triton", run_name="__main__", alter_sys=True)

"""Waiting for a Triton server: ports, readiness of the server and its models, its log when it fails."""

from __future__ import annotations

import socket
import subprocess
import time
from collections import deque
from pathlib import Path

from ddnn.errors import NotReady
from ddnn.triton.repository import MANIFEST_NAME, load_manifest

LOG_TAIL_LINES = 40


class TritonStartupError(NotReady):
    """tritonserver exited or did not become ready in time; the message ends with its log tail."""

    def __init__(self, message: str, log_tail: str = ""):
        self.log_tail = log_tail
        super().__init__(f"{message}\n--- tritonserver log (last lines) ---\n{log_tail}" if log_tail else message)


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


def log_tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ('' if there is none)."""
    if path is None or not Path(path).is_file():
        return ""
    with open(path, errors="replace") as f:
        return "".join(deque(f, maxlen=lines)).rstrip()


def _check_alive(process: subprocess.Popen | None, log_path: Path | None) -> None:
    if process is not None and process.poll() is not None:
        raise TritonStartupError(f"tritonserver exited with code {process.returncode} during startup",
                                 log_tail(log_path))


def wait_until_ready(url: str, models: list[str], timeout: float, process: subprocess.Popen | None = None,
                     log_path: Path | None = None, interval: float = 0.1, probe_timeout: float = 2.0) -> None:
    """Poll ``url`` until the server and every model are ready; raise TritonStartupError otherwise.

    Fails at once if ``process`` exits, and names the models that never became ready. Each probe
    has its own deadline ``probe_timeout``, so a hung server cannot stall the loop past ``timeout``.
    """
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    deadline = time.monotonic() + timeout
    pending = list(models)
    server_ready = False
    last_error = ""
    with grpcclient.InferenceServerClient(url) as client:
        while True:
            _check_alive(process, log_path)
            try:
                server_ready = client.is_server_ready(client_timeout=probe_timeout)
                if server_ready:
                    pending = [m for m in pending if not client.is_model_ready(m, client_timeout=probe_timeout)]
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


def wait_http_endpoints(urls: list[str], deadline: float, timeout: float, process: subprocess.Popen,
                        log_path: Path | None, interval: float = 0.1, probe_timeout: float = 2.0) -> None:
    """Wait until every HTTP ``url`` answers 200 (Triton reports ready over gRPC before it has bound
    HTTP and metrics, and exits if either port is taken), or ``process`` exits, or ``deadline``
    (monotonic) passes; ``timeout`` is only for the message."""
    import urllib.error
    import urllib.request

    for url in urls:
        while True:
            _check_alive(process, log_path)
            try:
                with urllib.request.urlopen(url, timeout=probe_timeout) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() >= deadline:
                raise TritonStartupError(f"Triton endpoint {url} not answering after {timeout:g}s",
                                         log_tail(log_path))
            time.sleep(interval)
    _check_alive(process, log_path)

"""The deep segment on a real Triton server (Python backend), started here or given by address.

On start the bundle's ONNX cloud graphs are exported to a Triton model repository (one model per
split point, dynamic batching on; idempotent, so a restart reuses it) and the ``tritonserver``
binary is launched on it, unless ``--triton-url`` names a running server. A watchdog restarts a
Triton this service started if it dies; while it is down, requests fail with UNAVAILABLE and
the edge answers those samples locally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

import numpy as np

from ddnn.errors import NotReady
from ddnn.export.bundle import Bundle
from ddnn.paths import cache_dir
from ddnn.triton.client import AsyncTritonClient
from ddnn.triton.repository import ExportOptions, export_repository, load_manifest
from ddnn.triton.server import TritonServer
from services.cloud.backends import SplitModel
from services.cloud.settings import CloudSettings

log = logging.getLogger(__name__)

READY_POLL_S = 0.2  # how often start() asks Triton whether every model is ready (within --triton-ready-timeout-s)
WATCHDOG_INTERVAL_S = 1.0  # how often the watchdog checks that the tritonserver it started still runs


class TritonBackend:
    name = "triton"

    def __init__(self, ck: Bundle, splits: dict[str, SplitModel], s: CloudSettings, max_message_bytes: int):
        self.s = s
        self.max_message_bytes = max_message_bytes
        self.splits = splits
        repo = Path(s.triton_repository) if s.triton_repository else cache_dir() / "triton" / ck.checkpoint_sha256[:16]
        self.server: TritonServer | None = None
        if s.triton_url:
            manifest = load_manifest(repo)
            self.url = s.triton_url
        else:
            options = ExportOptions(max_batch_size=s.max_batch, threads=s.triton_threads,
                                    max_queue_delay_us=s.triton_max_queue_delay_us)
            manifest = export_repository(ck, repo, list(splits), options)
            self.server = TritonServer(repo, models=[manifest.model_for(x).model for x in splits], host=s.triton_host,
                                       metrics_port=s.triton_metrics_port, http_port=None,
                                       startup_timeout=s.triton_startup_timeout_s,
                                       log_path=repo.parent / f"{repo.name}.tritonserver.log")
            self.url = ""
        if manifest.checkpoint_sha256 != ck.checkpoint_sha256:
            raise ValueError(f"Triton repository {repo} was exported from checkpoint "
                             f"{manifest.checkpoint_sha256[:12]}, this service serves {ck.checkpoint_sha256[:12]}")
        self.models = {x: manifest.model_for(x).model for x in splits}
        for x in splits:
            splits[x] = SplitModel(**{**splits[x].__dict__, "triton_model": self.models[x]})
        self.client: AsyncTritonClient | None = None
        self._watchdog: asyncio.Task | None = None
        self._restarting = False

    @property
    def info(self) -> dict:
        """Triton's endpoints, for the ready file."""
        if self.server is None:
            return {"triton_url": self.url}
        return {"triton_url": self.server.url, "triton_metrics_port": self.server.ports.get("metrics")}

    async def start(self) -> None:
        if self.server is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.server.start)
            self.url = self.server.url
            if self.s.triton_restart:
                self._watchdog = asyncio.create_task(self._watch(), name="triton-watchdog")
        self.client = self._client()
        deadline = time.monotonic() + self.s.triton_ready_timeout_s
        while not await self.client.is_ready(list(self.models.values())):
            if time.monotonic() >= deadline:
                raise NotReady(f"Triton at {self.url} did not become ready with models {list(self.models.values())} "
                               f"within {self.s.triton_ready_timeout_s:g} s (--triton-ready-timeout-s)")
            await asyncio.sleep(READY_POLL_S)
        log.info("Triton at %s serves %s", self.url, self.models)

    def _client(self) -> AsyncTritonClient:
        # Shared memory only with a Triton we started: a server given by address may be elsewhere.
        return AsyncTritonClient(self.url, timeout_s=self.s.request_timeout_s,
                                 max_message_bytes=self.max_message_bytes,
                                 shared_memory=self.s.triton_shared_memory and self.server is not None)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            if self.server is None or self.server.running:
                continue
            process = self.server.process
            log.error("tritonserver exited (code %s); restarting it. Log tail:\n%s",
                      process.returncode if process is not None else None, self.server.log_tail(15))
            self._restarting = True
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.server.start)
                old, self.url = self.client, self.server.url
                self.client = self._client()
                if old is not None:
                    with contextlib.suppress(Exception):
                        await old.close()
                log.info("Triton restarted at %s", self.url)
            except Exception:
                log.exception("Triton restart failed; retrying")
            finally:
                self._restarting = False

    async def logits(self, split: str, x: np.ndarray) -> np.ndarray:
        if self.client is None or self._restarting:
            raise NotReady("Triton is restarting")
        return await self.client.infer(self.models[split], x)

    async def ready(self) -> bool:
        """Triton answers and has every model loaded (the caller bounds the wait: a hung server)."""
        if self.client is None or self._restarting or (self.server is not None and not self.server.running):
            return False
        return await self.client.is_ready(list(self.models.values()))

    async def close(self) -> None:
        if self._watchdog:
            self._watchdog.cancel()
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()
        if self.server is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.server.stop)

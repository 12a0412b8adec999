"""One long-lived bidirectional stream from the edge to the cloud, with automatic reconnection.

Feature batches are matched to answers by batch id. If the stream breaks, every pending batch
fails at once with NotReady (the edge then answers those samples locally) and the link keeps
reconnecting with exponential backoff. A batch not answered within its deadline also fails.
The link also watches the cloud's health (grpc.health.v1 Watch): while the cloud says
NOT_SERVING (its Triton is down, hung or missing a model), batches fail at once instead of
waiting for their deadline, so the edge answers them locally without delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ddnn.errors import NotReady
from ddnn.pb.ddnn.v1 import cloud_pb2, cloud_pb2_grpc
from ddnn.serving.server import TlsFiles, channel_credentials, grpc_options
from services.edge import metrics

log = logging.getLogger(__name__)

CLOUD_HEALTH_SERVICE = "ddnn.v1.Cloud"
HEALTH_RETRY_S = 0.5  # pause before reopening a health Watch that ended
HEALTH_POLL_S = 1.0  # while the cloud looks NOT_SERVING: how often to ask it directly (and the deadline)


def _ewma(old: float, new: float, alpha: float) -> float:
    return new if old == 0 else (1 - alpha) * old + alpha * new


@dataclass
class LinkEstimate:
    """Exponentially weighted estimates of the link.

    ``rtt_s`` comes from small probes (the network round trip, without cloud compute);
    ``throughput_bps`` from offloads: payload bytes over the batch's link time (its round trip
    minus the cloud's reported queue and compute time); ``error_rate`` from both.
    """

    rtt_s: float = 0.0
    throughput_bps: float = 0.0
    error_rate: float = 0.0
    observations: int = 0

    def _error(self, ok: bool, alpha: float) -> None:
        self.observations += 1
        self.error_rate = _ewma(self.error_rate if self.observations > 1 else 0.0, 0.0 if ok else 1.0,
                                1.0 if self.observations == 1 else alpha)

    def probe(self, rtt_s: float | None, alpha: float = 0.3) -> None:
        """A probe round trip (None = the probe failed)."""
        self._error(rtt_s is not None, alpha)
        if rtt_s is not None:
            self.rtt_s = _ewma(self.rtt_s, rtt_s, alpha)
        self._export()

    def offload(self, link_s: float | None, nbytes: int, alpha: float = 0.2) -> None:
        """An offloaded batch: its link time (None = it failed) and payload size."""
        self._error(link_s is not None, alpha)
        if link_s is not None and link_s > 0 and nbytes:
            self.throughput_bps = _ewma(self.throughput_bps, nbytes / link_s, alpha)
        self._export()

    def _export(self) -> None:
        metrics.LINK_RTT.set(self.rtt_s)
        metrics.LINK_THROUGHPUT.set(self.throughput_bps)
        metrics.LINK_ERROR_RATE.set(self.error_rate)


class CloudLink:
    """Client side of ``Cloud.Infer``: submit a FeatureBatch, await its CloudResult."""

    def __init__(self, target: str, max_message_bytes: int, keepalive_s: float, connect_timeout_s: float,
                 tls: TlsFiles | None = None, server_name: str = "", max_backoff_s: float = 2.0,
                 probe_interval_s: float = 0.5):
        self.target = target
        self.options = grpc_options(max_message_bytes, keepalive_s, keepalive_timeout_s=max(1.0, keepalive_s / 2))
        if server_name:
            self.options.append(("grpc.ssl_target_name_override", server_name))
        self.tls = tls or TlsFiles()
        self.connect_timeout_s = connect_timeout_s
        self.max_backoff_s = max_backoff_s
        self.connected = False
        self.serving = True  # the cloud's own health; assumed until its Watch says otherwise
        self.estimate = LinkEstimate()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._closed = False
        self.probe_interval_s = probe_interval_s
        self._stub: cloud_pb2_grpc.CloudStub | None = None
        self._probe_task: asyncio.Task | None = None

    @property
    def inflight(self) -> int:
        return len(self._pending)

    def next_batch_id(self) -> int:
        return next(self._ids)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cloud-link")
        if self.probe_interval_s > 0:
            self._probe_task = asyncio.create_task(self._probe_loop(), name="cloud-probe")

    async def _probe_loop(self) -> None:
        """Measure the network round trip with a tiny unary call, whether or not there is traffic."""
        while not self._closed:
            await asyncio.sleep(self.probe_interval_s)
            stub = self._stub
            if stub is None or not self.connected:
                continue
            t0 = time.perf_counter()
            try:
                await stub.GetStatus(cloud_pb2.CloudStatusRequest(), timeout=max(1.0, 2 * self.probe_interval_s))
                self.estimate.probe(time.perf_counter() - t0)
            except asyncio.CancelledError:
                if self._closed:
                    raise
                # The channel was closed under an in-flight probe (the link is reconnecting):
                # a failed probe, not the end of probing.
                self.estimate.probe(None)
            except Exception as exc:  # AioRpcError, UsageError on a closed channel, ...
                log.debug("probe failed: %r", exc)
                self.estimate.probe(None)

    def _channel(self) -> grpc.aio.Channel:
        if self.tls.enabled:
            return grpc.aio.secure_channel(self.target, channel_credentials(self.tls), options=self.options)
        return grpc.aio.insecure_channel(self.target, options=self.options)

    async def _requests(self, queue: asyncio.Queue):
        while (item := await queue.get()) is not None:
            yield item

    def _set_connected(self, up: bool) -> None:
        if up != self.connected:
            log.info("cloud link %s (%s)", "up" if up else "down", self.target)
        self.connected = up
        metrics.CLOUD_UP.set(1 if up else 0)

    def _set_serving(self, serving: bool) -> None:
        if serving != self.serving:
            log.warning("cloud %s reports %s", self.target, "SERVING" if serving else "NOT_SERVING")
        self.serving = serving
        metrics.CLOUD_SERVING.set(1 if serving else 0)
        if not serving:
            self._fail_pending("cloud reports NOT_SERVING (its backend is not ready)")

    async def _watch_health(self, channel: grpc.aio.Channel) -> None:
        """Follow the cloud's health for as long as this channel lives.

        A Watch stream reports transitions at once, but it can end or stall while the connection
        carrying it survives (seen after a network partition healed: the cloud's SERVING never
        arrived and every offload was answered degraded until the edge restarted). So the Watch is
        reopened whenever it ends, and while the cloud looks NOT_SERVING it is also asked directly.
        """
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=CLOUD_HEALTH_SERVICE)

        async def watch() -> None:
            while True:
                try:
                    # types-grpcio-health-checking's HealthStub declares no RPC attributes (set in __init__).
                    async for r in stub.Watch(request):  # type: ignore[attr-defined]
                        self._set_serving(r.status == health_pb2.HealthCheckResponse.SERVING)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the stream broke; reopen it while the channel lives
                    log.debug("cloud health watch ended: %r", exc)
                await asyncio.sleep(HEALTH_RETRY_S)

        async def poll_while_not_serving() -> None:
            while True:
                await asyncio.sleep(HEALTH_POLL_S)
                if self.serving:
                    continue
                try:
                    r = await stub.Check(request, timeout=HEALTH_POLL_S)  # type: ignore[attr-defined]
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # unreachable or not answering: still not serving
                    log.debug("cloud health check failed: %r", exc)
                    continue
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    self._set_serving(True)

        await asyncio.gather(watch(), poll_while_not_serving())

    def _fail_pending(self, reason: str) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(NotReady(reason))

    async def _run(self) -> None:
        backoff = 0.1
        watch: asyncio.Task | None = None
        while not self._closed:
            channel = self._channel()
            try:
                await asyncio.wait_for(channel.channel_ready(), self.connect_timeout_s)
                self._queue = asyncio.Queue()
                self._stub = cloud_pb2_grpc.CloudStub(channel)
                call = self._stub.Infer(self._requests(self._queue))
                watch = asyncio.create_task(self._watch_health(channel), name="cloud-health-watch")
                self._set_connected(True)
                backoff = 0.1
                async for result in call:
                    fut = self._pending.pop(result.batch_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(result)
                reason = "cloud closed the stream"
            except asyncio.CancelledError:
                raise
            except asyncio.TimeoutError:
                reason = f"cannot connect to the cloud at {self.target}"
            except grpc.aio.AioRpcError as exc:
                reason = f"cloud stream failed: {exc.code().name}: {exc.details()}"
            except Exception as exc:  # keep the link alive whatever happens; log it
                log.exception("cloud link error")
                reason = f"cloud link error: {exc}"
            finally:
                if watch is not None:
                    watch.cancel()
                    watch = None
                self._set_connected(False)
                self._stub = None
                if self._queue is not None:
                    self._queue.put_nowait(None)
                    self._queue = None
                await channel.close(grace=None)
            self._fail_pending(reason)
            if not self._closed:
                log.debug("%s; reconnecting in %.1fs", reason, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)

    async def infer(self, batch: cloud_pb2.FeatureBatch, timeout_s: float) -> cloud_pb2.CloudResult:
        """Send one batch and wait for its answer; NotReady if down, broken or past the deadline."""
        if not self.connected or self._queue is None:
            raise NotReady(f"cloud at {self.target} is not connected")
        if not self.serving:
            raise NotReady(f"cloud at {self.target} reports NOT_SERVING")
        fut = asyncio.get_running_loop().create_future()
        self._pending[batch.batch_id] = fut
        self._queue.put_nowait(batch)
        t0 = time.perf_counter()
        try:
            result = await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            self._pending.pop(batch.batch_id, None)
            self.estimate.offload(None, 0)
            raise NotReady(f"cloud did not answer within {timeout_s:.1f}s") from None
        except NotReady:
            self.estimate.offload(None, 0)
            raise
        if result.HasField("error"):
            self.estimate.offload(None, 0)
        else:
            link_s = time.perf_counter() - t0 - result.queue_s - result.compute_s
            self.estimate.offload(link_s, len(batch.features.data))
        return result

    async def close(self) -> None:
        self._closed = True
        if self._probe_task:
            self._probe_task.cancel()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail_pending("edge is shutting down")

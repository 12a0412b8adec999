"""Building, running and stopping a ``grpc.aio`` server the way every ddnn service does.

Health checking (grpc.health.v1) and reflection are always on; health follows a readiness probe
of the service's backend (NOT_SERVING while it fails or does not answer within its deadline);
message sizes and keepalive are explicit on both ends; on SIGTERM/SIGINT health goes NOT_SERVING,
new calls are refused and in-flight calls get ``grace_s`` to finish. :func:`serve_until_signalled`
is the one lifecycle every service runs: start, ready file, signals, drain, clean-up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ddnn.serving.errors import ErrorMappingInterceptor

log = logging.getLogger(__name__)

TRANSPORT_FACTOR = 2  # the transport's message limit, in multiples of the service's own


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS. With ``ca`` on a server, clients must present a certificate (mTLS)."""

    cert: str | None = None
    key: str | None = None
    ca: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.cert or self.key or self.ca)


@overload
def _read(path: str) -> bytes: ...
@overload
def _read(path: str | None) -> bytes | None: ...
def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read TLS file {path}: {exc.strerror}") from None


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    if not (tls.cert and tls.key):
        raise ValueError("server TLS needs both a certificate and a key (tls_cert, tls_key)")
    return grpc.ssl_server_credentials([(_read(tls.key), _read(tls.cert))], root_certificates=_read(tls.ca),
                                       require_client_auth=bool(tls.ca))


def channel_credentials(tls: TlsFiles) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=_read(tls.ca), private_key=_read(tls.key),
                                        certificate_chain=_read(tls.cert))


def grpc_options(max_message_bytes: int, keepalive_s: float = 30.0, keepalive_timeout_s: float = 10.0) -> list:
    """Channel/server options: explicit message limits and keepalive for long-lived streams."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", int(keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", int(keepalive_s * 500)),
    ]


class GrpcServer:
    """A ``grpc.aio`` server with health, reflection, the error interceptor and graceful stop."""

    def __init__(self, listen: str, max_message_bytes: int, tls: TlsFiles | None = None,
                 keepalive_s: float = 30.0, grace_s: float = 10.0,
                 ready_probe: Callable[[], Awaitable[bool]] | None = None, probe_interval_s: float = 0.5,
                 probe_timeout_s: float = 1.0, on_health: Callable[[bool], None] | None = None):
        self.listen = listen
        self.ready_probe = ready_probe
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.on_health = on_health
        self.serving: bool | None = None
        self._stopping = False
        self._probe_task: asyncio.Task | None = None
        self.tls = tls or TlsFiles()
        self.grace_s = grace_s
        # The service refuses a message over ``max_message_bytes`` itself (RESOURCE_EXHAUSTED), after
        # answering what a stream had accepted; the transport's limit, twice that, is the hard stop
        # beyond which gRPC fails the whole call at once.
        self.server = grpc.aio.server(interceptors=[ErrorMappingInterceptor(max_message_bytes)],
                                      options=[*grpc_options(TRANSPORT_FACTOR * max_message_bytes, keepalive_s),
                                               ("grpc.so_reuseport", 0)])
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names: list[str] = []
        self.port = 0

    def add(self, add_fn: Callable, servicer, full_name: str) -> None:
        add_fn(servicer, self.server)
        self.service_names.append(full_name)

    async def start(self) -> int:
        reflection.enable_server_reflection(
            [*self.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME], self.server)
        if self.tls.enabled:
            self.port = self.server.add_secure_port(self.listen, server_credentials(self.tls))
        else:
            self.port = self.server.add_insecure_port(self.listen)
        if not self.port:
            raise OSError(f"cannot listen on {self.listen}")
        await self.server.start()
        await self.set_serving(await self.probe())
        if self.ready_probe is not None:
            self._probe_task = asyncio.create_task(self._probe_loop(), name="health-probe")
        log.info("gRPC listening on port %d (%s, tls=%s)", self.port, ", ".join(self.service_names),
                 self.tls.enabled)
        return self.port

    async def probe(self) -> bool:
        """One readiness check of the backend; not answering within the deadline counts as not ready."""
        if self.ready_probe is None:
            return True
        try:
            return bool(await asyncio.wait_for(self.ready_probe(), self.probe_timeout_s))
        except asyncio.TimeoutError:
            return False
        except Exception as exc:  # a probe that fails says "not ready", whatever the reason
            log.debug("readiness probe failed: %r", exc)
            return False

    async def set_serving(self, ok: bool) -> None:
        """Health of every service name and of the server as a whole ("")."""
        if self._stopping:
            ok = False
        if ok != self.serving:
            if self.serving is not None:
                log.warning("health: %s", "SERVING (backend ready)" if ok else "NOT_SERVING (backend not ready)")
            status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ("", *self.service_names):
                await self.health.set(name, status)
            self.serving = ok
        if self.on_health is not None:
            self.on_health(ok)

    async def _probe_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.probe_interval_s)
            await self.set_serving(await self.probe())

    async def stop(self) -> None:
        self._stopping = True
        if self._probe_task is not None:
            self._probe_task.cancel()
        await self.set_serving(False)
        log.info("draining in-flight calls (grace %.1fs)", self.grace_s)
        await self.server.stop(self.grace_s)


def install_shutdown(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def write_ready_file(path: str | None, **info) -> None:
    """Atomically write ``info`` (ports, pid) as JSON, so launchers using port 0 can find us."""
    if not path:
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"pid": os.getpid(), **info}, f)
    os.replace(tmp, path)


def start_metrics_server(addr: str, port: int) -> int:
    """Serve Prometheus ``/metrics`` on ``addr:port`` (0 = any free port); return the port."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=addr)
    return server.server_port


async def serve_until_signalled(server: GrpcServer, metrics_addr: str, metrics_port: int, ready_file: str,
                                cleanup: list[Callable[[], Awaitable[None]]] | None = None,
                                **ready_info) -> None:
    """The lifecycle of every ddnn server: start gRPC and /metrics, write the ready file, wait for
    SIGTERM/SIGINT, drain (health NOT_SERVING, in-flight calls get the grace period), clean up."""
    port = await server.start()
    mport = start_metrics_server(metrics_addr, metrics_port)
    log.info("serving on port %d, metrics on %d", port, mport)
    write_ready_file(ready_file, grpc_port=port, metrics_port=mport, **ready_info)
    stop = asyncio.Event()
    install_shutdown(stop)
    await stop.wait()
    await server.stop()
    for fn in cleanup or []:
        await fn()

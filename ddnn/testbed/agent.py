"""``python -m ddnn.testbed.agent``: the testbed's hands inside a namespace.

The orchestrator runs in the host's namespace and cannot reach the testbed's addresses, so it
starts this helper inside one:

* ``watch`` (in the load generator's namespace): polls ``Edge.GetStatus`` every ``--interval``
  seconds and appends one JSON line per poll to ``--out`` (the effective-mode timeline), and
  serves commands from stdin, one JSON object a line, answered on stdout:
  ``{"configure": {"mode": "ws"}}`` (``Edge.Configure``), ``{"status": {}}`` and
  ``{"scrape": URL}`` (the edge's mode and link metrics).
* ``tcp-rtt`` (in the edge's namespace): times TCP handshakes to the cloud, which is one network
  round trip each, independent of what the services do with the link.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import time


def status_dict(st) -> dict:
    """The parts of an EdgeStatus the testbed records (not the policy document)."""
    return {"mode": st.mode, "effective_mode": st.effective_mode, "cloud_connected": st.cloud_connected,
            "payload": st.payload, "active_exits": list(st.active_exits), "inflight_samples": st.inflight_samples,
            "samples_by_outcome": dict(st.samples_by_outcome),
            "link": {"rtt_s": st.link.rtt_s, "throughput_bytes_per_s": st.link.throughput_bytes_per_s,
                     "error_rate": st.link.error_rate, "inflight_batches": st.link.inflight_batches}
            if st.HasField("link") else None}


async def watch(edge: str, interval: float, out: str, max_s: float) -> int:
    import grpc

    from ddnn.pb.ddnn.v1 import edge_pb2, edge_pb2_grpc

    loop = asyncio.get_running_loop()
    commands: asyncio.Queue = asyncio.Queue()
    buf = bytearray()

    def on_stdin() -> None:
        chunk = os.read(sys.stdin.fileno(), 4096)
        if not chunk:
            loop.remove_reader(sys.stdin.fileno())
            commands.put_nowait(None)
            return
        buf.extend(chunk)
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            if line.strip():
                commands.put_nowait(line)

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    deadline = time.monotonic() + max_s
    async with grpc.aio.insecure_channel(edge) as channel:
        stub = edge_pb2_grpc.EdgeStub(channel)

        async def handle(line: bytes) -> dict:
            try:
                cmd = json.loads(line)
                if "configure" in cmd:
                    st = await stub.Configure(edge_pb2.ConfigureRequest(**cmd["configure"]), timeout=10)
                elif "status" in cmd:
                    st = await stub.GetStatus(edge_pb2.StatusRequest(), timeout=10)
                elif "scrape" in cmd:
                    return {"ok": True, "metrics": await asyncio.to_thread(scrape_edge, cmd["scrape"])}
                else:
                    return {"ok": False, "error": f"unknown command {cmd}"}
                return {"ok": True, "status": status_dict(st)}
            except (ValueError, TypeError, OSError, grpc.aio.AioRpcError) as exc:
                return {"ok": False, "error": str(exc)}

        with open(out, "a") as f:
            next_poll = time.monotonic()
            while time.monotonic() < deadline:
                now = time.monotonic()
                if now >= next_poll:
                    t = time.time()
                    try:
                        st = await stub.GetStatus(edge_pb2.StatusRequest(), timeout=max(1.0, 4 * interval))
                        rec = {"t": t, "ok": True, **status_dict(st)}
                    except grpc.aio.AioRpcError as exc:
                        rec = {"t": t, "ok": False, "error": exc.code().name}
                    f.write(json.dumps(rec) + "\n")
                    f.flush()
                    next_poll += interval
                    if next_poll < time.monotonic():  # fell behind (a slow poll): do not burst
                        next_poll = time.monotonic() + interval
                    continue
                try:
                    line = await asyncio.wait_for(commands.get(), next_poll - now)
                except asyncio.TimeoutError:
                    continue
                if line is None:
                    break
                sys.stdout.write(json.dumps(await handle(line)) + "\n")
                sys.stdout.flush()
    return 0


def scrape_edge(url: str) -> dict[str, float]:
    """The edge's mode, mode-switch and link series from its Prometheus page."""
    from ddnn.launch import scrape

    keep = ("ddnn_edge_mode", "ddnn_edge_effective_mode", "ddnn_edge_mode_switches_total", "ddnn_edge_link_",
            "ddnn_edge_cloud_connected", "ddnn_edge_cloud_errors_total", "ddnn_edge_samples_total")
    return {k: v for k, v in scrape(url).items() if k.startswith(keep)}


def tcp_rtt(target: str, count: int, timeout_s: float, gap_s: float = 0.05) -> dict:
    """Connect ``count`` times; each handshake (SYN -> SYN-ACK) is one round trip."""
    host, _, port = target.rpartition(":")
    times: list[float | None] = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout_s)
        t0 = time.perf_counter()
        try:
            s.connect((host, int(port)))
            times.append(1000 * (time.perf_counter() - t0))
        except OSError:
            times.append(None)
        finally:
            s.close()
        time.sleep(gap_s)
    ok = [t for t in times if t is not None]
    return {"target": target, "samples_ms": times, "lost": len(times) - len(ok),
            "median_ms": statistics.median(ok) if ok else None, "min_ms": min(ok) if ok else None,
            "max_ms": max(ok) if ok else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ddnn.testbed.agent", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("watch", help="poll Edge.GetStatus into a JSON-lines file; serve commands on stdin")
    w.add_argument("--edge", required=True, help="edge address host:port")
    w.add_argument("--interval", type=float, default=0.25, help="seconds between polls")
    w.add_argument("--out", required=True, help="JSON-lines file to append the polls to")
    w.add_argument("--max-s", type=float, default=6 * 3600.0, help="stop after this long whatever happens")
    r = sub.add_parser("tcp-rtt", help="time TCP handshakes to host:port")
    r.add_argument("--target", required=True)
    r.add_argument("--count", type=int, default=7)
    r.add_argument("--timeout-s", type=float, default=2.0)
    a = p.parse_args(argv)
    if a.cmd == "watch":
        if a.interval <= 0:
            p.error("--interval must be > 0")
        return asyncio.run(watch(a.edge, a.interval, a.out, a.max_s))
    if not 1 <= a.count <= 1000:
        p.error("--count must be in [1, 1000]")
    print(json.dumps(tcp_rtt(a.target, a.count, a.timeout_s)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

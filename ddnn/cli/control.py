"""``ddnn control``: read or change running edges (policy, thresholds, mode, payload), many at once.

Cheng et al. broadcast new thresholds to devices at run time to steer the server's load; this
command fans a change out to every edge given, concurrently, each call with a deadline, and
reports per edge whether it took effect. Changes apply from the next batch; no sample is lost.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ddnn.codec import PAYLOADS
from ddnn.export.bundle import MODES


def _edges(values: list[str], edges_file: str | None) -> list[str]:
    edges = [e.strip() for v in values for e in v.split(",") if e.strip()]
    if edges_file:
        try:
            edges += [ln.strip() for ln in Path(edges_file).read_text().splitlines()
                      if ln.strip() and not ln.startswith("#")]
        except OSError as exc:
            raise ValueError(f"--edges-file {edges_file}: {exc.strerror}") from None
    if not edges:
        raise ValueError("no edge given: use --edge HOST:PORT (repeatable, comma-separated) or --edges-file")
    return edges


def _knobs(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"--knob expects EXIT=VALUE (e.g. block7=0.9), got {item!r}") from None
    return out


def register(sub) -> None:
    p = sub.add_parser("control", help="show or change the policy/thresholds/mode of running edges",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["status", "set"], help="status: print each edge's state; set: change it")
    p.add_argument("--edge", action="append", default=[], help="edge address host:port (repeatable, or a,b,c)")
    p.add_argument("--edges-file", help="file with one edge address per line")
    p.add_argument("--knob", action="append", default=[], help="EXIT=VALUE threshold override (repeatable)")
    p.add_argument("--mode", choices=MODES, help="operating mode")
    p.add_argument("--payload", choices=PAYLOADS, help="offload payload")
    p.add_argument("--policy", help="replace the whole policy with this JSON file")
    p.add_argument("--slo", help="SLO controller target: p95_latency=S, cloud_rate=SAMPLES_PER_S, "
                   "bandwidth=BYTES_PER_S, or 'off'")
    p.add_argument("--timeout", type=float, default=5.0, help="deadline of each call, seconds")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--tls-ca", help="CA of the edges' certificates (enables TLS)")
    p.add_argument("--tls-cert", help="client certificate (mutual TLS)")
    p.add_argument("--tls-key", help="client key (mutual TLS)")
    p.add_argument("--token", default=os.environ.get("DDNN_CONTROL_TOKEN", ""),
                   help="control token of edges started with --control-token, sent as 'authorization: Bearer "
                        "TOKEN' (default: $DDNN_CONTROL_TOKEN)")
    p.set_defaults(func=run)


def run(args) -> int:
    import asyncio

    edges = _edges(args.edge, args.edges_file)
    request = None
    if args.action == "set":
        from ddnn.pb.ddnn.v1 import edge_pb2

        policy_json = ""
        if args.policy:
            from ddnn.policies import EdgePolicy

            policy_json = json.dumps(EdgePolicy.load(args.policy).to_dict())  # validate before sending
        knobs = _knobs(args.knob)
        if args.slo and args.slo != "off":
            from ddnn.control.slo import SloTarget

            SloTarget.parse(args.slo)  # validate before sending
        if not (policy_json or knobs or args.mode or args.payload or args.slo):
            raise ValueError("set needs at least one of --knob, --mode, --payload, --policy, --slo")
        request = edge_pb2.ConfigureRequest(policy_json=policy_json, knobs=knobs, mode=args.mode or "",
                                            payload=args.payload or "", slo=args.slo or "")
    results = asyncio.run(_fan_out(edges, request, args))
    failed = [e for e, r in results.items() if "error" in r]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for edge, r in results.items():
            if "error" in r:
                print(f"{edge}: FAILED {r['error']}")
            else:
                print(f"{edge}: mode {r['mode']} (in effect: {r['effective_mode']}), exits {r['active_exits']}, "
                      f"knobs {r['knobs']}, payload {r['payload']}, cloud {'up' if r['cloud_connected'] else 'DOWN'}"
                      f", samples {r['samples_by_outcome']}")
    if failed:
        print(f"ddnn control: {len(failed)} of {len(edges)} edge(s) failed", file=sys.stderr)
        return 1
    return 0


async def _fan_out(edges: list[str], request, args) -> dict[str, dict]:
    import asyncio

    import grpc
    from google.protobuf.json_format import MessageToDict

    from ddnn.pb.ddnn.v1 import edge_pb2, edge_pb2_grpc
    from ddnn.serving.server import TlsFiles, channel_credentials

    tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_ca)

    async def one(edge: str) -> dict:
        channel = (grpc.aio.secure_channel(edge, channel_credentials(tls)) if tls.enabled
                   else grpc.aio.insecure_channel(edge))
        try:
            stub = edge_pb2_grpc.EdgeStub(channel)
            if request is None:
                st = await stub.GetStatus(edge_pb2.StatusRequest(), timeout=args.timeout)
            else:
                auth = (("authorization", f"Bearer {args.token}"),) if args.token else None
                st = await stub.Configure(request, timeout=args.timeout, metadata=auth)
            d = MessageToDict(st, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
            d.pop("policy_json", None)
            return d
        except grpc.aio.AioRpcError as exc:
            return {"error": f"{exc.code().name}: {exc.details()}"}
        finally:
            await channel.close()

    answers = await asyncio.gather(*(one(e) for e in edges))
    return dict(zip(edges, answers, strict=True))

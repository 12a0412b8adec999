"""``python -m ddnn.triton REPO [REPO ...]``: run Triton in the foreground until SIGTERM/Ctrl-C.

Prints one JSON line with the endpoints once every model is ready.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import time

from ddnn.logs import configure_logging
from ddnn.triton.config import TritonServerConfig
from ddnn.triton.server import TritonServer

log = logging.getLogger("ddnn.triton")
WATCH_INTERVAL_S = 0.5  # how soon a SIGTERM or a crashed server is noticed; the loop does nothing else


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = TritonServerConfig(())
    p = argparse.ArgumentParser(prog="python -m ddnn.triton", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("repositories", nargs="+", help="model repositories (ddnn export-triton output)")
    p.add_argument("--models", help="models to load, comma-separated (default: every model listed)")
    p.add_argument("--host", default=defaults.host)
    p.add_argument("--grpc-port", type=int, default=0, help="0 = a free port")
    p.add_argument("--http-port", type=int, default=0, help="0 = a free port, -1 = off")
    p.add_argument("--metrics-port", type=int, default=0, help="0 = a free port, -1 = off")
    p.add_argument("--log", help="tritonserver log file (default: a temporary file)")
    p.add_argument("--startup-timeout", type=float, default=defaults.startup_timeout,
                   help="seconds to wait for the server and every model (default: %(default)s)")
    p.add_argument("--stop-grace", type=float, default=defaults.stop_grace,
                   help="seconds Triton may drain in-flight requests on SIGTERM (default: %(default)s)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    server = TritonServer(args.repositories, models=args.models.split(",") if args.models else None,
                          host=args.host, grpc_port=args.grpc_port,
                          http_port=None if args.http_port < 0 else args.http_port,
                          metrics_port=None if args.metrics_port < 0 else args.metrics_port,
                          log_path=args.log, startup_timeout=args.startup_timeout, stop_grace=args.stop_grace)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    try:
        with server:
            process = server.process
            assert process is not None  # start() launched it
            print(json.dumps({"grpc": server.url, "http": server.http_url, "metrics": server.metrics_url,
                              "models": server.models, "log": str(server.log_path), "pid": process.pid}),
                  flush=True)
            while not stopping and server.running:
                time.sleep(WATCH_INTERVAL_S)
            if not server.running:
                log.error("tritonserver exited with code %s:\n%s", process.returncode, server.log_tail())
                return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

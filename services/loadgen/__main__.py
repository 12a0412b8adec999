"""``python -m services.loadgen``: replay the CIFAR-10 test split against an edge (see --help)."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path

from ddnn.data import load_split
from ddnn.logs import configure_logging
from ddnn.paths import REPO_ROOT, default_test_source
from ddnn.runreport import build_report, format_report
from ddnn.serving.server import start_metrics_server, write_ready_file
from ddnn.serving.settings import SettingsError, load_settings
from services.loadgen.runner import replay_order, run_replay
from services.loadgen.settings import LoadgenSettings

log = logging.getLogger("services.loadgen")


def run(s: LoadgenSettings) -> dict:
    """Replay, write report.json + samples.csv, print the table; return the report."""
    arrays = load_split(s.data or default_test_source(), "test")
    n = min(len(arrays), s.limit) if s.limit else len(arrays)
    order = replay_order(len(arrays), n, s.shuffle, s.seed)
    if s.metrics_port >= 0:
        port = start_metrics_server(s.metrics_addr, s.metrics_port)
        log.info("metrics on %s:%d", s.metrics_addr, port)
        write_ready_file(s.ready_file, metrics_port=port)
    records, wall, unknown = asyncio.run(run_replay(arrays.images, arrays.labels, order, s))
    config = {k: v for k, v in vars(s).items() if not k.startswith("tls_key")}
    config["dataset"] = {"source": arrays.source, "name": arrays.name, "images": n}
    report = build_report(records, wall, config)
    report["integrity"]["unknown_ids"] = unknown
    report["integrity"]["ok"] = report["integrity"]["ok"] and unknown == 0
    out = Path(s.out) if s.out else REPO_ROOT / "results" / f"loadgen-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    records.write_csv(out / "samples.csv")
    print(format_report(report))
    print(f"\nreport: {out / 'report.json'}   per-sample: {out / 'samples.csv'}")
    if s.linger_s > 0:
        # Keep /metrics up for a last scrape; SIGTERM ends the wait (a clean stop, exit 0).
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        stop.wait(s.linger_s)
    return report


def main(argv: list[str] | None = None) -> int:
    try:
        s = load_settings(LoadgenSettings, "DDNN_LOADGEN", argv, description=__doc__)
    except SettingsError as exc:
        print(f"loadgen: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(json_lines=s.log_json)
    try:
        report = run(s)
    except (ConnectionError, ValueError, OSError) as exc:
        log.error("%s", exc)
        return 1
    return 0 if report["integrity"]["ok"] else 3


if __name__ == "__main__":
    sys.exit(main())

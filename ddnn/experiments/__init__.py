"""The papers' experiments, one module each, run by ``ddnn reproduce <name>``.

Each module has ``TITLE`` and ``run(ctx) -> Path`` (the report it wrote).
"""

from ddnn.experiments import ao_cdl, hybrid, sem_mem, thresholds, ws_normal

EXPERIMENTS = {
    "ao-vs-cdl": ao_cdl,
    "ws-vs-normal": ws_normal,
    "hybrid": hybrid,
    "sem-vs-mem": sem_mem,
    "thresholds": thresholds,
}

__all__ = ["EXPERIMENTS"]

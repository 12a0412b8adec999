"""Write the record of a training run that `make bench`'s training section shows, from its checkpoint.

    python scripts/training_record.py runs/fast12.pt --machine "..." --note "..." \
        -o docs/training-logs/fast-compact64.json

It reads the command, per-epoch history and wall time the checkpoint recorded, measures each exit
alone on the test split (``ddnn eval --no-policy``'s numbers; JPEG CIFAR-10, no TTA), and counts the
epochs to 90% and 91% final-exit validation accuracy, and the epochs and training seconds to the
shipped checkpoint's final-exit validation accuracy. Nothing is typed in by hand but the machine
and the note.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def first_reaching(history: list[dict], goal: float) -> tuple[int, float] | None:
    """The first epoch whose final-exit validation accuracy reaches ``goal``, and the training seconds
    (the epochs' own, evaluation excluded) spent up to and including it."""
    spent = 0.0
    for rec in history:
        spent += rec.get("seconds", 0.0)
        if (rec.get("val_accuracy") or {}).get("final", 0.0) >= goal:
            return int(rec["epoch"]), round(spent, 1)
    return None


def epochs_to(history: list[dict], goal: float) -> int | None:
    hit = first_reaching(history, goal)
    return hit[0] if hit else None


def seconds_to(history: list[dict], goal: float) -> float | None:
    hit = first_reaching(history, goal)
    return hit[1] if hit else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--machine", default="", help="what else ran, the cores it had (the CPU model is read here)")
    p.add_argument("--note", default="")
    args = p.parse_args(argv)

    from ddnn.checkpoint import load_checkpoint
    from ddnn.data import load_split
    from ddnn.evaluation.logits import exit_logits
    from ddnn.paths import SHIPPED_CHECKPOINT, default_test_source

    ck = load_checkpoint(args.checkpoint)
    test = load_split(default_test_source(), "test")
    logits = exit_logits(ck, test, use_cache=False)
    history = ck.meta.get("history") or []
    shipped_val = load_checkpoint(SHIPPED_CHECKPOINT).meta["metrics"]["val_accuracy"]["final"]
    record = {
        "command": ck.meta.get("command"),
        "checkpoint_sha256": ck.sha256,
        "epochs": ck.meta["config"]["epochs"],
        "train_seconds": ck.meta.get("train_seconds"),
        "machine": f"{cpu_model()}, {ck.meta.get('host_cpus')} cores" + (f"; {args.machine}" if args.machine else ""),
        "test_accuracy": {e: round(float((v.argmax(1) == test.labels).mean()), 4) for e, v in logits.items()},
        "val_accuracy": ck.meta["metrics"]["val_accuracy"],
        "history": history,
        "epochs_to_90": epochs_to(history, 0.90),
        "epochs_to_91": epochs_to(history, 0.91),
        "shipped_val_final": shipped_val,
        "epochs_to_shipped": epochs_to(history, shipped_val),
        "seconds_to_shipped": seconds_to(history, shipped_val),
        "note": args.note,
    }
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "history"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Which edge engine ``ddnn demo`` runs by default, decided on the machine that will run it.

The int8 graphs are fast, but how much accuracy they keep depends on the CPU's integer kernels:
ONNX Runtime's u8s8 path on CPUs without VNNI (AVX2 only) saturates and loses about 1.5 points on
the shipped model, where a VNNI CPU loses 0.02. So the validation accuracy recorded by
``ddnn calibrate`` (measured where the policy was fitted) cannot decide alone: when the validation
images are at hand (the shipped ``data/cifar10-val.npz``), both policies are re-run on this
machine's kernels, each with its own engine, and int8 is chosen only if it stays within the bound.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

ACCURACY_BOUND = 0.003  # the most overall validation accuracy the default engine may give up against fp32
FP32_ENGINE = "onnxruntime"  # the same logits as torch fp32 within 1e-5
INT8_ENGINE = "onnxruntime-int8"


@dataclass(frozen=True)
class EngineChoice:
    """The engine, a sentence saying why, and the accuracies it compared (``where``: recorded or measured)."""

    engine: str
    why: str
    accuracy: dict[str, float] = field(default_factory=dict)
    where: str = ""


def within_bound(fp32: float, int8: float, bound: float = ACCURACY_BOUND) -> bool:
    """Whether int8's overall accuracy is within ``bound`` of fp32's (a gain always is)."""
    return fp32 - int8 <= bound + 1e-12


def _decide(acc: dict[str, float], where: str) -> EngineChoice:
    ok = within_bound(acc[FP32_ENGINE], acc[INT8_ENGINE])
    why = (f"validation accuracy {where}: int8 {100 * acc[INT8_ENGINE]:.2f}% vs fp32 {100 * acc[FP32_ENGINE]:.2f}% "
           f"(bound {100 * ACCURACY_BOUND:.1f} pt)")
    return EngineChoice(INT8_ENGINE if ok else FP32_ENGINE, why, acc, where)


def recorded_accuracy(policy: Path) -> float:
    """The overall validation accuracy ``ddnn calibrate`` recorded in ``policy``."""
    return float(json.loads(Path(policy).read_text())["meta"]["validation"]["acc_overall"])


def measured_accuracy(checkpoint: Path, policies: dict[str, Path], val: Path) -> dict[str, float]:
    """Overall accuracy of each engine's policy in normal mode on the validation pack ``val``, computed here.

    Logits are cached per checkpoint, data and engine, so a second demo on the same machine reads them."""
    from ddnn.checkpoint import load_checkpoint
    from ddnn.data.pack import read_pack
    from ddnn.engines import EngineSpec
    from ddnn.evaluation.evaluate import evaluate

    arrays = read_pack(val)
    ck = load_checkpoint(checkpoint)
    recorded = (ck.meta.get("data") or {}).get("val_count")
    if recorded is not None and recorded != len(arrays):
        raise ValueError(f"{val}: {len(arrays)} images, but {checkpoint} recorded {recorded} validation images")
    normal = [e for e in ck.exit_names if e != "final"][-1:]  # the demo's default mode exits at the deepest edge exit
    return {engine: float(evaluate(ck, arrays, policy, exits=normal, engine=EngineSpec.parse(engine), progress=False)
                          .metrics["acc_overall"])
            for engine, policy in policies.items()}


def choose_engine(checkpoint: Path, reference: Path, int8: Path, val: Path | None = None) -> EngineChoice:
    """onnxruntime-int8 if its policy stays within :data:`ACCURACY_BOUND` of the fp32 policy, else onnxruntime.

    With the validation pack ``val`` present, the accuracies are measured on this machine;
    otherwise the ones recorded in the policies are compared (and the reason says so).
    """
    if not Path(int8).is_file():
        return EngineChoice(FP32_ENGINE, f"no int8 policy ({Path(int8).name})")
    policies = {FP32_ENGINE: Path(reference), INT8_ENGINE: Path(int8)}
    if val is not None and Path(val).is_file():
        try:
            return _decide(measured_accuracy(Path(checkpoint), policies, Path(val)), "measured on this CPU")
        except (OSError, ValueError) as exc:  # a broken pack or mismatched split: fall back, saying so
            log.warning("could not measure the engines on %s (%s); using the policies' recorded accuracy", val, exc)
    return _decide({e: recorded_accuracy(p) for e, p in policies.items()}, "recorded at calibration")

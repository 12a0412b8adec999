"""The demo's default engine, measured on this machine: the shipped checkpoint over its 5,000 shipped
validation images on ONNX Runtime fp32 and int8 (in process; about a minute on 2 cores, then cached)."""

from __future__ import annotations

from ddnn.evaluation.engine_choice import FP32_ENGINE, INT8_ENGINE, choose_engine, recorded_accuracy, within_bound
from ddnn.paths import SHIPPED_CHECKPOINT, SHIPPED_INT8_POLICY, SHIPPED_POLICY, SHIPPED_VAL_PACK


def test_the_shipped_val_pack_reproduces_calibration_and_decides_by_this_cpus_int8_kernels():
    choice = choose_engine(SHIPPED_CHECKPOINT, SHIPPED_POLICY, SHIPPED_INT8_POLICY, SHIPPED_VAL_PACK)
    assert choice.where == "measured on this CPU", choice.why
    # fp32 logits do not depend on the CPU: the pack is exactly the split the policy was calibrated on,
    # so the measured accuracy is the recorded one (torch fp32 there, ONNX Runtime fp32 here: within 1e-5).
    assert abs(choice.accuracy[FP32_ENGINE] - recorded_accuracy(SHIPPED_POLICY)) <= 2 / 5000
    # int8 does depend on it: whatever this CPU gives, the choice follows the bound.
    wanted = INT8_ENGINE if within_bound(choice.accuracy[FP32_ENGINE], choice.accuracy[INT8_ENGINE]) else FP32_ENGINE
    assert choice.engine == wanted
    assert f"{100 * choice.accuracy[INT8_ENGINE]:.2f}%" in choice.why

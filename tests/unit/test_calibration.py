"""Calibration: targets met on a synthetic validation set, the best knob found, errors named."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddnn.calibration import (
    KnobCurve,
    Target,
    calibrate,
    candidate_knobs,
    cascade_metrics,
    fit_criterion,
    training_source,
    validation_split,
)
from ddnn.checkpoint import Checkpoint
from ddnn.data import DatasetError, train_val_split
from ddnn.errors import PolicyError
from ddnn.models import ModelSpec, build_model
from ddnn.policies import softmax
from tests.conftest import make_imagefolder

METHODS = ["ao", "cdl", "entropy", "normalized-entropy"]


def synthetic_validation(n: int = 600, classes: int = 5, seed: int = 0):
    """Logits of two edge exits and a final exit; deeper exits are more often right, and a
    confident exit is more often right than an unsure one."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    logits = {}
    for name, strength in (("block1", 1.2), ("block2", 1.8), ("final", 2.6)):
        z = rng.normal(0, 1, (n, classes))
        z[np.arange(n), labels] += rng.gamma(2.0, strength / 2, n)
        logits[name] = z.astype(np.float32)
    return logits, labels


LOGITS, LABELS = synthetic_validation()
CLOUD_ONLY = float((LOGITS["final"].argmax(1) == LABELS).mean())


@pytest.mark.parametrize("method", METHODS)
def test_exit_rate_target_is_hit(method):
    cal = calibrate(LOGITS, LABELS, method, ["block2"], Target("exit_rate", 0.6))
    rate = cal.validation["edge_exit_rate"]
    assert 0.6 <= rate <= 0.6 + 2 / len(LABELS)  # continuous scores: the next flip is one sample away
    assert cal.policy.criteria["block2"].knob == cal.knob
    # The policy written is the one measured.
    again = cascade_metrics(cal.policy, LOGITS, LABELS, ["block2"])
    assert again["edge_exit_rate"] == rate and again["acc_overall"] == cal.validation["acc_overall"]


@pytest.mark.parametrize("method", METHODS)
def test_accuracy_target_keeps_the_most_samples_at_the_edge(method):
    logits, labels = synthetic_validation(200, seed=1)
    goal = float((logits["final"].argmax(1) == labels).mean()) - 0.03
    cal = calibrate(logits, labels, method, ["block1"], Target("accuracy", goal))
    assert cal.validation["acc_overall"] >= goal
    # Exhaustive check over every candidate knob: none keeps more samples at the edge at that accuracy.
    crit = fit_criterion(method, softmax(logits["block1"]), labels)
    curve = KnobCurve({"block1": crit}, None, logits, labels, ["block1"])
    best = max(curve.rate(i) for i in range(len(curve)) if curve.acc(i) >= goal)
    assert cal.validation["edge_exit_rate"] == best


def test_coarse_scan_then_refinement_finds_the_exact_optimum(monkeypatch):
    # The cloud is always right, so overall accuracy falls monotonically as more samples exit:
    # the best knob is unique and a coarse scan of a few points must still land on it.
    import ddnn.calibration as calibration

    monkeypatch.setattr(calibration, "_COARSE_POINTS", 7)
    logits, labels = synthetic_validation(300, seed=2)
    logits["final"] = np.eye(5, dtype=np.float32)[labels] * 10
    cal = calibrate(logits, labels, "cdl", ["block1"], Target("accuracy", 0.9))
    curve = KnobCurve({"block1": fit_criterion("cdl", None, None)}, None, logits, labels, ["block1"])
    best = max(curve.rate(i) for i in range(len(curve)) if curve.acc(i) >= 0.9)
    assert cal.validation["edge_exit_rate"] == best and 0.1 < best < 0.9


def test_accuracy_loss_is_measured_against_cloud_only():
    cal = calibrate(LOGITS, LABELS, "ao", ["block2"], Target("accuracy_loss", 0.02))
    v = cal.validation
    assert v["cloud_only_accuracy"] == CLOUD_ONLY
    assert v["acc_overall"] >= CLOUD_ONLY - 0.02 and v["accuracy_loss"] <= 0.02
    assert 0 < v["edge_exit_rate"] < 1
    assert cal.policy.meta["target"] == {"kind": "accuracy_loss", "value": 0.02}


def test_cascade_shares_one_knob_and_records_exits():
    cal = calibrate(LOGITS, LABELS, "cdl", ["block1", "block2"], Target("exit_rate", 0.7), drop_threshold=0.99)
    assert list(cal.policy.criteria) == ["block1", "block2"]
    assert {c.knob for c in cal.policy.criteria.values()} == {cal.knob}
    assert cal.policy.drop.threshold == 0.99
    assert cal.policy.meta["exits"] == ["block1", "block2"] and cal.policy.meta["method"] == "cdl"
    rates = cal.validation["exit_rate"]
    assert rates["block1"] > 0 and rates["block2"] > 0
    assert rates["block1"] + rates["block2"] == pytest.approx(cal.validation["edge_exit_rate"])


def test_unreachable_accuracy_is_an_error_naming_the_best():
    with pytest.raises(PolicyError, match=r"overall accuracy 0\.9990 is not reachable.*the best is"):
        calibrate(LOGITS, LABELS, "entropy", ["block2"], Target("accuracy", 0.999))


def test_targets_must_be_fractions():
    with pytest.raises(ValueError, match="fraction"):
        Target("accuracy", 90)
    with pytest.raises(ValueError, match="target kind"):
        Target("latency", 0.5)


@pytest.mark.parametrize("method", METHODS)
def test_candidate_knobs_run_from_fewest_to_most_exits(method):
    crit = fit_criterion(method, softmax(LOGITS["block2"]), LABELS)
    knobs = candidate_knobs({"block2": crit}, LOGITS)
    curve = KnobCurve({"block2": crit}, None, LOGITS, LABELS, ["block2"])
    rates = [curve.rate(i) for i in range(0, len(knobs), 25)]
    assert rates == sorted(rates)
    assert curve.rate(len(knobs) - 1) >= 0.99  # the loosest knob lets (nearly) everything exit
    assert curve.rate(0) == 0.0 or method == "ao"  # AO keeps never-wrong classes at the edge


_CURVES = {m: KnobCurve({"block1": fit_criterion(m, softmax(LOGITS["block1"]), LABELS)}, None, LOGITS, LABELS,
                        ["block1"]) for m in METHODS}


@settings(max_examples=40, deadline=None)
@given(goal=st.floats(0.0, 0.98), method=st.sampled_from(METHODS))
def test_exit_rate_search_finds_the_strictest_knob_reaching_the_goal(goal, method):
    curve = _CURVES[method]
    i = curve.index_for_exit_rate(goal)
    assert curve.rate(i) >= goal
    assert i == 0 or curve.rate(i - 1) < goal  # one step stricter misses the goal
    if method != "ao":  # continuous scores: one sample per step (AO thresholds can jump over a dip)
        assert curve.rate(i) <= goal + 2 / len(LABELS)


# --- the validation split --------------------------------------------------------------------------

def fake_checkpoint(meta: dict) -> Checkpoint:
    spec = ModelSpec("resnet", 8, 3, (1,), 4, 4)
    return Checkpoint(build_model(spec), spec, ("cat", "dog", "ship"), meta, "fake.pt", "0" * 64)


def test_validation_split_is_rebuilt_from_checkpoint_meta(tmp_path):
    root = make_imagefolder(tmp_path / "data", per_class=8)
    meta = {"data": {"source": str(root), "val_fraction": 0.25, "split_seed": 3, "limit": None, "val_count": 6}}
    val = validation_split(fake_checkpoint(meta))
    from ddnn.data import load_split

    full = load_split(root, "train")
    _, idx = train_val_split(full.labels, 0.25, 3)
    assert np.array_equal(val.images, full.images[idx]) and val.split == "val" and len(val) == 6


def test_missing_training_data_names_the_path_and_suggests_data(tmp_path, monkeypatch):
    monkeypatch.setenv("DDNN_TRAIN_DATA", str(tmp_path / "nowhere"))
    ck = fake_checkpoint({"data": {"source": str(tmp_path / "gone.npz")}})
    with pytest.raises(DatasetError, match=r"gone\.npz.*--data"):
        training_source(ck)
    with pytest.raises(DatasetError, match=r"typo.*--data"):
        training_source(ck, tmp_path / "typo")


def test_wrong_data_is_detected_by_the_validation_count(tmp_path):
    root = make_imagefolder(tmp_path / "data", per_class=8)
    meta = {"data": {"source": str(root), "val_fraction": 0.25, "split_seed": 0, "val_count": 500}}
    with pytest.raises(DatasetError, match="recorded 500"):
        validation_split(fake_checkpoint(meta))

"""Offline evaluation: the cascade and every metric on a hand-made logits set, costs, the cache."""

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from ddnn.checkpoint import Checkpoint
from ddnn.data import ImageArrays
from ddnn.errors import PolicyError
from ddnn.evaluation import (
    aux_principal_costs,
    evaluate,
    evaluate_logits,
    exit_logits,
    expected_costs,
    logits_cache_path,
    route_samples,
    split_costs,
)
from ddnn.models import ModelSpec, build_model, cloud_part, count_macs
from ddnn.policies import DropRule, EdgePolicy, MaxSoftmaxCriterion
from ddnn.sweep import kept_at_accuracy
from tests.conftest import random_images


def read_csv(path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(Path(path).read_text())))


def logits_of(rows) -> np.ndarray:
    return np.log(np.asarray(rows, dtype=np.float64)).astype(np.float32)


# Six samples, three classes; the comment says where each goes with max-softmax 0.8 at both
# exits and a drop rule at normalized entropy 0.9.
BLOCK1 = logits_of([[0.9, 0.05, 0.05],   # s0 exits at block1, right
                    [0.5, 0.4, 0.1],     # s1 continues
                    [0.6, 0.3, 0.1],     # s2 continues
                    [0.34, 0.33, 0.33],  # s3 continues
                    [0.95, 0.03, 0.02],  # s4 exits at block1, wrong
                    [0.6, 0.3, 0.1]])    # s5 continues
BLOCK2 = logits_of([[0.9, 0.05, 0.05],
                    [0.1, 0.85, 0.05],   # s1 exits at block2, right
                    [0.2, 0.7, 0.1],     # s2 offloaded (normalized entropy 0.73)
                    [0.34, 0.33, 0.33],  # s3 dropped (normalized entropy ~1)
                    [0.95, 0.03, 0.02],
                    [0.6, 0.3, 0.1]])    # s5 offloaded (normalized entropy 0.82)
FINAL = logits_of([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2], [0.1, 0.8, 0.1],
                   [0.7, 0.2, 0.1]])
LABELS = np.array([0, 1, 2, 0, 1, 1])
LOGITS = {"block1": BLOCK1, "block2": BLOCK2, "final": FINAL}
POLICY = EdgePolicy({"block1": MaxSoftmaxCriterion(0.8), "block2": MaxSoftmaxCriterion(0.8)}, DropRule(0.9))


def tiny_model():
    return build_model(ModelSpec("resnet", 8, 3, (1, 2), 4, 4))


def test_cascade_routes_each_sample_as_the_edge_would():
    out = route_samples(POLICY, LOGITS, ["block1", "block2"])
    assert out.exit_taken.tolist() == ["block1", "block2", "cloud", "dropped", "block1", "cloud"]
    assert out.exit_index.tolist() == [0, 1, 2, -1, 0, 2]
    assert out.prediction.tolist() == [0, 1, 2, -1, 0, 0]
    # Edge answers carry the criterion's confidence, cloud answers the final max softmax, a dropped
    # sample the last edge exit's confidence.
    assert np.allclose(out.confidence, [0.9, 0.85, 0.8, 0.34, 0.95, 0.7], atol=1e-6)


def test_every_metric_on_the_hand_made_set():
    m = evaluate_logits(LOGITS, LABELS, POLICY, tiny_model()).metrics
    assert m["exit_rate"] == pytest.approx({"block1": 2 / 6, "block2": 1 / 6, "cloud": 2 / 6, "dropped": 1 / 6})
    assert m["edge_exit_rate"] == pytest.approx(0.5)
    assert m["acc_aux_allocate"] == pytest.approx(2 / 3)
    assert m["acc_allocate"] == pytest.approx({"block1": 0.5, "block2": 1.0, "cloud": 0.5})
    assert m["acc_prin_allocate"] == pytest.approx(0.5)
    assert m["acc_overall"] == pytest.approx(0.5)  # s0, s1, s2; the dropped s3 counts as wrong
    n = m["edge_exit_rate"]  # Eq. 8 with dropped samples in neither term
    assert m["acc_overall"] == pytest.approx(n * m["acc_aux_allocate"] + (2 / 6) * m["acc_prin_allocate"])
    assert m["acc_answered"] == pytest.approx(3 / 5)
    assert m["local_accuracy"] == pytest.approx(3 / 6)  # edge answers everything: s0, s1, s3 right
    assert m["ideal_accuracy"] == pytest.approx(5 / 6)  # only s5 is wrong at every exit
    assert m["acc_separate"] == pytest.approx({"block1": 2 / 6, "block2": 3 / 6, "final": 5 / 6})
    assert m["acc_aux_separate"] == m["acc_separate"]["block2"]
    assert m["acc_prin_separate"] == m["acc_separate"]["final"]


def test_cloud_only_and_subset_of_exits():
    cloud = evaluate_logits(LOGITS, LABELS, None, tiny_model()).metrics
    assert cloud["exit_rate"] == {"cloud": 1.0, "dropped": 0.0} and cloud["acc_overall"] == pytest.approx(5 / 6)
    assert cloud["local_accuracy"] is None and cloud["acc_aux_allocate"] is None
    only2 = evaluate_logits(LOGITS, LABELS, POLICY, tiny_model(), exits=["block2"]).metrics
    assert only2["exit_rate"]["block2"] == pytest.approx(3 / 6)  # s0, s1, s4 exit at block2
    with pytest.raises(PolicyError, match="block9"):
        evaluate_logits(LOGITS, LABELS, POLICY, tiny_model(), exits=["block9"])
    with pytest.raises(PolicyError, match=r"no criterion for exits \['block2'\]"):
        evaluate_logits(LOGITS, LABELS, EdgePolicy({"block1": MaxSoftmaxCriterion(0.5)}), tiny_model(),
                        exits=["block2"])


def test_macs_and_link_bytes_follow_the_exit_rates():
    model = tiny_model()
    costs = split_costs(model, ["block1", "block2"])
    (_, seg1), (_, seg2) = costs.segment_macs
    heads = sum(count_macs(model.head(e), (1, *model.shapes[model.position(e)])) for e in ("block1", "block2"))
    assert seg1 + seg2 + costs.cloud_macs - heads == costs.full_macs  # the split loses and adds nothing
    report = evaluate_logits(LOGITS, LABELS, POLICY, model)
    macs, link = report.costs["macs"], report.costs["link_bytes"]
    # Everyone runs segment 1; the 4 samples that did not exit at block1 run segment 2.
    assert macs["edge_expected"] == pytest.approx(seg1 + 4 / 6 * seg2)
    assert macs["cloud_expected_norm"] == pytest.approx(2 / 6 * costs.cloud_macs / costs.full_macs)
    values = int(np.prod(model.shapes[2]))
    assert link["feature_shape"] == list(model.shapes[2])
    assert link["expected_per_sample"] == pytest.approx({"fp32": 2 / 6 * 4 * values, "fp16": 2 / 6 * 2 * values,
                                                         "int8": 2 / 6 * values})
    assert link["raw_input"] == 3072 and link["raw_offload_expected_per_sample"] == pytest.approx(1024)
    assert expected_costs(split_costs(model, []), np.full(4, 0))["link_bytes"]["per_offload"] == {"uint8": 3072}


def test_aux_principal_costs_send_the_raw_image():
    aux, principal = tiny_model(), build_model(ModelSpec("resnet", 14, 3, (), 4, 4))
    costs = aux_principal_costs(aux, principal, ["block1"])
    assert costs.full_macs == costs.cloud_macs == count_macs(cloud_part(principal, 0), (1, 3, 32, 32))
    assert costs.segment_macs[0][1] == count_macs(aux.trunk(0, 1), (1, 3, 32, 32)) + count_macs(
        aux.head("block1"), (1, *aux.shapes[1]))
    link = expected_costs(costs, np.array([0, 1, 1, 0]))["link_bytes"]
    assert link["payload"] == "raw_input" and link["expected_per_sample"] == {"uint8": 1536}


def test_report_text_json_and_per_sample_csv(tmp_path):
    report = evaluate_logits(LOGITS, LABELS, POLICY, tiny_model(), info={"data": "hand-made"})
    text = report.format()
    for needle in ("acc_separate", "block1", "final (cloud)", "dropped", "overall accuracy", "ideal accuracy",
                   "50.00%", "83.33%"):
        assert needle in text
    d = report.to_dict()
    assert d["data"] == "hand-made" and d["exits"] == ["block1", "block2"] and d["acc_overall"] == 0.5
    assert "max_softmax" in d["policy"] and "drop: normalized entropy > 0.9" in d["policy"]
    rows = read_csv(report.write_per_sample_csv(tmp_path / "s.csv"))
    assert [r["exit"] for r in rows] == ["block1", "block2", "cloud", "dropped", "block1", "cloud"]
    assert rows[3] == {"sample_id": "3", "label": "0", "exit": "dropped", "prediction": "-1", "confidence": "0.340000"}


def checkpoint_of(model) -> Checkpoint:
    return Checkpoint(model.eval(), model.spec, ("a", "b", "c"), {}, "tiny.pt", "ab" * 32)


def arrays_of(images: np.ndarray, seed: int = 0) -> ImageArrays:
    labels = np.random.default_rng(seed).integers(0, 3, len(images))
    return ImageArrays(images, labels, ("a", "b", "c"), "custom", "test", "memory")


def test_logits_are_cached_per_checkpoint_and_data(monkeypatch):
    torch.manual_seed(0)
    ck, arrays = checkpoint_of(tiny_model()), arrays_of(random_images(12))
    first = exit_logits(ck, arrays)
    assert logits_cache_path(ck, arrays).is_file()
    import ddnn.evaluation.logits as logits_mod

    def boom(*a, **k):
        raise AssertionError("recomputed despite the cache")

    monkeypatch.setattr(logits_mod, "compute_logits", boom)
    again = exit_logits(ck, arrays)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    other = arrays_of(random_images(12, seed=1))
    assert logits_cache_path(ck, other) != logits_cache_path(ck, arrays)
    with pytest.raises(AssertionError, match="recomputed"):
        exit_logits(ck, other)


def test_offline_evaluation_matches_the_in_process_edge_pipeline():
    """The per-sample exits and predictions are what the edge engine (the service's code) gives."""
    from ddnn.inference import InProcessPipeline
    from ddnn.models import split_at

    torch.manual_seed(1)
    ck, arrays = checkpoint_of(tiny_model()), arrays_of(random_images(40, seed=3))
    logits = exit_logits(ck, arrays, use_cache=False)
    # Knobs in the widest gaps between confidences, so float noise between batchings cannot flip one.
    knobs = {}
    for e in ("block1", "block2"):
        conf = np.sort(np.exp(logits[e] - logits[e].max(1, keepdims=True)).max(1)
                       / np.exp(logits[e] - logits[e].max(1, keepdims=True)).sum(1))
        gaps = np.diff(conf[5:-5])
        knobs[e] = float(conf[5:-5][gaps.argmax()] + gaps.max() / 2)
    policy = EdgePolicy({e: MaxSoftmaxCriterion(k) for e, k in knobs.items()})
    report = evaluate(ck, arrays, policy)
    ref = InProcessPipeline.from_split(split_at(ck.model, "block2", ["block1", "block2"]), policy).run(arrays.images,
                                                                                             batch_size=7)
    assert report.exit_taken.tolist() == list(ref.exit)
    assert np.array_equal(report.prediction, ref.prediction)
    assert np.allclose(report.confidence, ref.confidence, atol=1e-5)
    assert len(set(ref.exit)) == 3  # the test covers block1, block2 and cloud answers


def test_table2_interpolation_takes_the_last_crossing():
    curve = [{"edge_exit_rate": x, "acc_overall": y, "acc_aux_allocate": 0.9, "acc_prin_allocate": 0.5}
             for x, y in [(0.0, 0.90), (0.5, 0.91), (0.6, 0.89), (0.8, 0.895), (1.0, 0.80)]]
    point = kept_at_accuracy(curve, 0.89)
    assert point["edge_exit_rate"] == pytest.approx(0.8 + 0.2 * (0.005 / 0.095))
    assert not point["extrapolated"]
    high = kept_at_accuracy(curve, 0.915)  # never reached: extrapolated along the nearest end's segment
    assert high["extrapolated"] and high["edge_exit_rate"] == pytest.approx(0.75)

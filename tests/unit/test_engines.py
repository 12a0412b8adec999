"""Engines: torch, ONNX Runtime (fp32, int8) and OpenVINO run the same parts to the same answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ddnn.engines import ENGINE_NAMES, Backend, EngineSpec, cloud_part, edge_part, policy_engine
from ddnn.inference import EdgeEngine, InProcessPipeline
from ddnn.paths import SHIPPED_POLICY
from ddnn.policies import EdgePolicy
from tests.unit.shipped_bundle import sample_images, shipped_bundle, shipped_checkpoint

TOL = 1e-4
ORT = EngineSpec(Backend.ONNXRUNTIME, threads=1)


def test_engine_names_parse_and_round_trip():
    assert "torch" in ENGINE_NAMES and "onnxruntime-int8" in ENGINE_NAMES
    for name in ENGINE_NAMES:
        assert EngineSpec.parse(name).name == name
    assert EngineSpec.parse("onnxruntime-int8") == EngineSpec(Backend.ONNXRUNTIME, "int8")
    with pytest.raises(ValueError, match="unknown engine"):
        EngineSpec.parse("tensorrt")
    with pytest.raises(ValueError, match="precisions"):
        EngineSpec(Backend.TORCH, "int8")


def test_old_policy_without_engine_means_torch_fp32(tmp_path):
    doc = json.loads(SHIPPED_POLICY.read_text())
    doc["meta"].pop("engine", None)
    assert policy_engine(doc["meta"]).name == "torch"
    assert policy_engine({"engine": {"backend": "onnxruntime", "precision": "int8"}}).name == "onnxruntime-int8"


@pytest.mark.parametrize("exits", [["block7"], ["block4"], ["block4", "block7"]])
def test_onnxruntime_edge_part_equals_torch(exits):
    images, ck, bundle = sample_images(), shipped_checkpoint(), shipped_bundle()
    ref_logits, ref_features = edge_part(EngineSpec(), ck, exits).run(images)
    logits, features = edge_part(ORT, bundle, exits).run(images)
    for e in exits:
        np.testing.assert_allclose(logits[e], ref_logits[e], atol=TOL, rtol=0)
    np.testing.assert_allclose(features, ref_features, atol=TOL, rtol=0)


def test_raw_offload_hands_over_the_images():
    images = sample_images()
    part = edge_part(ORT, shipped_bundle(), ["block7"], offload="input")
    assert part.split == "input" and part.feature_shape == (32, 32, 3)
    _, payload = part.run(images)
    assert payload is images


@pytest.mark.parametrize("split", ["block4", "block7", "input"])
def test_onnxruntime_cloud_part_equals_torch(split):
    images, ck, bundle = sample_images(), shipped_checkpoint(), shipped_bundle()
    x = images if split == "input" else edge_part(EngineSpec(), ck, [split]).run(images)[1]
    ref = cloud_part(EngineSpec(), ck, split).run(x)
    np.testing.assert_allclose(cloud_part(ORT, bundle, split).run(x), ref, atol=TOL, rtol=0)


def test_decisions_and_answers_equal_torch_with_the_shipped_policy():
    images, ck, bundle = sample_images(), shipped_checkpoint(), shipped_bundle()
    policy = EdgePolicy.load(SHIPPED_POLICY)
    ref = InProcessPipeline(edge_part(EngineSpec(), ck, ["block7"]), cloud_part(EngineSpec(), ck, "block7"),
                            policy).run(images)
    got = InProcessPipeline(edge_part(ORT, bundle, ["block7"]), cloud_part(ORT, bundle, "block7"), policy,
                            exits=["block7"]).run(images)
    assert got.exit == ref.exit
    np.testing.assert_array_equal(got.prediction, ref.prediction)
    assert "cloud" in ref.exit and "block7" in ref.exit  # both paths exercised


def test_edge_engine_runs_only_the_active_exits_of_a_deeper_graph():
    policy = EdgePolicy.load(SHIPPED_POLICY)
    engine = EdgeEngine(edge_part(ORT, shipped_bundle(), ["block7"]), policy, exits=["block7"])
    assert engine.part.exits == ("block4", "block7") and engine.exits == ("block7",)
    res = engine.run(sample_images())
    assert set(res.exit) <= {"block7", "cloud"}
    assert res.payload.shape == (len(res.offload_idx), 128, 8, 8)


def test_the_torch_engine_needs_a_checkpoint_and_onnx_a_bundle():
    with pytest.raises(ValueError, match="export bundle"):
        edge_part(ORT, shipped_checkpoint(), ["block7"])
    with pytest.raises(ValueError, match="checkpoint"):
        cloud_part(EngineSpec(), shipped_bundle(), "block7")


def test_openvino_fp32_equals_torch():
    pytest.importorskip("openvino")
    images, ck, bundle = sample_images(), shipped_checkpoint(), shipped_bundle()
    ov = EngineSpec(Backend.OPENVINO, threads=1)
    ref_logits, ref_features = edge_part(EngineSpec(), ck, ["block7"]).run(images)
    logits, features = edge_part(ov, bundle, ["block7"]).run(images)
    np.testing.assert_allclose(logits["block7"], ref_logits["block7"], atol=TOL, rtol=0)
    np.testing.assert_allclose(cloud_part(ov, bundle, "block7").run(features),
                               cloud_part(EngineSpec(), ck, "block7").run(ref_features), atol=TOL, rtol=0)


def test_exit_logits_per_engine_use_the_shipped_bundle_and_their_own_cache():
    from ddnn.data import ImageArrays
    from ddnn.evaluation import exit_logits, logits_cache_path
    from ddnn.export.cache import bundle_for, bundle_path

    ck = shipped_checkpoint()
    assert bundle_for(ck, "int8").root == bundle_path(ck.path)  # shipped, nothing exported
    images = sample_images()
    arrays = ImageArrays(images, np.zeros(len(images), np.int64), ck.classes, "cifar10", "test", "sample")
    ref = exit_logits(ck, arrays)
    got = exit_logits(ck, arrays, engine=ORT)
    assert list(got) == list(ref) == ["block4", "block7", "final"]
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], atol=TOL, rtol=0)
    int8 = exit_logits(ck, arrays, engine=EngineSpec(Backend.ONNXRUNTIME, "int8"))
    assert (int8["block7"].argmax(1) == ref["block7"].argmax(1)).mean() > 0.9
    assert not np.allclose(int8["block7"], ref["block7"], atol=TOL)  # it is really the int8 graph
    paths = {logits_cache_path(ck, arrays, e) for e in (EngineSpec(), ORT, EngineSpec(Backend.ONNXRUNTIME, "int8"))}
    assert len(paths) == 3 and all(p.is_file() for p in paths)


def test_demo_picks_int8_only_within_the_accuracy_bound(tmp_path):
    from ddnn.evaluation.engine_choice import choose_engine, within_bound

    def policy(path, acc):
        path.write_text(json.dumps({"meta": {"validation": {"acc_overall": acc}}}))
        return path

    ref = policy(tmp_path / "fp32.json", 0.886)
    ck = tmp_path / "never-read.pt"  # no validation pack: the recorded accuracies decide, nothing is run
    ok = choose_engine(ck, ref, policy(tmp_path / "ok.json", 0.883), val=tmp_path / "absent.npz")
    assert ok.engine == "onnxruntime-int8" and ok.where == "recorded at calibration" and "88.30%" in ok.why
    assert choose_engine(ck, ref, policy(tmp_path / "bad.json", 0.882)).engine == "onnxruntime"
    assert choose_engine(ck, ref, tmp_path / "missing.json").engine == "onnxruntime"
    assert within_bound(0.886, 0.890) and within_bound(0.886, 0.883) and not within_bound(0.886, 0.8829)


def test_engine_choice_falls_back_to_recorded_accuracy_when_the_val_pack_is_unreadable(tmp_path, caplog):
    from ddnn.evaluation.engine_choice import choose_engine

    for name, acc in (("fp32.json", 0.886), ("int8.json", 0.870)):
        (tmp_path / name).write_text(json.dumps({"meta": {"validation": {"acc_overall": acc}}}))
    (tmp_path / "val.npz").write_bytes(b"not a pack")
    choice = choose_engine(tmp_path / "ck.pt", tmp_path / "fp32.json", tmp_path / "int8.json", tmp_path / "val.npz")
    assert choice.engine == "onnxruntime" and choice.where == "recorded at calibration"
    assert "could not measure" in caplog.text


def test_int8_calibration_reads_training_images_only_never_validation_or_test(tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    from ddnn.data import load_split, train_val_split
    from ddnn.export.quantize import calibration_images
    from tests.conftest import random_images

    root = tmp_path / "data"
    for s, split in enumerate(("train", "test")):  # distinct seeds: no image is in both splits
        for c, cls in enumerate(("cat", "dog", "ship")):
            (root / split / cls).mkdir(parents=True)
            for i, img in enumerate(random_images(10, seed=10 * s + c)):
                Image.fromarray(img).save(root / split / cls / f"{i:04d}.png")
    ck = SimpleNamespace(meta={"data": {"val_fraction": 0.2, "split_seed": 0}})
    images, record = calibration_images(ck, root, samples=1000)
    train = load_split(root, "train")
    test = load_split(root, "test")
    train_idx, val_idx = train_val_split(train.labels, 0.2, 0)
    rows = {img.tobytes() for img in images}
    assert record["split"] == "train" and record["samples"] == len(images) == len(train_idx)
    assert rows == {train.images[i].tobytes() for i in train_idx}
    assert not rows & {img.tobytes() for img in test.images}
    assert not rows & {train.images[i].tobytes() for i in val_idx}

"""ONNX export: valid graphs (onnx.checker) that equal the torch parts on real test images."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ddnn.data import to_tensor
from ddnn.export.bundle import FEATURES_OUTPUT, Arrangement, exit_output, load_bundle
from ddnn.export.onnx import export_bundle, torch_reference
from ddnn.models import aux_principal
from ddnn.paths import SHIPPED_AUX_CHECKPOINT
from tests.unit.shipped_bundle import sample_images, shipped_bundle, shipped_checkpoint

TOL = 1e-4


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_manifest_records_checkpoint_modes_and_files():
    bundle, ck = shipped_bundle(), shipped_checkpoint()
    doc = json.loads((bundle.root / "manifest.json").read_text())
    assert doc["checkpoint"]["sha256"] == ck.sha256
    assert doc["classes"] == list(ck.classes)
    assert doc["input"]["dtype"] == "uint8" and doc["input"]["shape"] == [32, 32, 3]
    assert len(doc["input"]["mean"]) == 3 and len(doc["input"]["std"]) == 3
    assert doc["opset"] >= 17
    assert doc["modes"] == {"normal": "block7", "ws": "block4"}
    assert doc["edges"]["block7"]["exits"] == ["block4", "block7"]
    assert doc["edges"]["block7"]["feature_shape"] == list(ck.model.shapes[ck.model.position("block7")])
    assert doc["edges"]["block4"]["files"] == {"fp32": "edge-block4.onnx"}
    assert sorted(doc["clouds"]) == ["block4", "block7", "input"]
    assert load_bundle(bundle.root).edge_file("block7").is_file()


@pytest.mark.parametrize("file", ["edge-block4.onnx", "edge-block7.onnx", "cloud-block4.onnx", "cloud-block7.onnx",
                                  "cloud-input.onnx"])
def test_graphs_pass_the_checker_with_named_dynamic_io_and_metadata(file):
    model = onnx.load(str(shipped_bundle().root / file))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    props = {p.key: p.value for p in model.metadata_props}
    assert props["ddnn.checkpoint_sha256"] == shipped_checkpoint().sha256
    assert props["ddnn.part"] == file.split("-")[0]
    for value in [*model.graph.input, *model.graph.output]:
        assert value.name and value.type.tensor_type.shape.dim[0].dim_param  # symbolic (dynamic) batch


@pytest.mark.parametrize("split", ["block4", "block7"])
def test_edge_graph_equals_torch_on_sample_images(split):
    images = sample_images()
    ref_logits, ref_features = torch_reference(shipped_checkpoint(), images, split)
    graph = shipped_bundle().edge(split)
    names = [exit_output(e) for e in graph.exits] + [FEATURES_OUTPUT]
    out = dict(zip(names, session(shipped_bundle().edge_file(split)).run(names, {"images": images}), strict=True))
    for e in graph.exits:
        np.testing.assert_allclose(out[exit_output(e)], ref_logits[e], atol=TOL, rtol=0)
    np.testing.assert_allclose(out[FEATURES_OUTPUT], ref_features, atol=TOL, rtol=0)


def test_cloud_graphs_equal_the_full_model():
    images, ck, bundle = sample_images(), shipped_checkpoint(), shipped_bundle()
    with torch.inference_mode():
        final = ck.model(to_tensor(images))["final"].numpy()
    for split in ("block4", "block7"):
        _, features = torch_reference(ck, images, split)
        (logits,) = session(bundle.cloud_file(split)).run(None, {"features": features})
        np.testing.assert_allclose(logits, final, atol=TOL, rtol=0)
    (logits,) = session(bundle.cloud_file("input")).run(None, {"pixels": images})
    np.testing.assert_allclose(logits, final, atol=TOL, rtol=0)


def test_batch_is_dynamic():
    images = sample_images()
    s = session(shipped_bundle().edge_file("block4"))
    whole = s.run(None, {"images": images})[0]
    one = s.run(None, {"images": images[:1]})[0]
    np.testing.assert_allclose(one, whole[:1], atol=TOL, rtol=0)


def test_aux_principal_bundle(tmp_path):
    from ddnn.checkpoint import load_checkpoint

    aux, principal = load_checkpoint(SHIPPED_AUX_CHECKPOINT), shipped_checkpoint()
    bundle = export_bundle(aux, tmp_path, principal=principal)
    assert bundle.arrangement == Arrangement.AUX_PRINCIPAL
    assert bundle.principal_sha256 == principal.sha256 and bundle.cloud_sha256 == principal.sha256
    assert list(bundle.clouds) == ["input"] and bundle.modes["normal"] == "aux_final"
    images = sample_images()
    split = aux_principal(aux.model, principal.model)
    with torch.inference_mode():
        ref, _ = split.edge(to_tensor(images))
    graph = bundle.edge("aux_final")
    assert graph.offload == "input" and graph.exits == tuple(ref)
    out = session(bundle.edge_file("aux_final")).run(None, {"images": images})
    assert len(out) == len(ref)  # no features output: the raw images are what is offloaded
    for got, want in zip(out, ref.values(), strict=True):
        np.testing.assert_allclose(got, want.numpy(), atol=TOL, rtol=0)

"""Triton model-repository export: files, config.pbtxt fields, manifest, determinism; no server."""

import json

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from ddnn.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from ddnn.cli import main as cli_main
from ddnn.errors import NotFound
from ddnn.models import ModelSpec, build_model, cloud_part
from ddnn.triton import ExportOptions, export_repository, load_manifest
from ddnn.triton.repository import _BACKEND_MODEL
from ddnn.triton.runtime import CloudRunner, batch_problem

CLASSES = tuple(f"c{i}" for i in range(10))


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelSpec(depth=8, width=4, exits=(1,)))
    with torch.no_grad():  # non-trivial BN statistics, so a wrong layer cannot hide behind identity BN
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    return save_checkpoint(tmp_path / "tiny net.pt", model, CLASSES)


def parse_config(path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_default_export_has_one_model_per_split(tmp_path, checkpoint):
    repo = tmp_path / "repo"
    manifest = export_repository(checkpoint, repo)
    assert manifest.splits == ("block1", "input")
    assert sorted(p.name for p in repo.iterdir()) == ["repository.json", "tiny-net-block1", "tiny-net-input"]
    for name in ("tiny-net-block1", "tiny-net-input"):
        assert sorted(str(p.relative_to(repo / name)) for p in (repo / name).rglob("*")) == [
            "1", "1/model.onnx", "1/model.py", "config.pbtxt"]
        assert (repo / name / "1" / "model.py").read_bytes() == _BACKEND_MODEL.read_bytes()


def test_config_follows_triton_conventions(tmp_path, checkpoint):
    repo = tmp_path / "repo"
    export_repository(checkpoint, repo, ["block2", "input"],
                      ExportOptions(max_batch_size=64, max_queue_delay_us=250, instances=2))
    feat = parse_config(repo / "tiny-net-block2" / "config.pbtxt")
    assert (feat.name, feat.backend, feat.max_batch_size) == ("tiny-net-block2", "python", 64)
    assert [(i.name, model_config_pb2.DataType.Name(i.data_type), list(i.dims)) for i in feat.input] == [
        ("FEATURES", "TYPE_FP32", [8, 16, 16])]
    assert [(o.name, model_config_pb2.DataType.Name(o.data_type), list(o.dims)) for o in feat.output] == [
        ("LOGITS", "TYPE_FP32", [10])]
    assert list(feat.dynamic_batching.preferred_batch_size) == [32, 64]  # sizes above max_batch_size dropped
    assert feat.dynamic_batching.max_queue_delay_microseconds == 250
    assert [(g.count, model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in feat.instance_group] == [
        (2, "KIND_CPU")]
    assert feat.parameters["threads"].string_value == "0"
    assert feat.parameters["model"].string_value == "model.onnx"
    pix = parse_config(repo / "tiny-net-input" / "config.pbtxt")
    assert [(i.name, model_config_pb2.DataType.Name(i.data_type), list(i.dims)) for i in pix.input] == [
        ("PIXELS", "TYPE_UINT8", [32, 32, 3])]

    export_repository(checkpoint, repo, ["input"], ExportOptions(kind="gpu"))
    gpu = parse_config(repo / "tiny-net-input" / "config.pbtxt")
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(gpu.instance_group[0].kind) == "KIND_GPU"


def test_manifest_maps_split_points_to_models(tmp_path, checkpoint):
    repo = tmp_path / "repo"
    export_repository(checkpoint, repo, ["block1", "input"], ExportOptions(name="cloud"))
    doc = json.loads((repo / "repository.json").read_text())
    assert doc["checkpoint"]["sha256"] == file_sha256(checkpoint)
    manifest = load_manifest(repo)
    assert manifest.checkpoint_sha256 == file_sha256(checkpoint) and manifest.classes == CLASSES
    block = manifest.model_for("block1")
    assert (block.model, block.position, block.input.name, block.input.dtype, block.input.datatype,
            block.input.shape) == ("cloud-block1", 1, "FEATURES", "float32", "FP32", (4, 32, 32))
    raw = manifest.model_for("input")
    assert (raw.model, raw.position, raw.input.name, raw.input.datatype, raw.input.shape) == (
        "cloud-input", 0, "PIXELS", "UINT8", (32, 32, 3))
    assert (raw.output.name, raw.output.datatype, raw.output.shape) == ("LOGITS", "FP32", (10,))
    assert raw.weights_sha256 == file_sha256(repo / "cloud-input" / "1" / "model.onnx")
    with pytest.raises(NotFound, match=r"'block2'.*\['block1', 'input'\]"):
        manifest.model_for("block2")
    with pytest.raises(NotFound, match="no manifest"):
        load_manifest(tmp_path)


def test_export_is_deterministic_and_idempotent(tmp_path, checkpoint):
    a, b = tmp_path / "a", tmp_path / "b"
    export_repository(checkpoint, a)
    export_repository(load_checkpoint(checkpoint), b)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    before = {f: (a / f).stat().st_mtime_ns for f in files}
    export_repository(checkpoint, a)
    assert {f: (a / f).stat().st_mtime_ns for f in files} == before  # nothing rewritten


def test_reexport_removes_its_stale_models_only(tmp_path, checkpoint):
    repo = tmp_path / "repo"
    export_repository(checkpoint, repo)
    (repo / "someone-else" / "1").mkdir(parents=True)
    (repo / "someone-else" / "config.pbtxt").write_text('name: "someone-else"\n')
    export_repository(checkpoint, repo, ["input"])
    assert not (repo / "tiny-net-block1").exists()
    assert (repo / "tiny-net-input" / "config.pbtxt").is_file() and (repo / "someone-else").is_dir()
    assert load_manifest(repo).splits == ("input",)


@pytest.mark.parametrize("split", ["block3", "block0", "final", "bogus"])
def test_unknown_split_points_are_named(tmp_path, checkpoint, split):
    with pytest.raises(NotFound, match=f"unknown split point '{split}'"):
        export_repository(checkpoint, tmp_path / "repo", [split])


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="--kind"):
        ExportOptions(kind="tpu")
    with pytest.raises(ValueError, match="--max-batch"):
        ExportOptions(max_batch_size=0)
    with pytest.raises(ValueError, match="name prefix"):
        ExportOptions(name="a/b")


def test_exported_graphs_equal_the_torch_cloud_part(tmp_path, checkpoint):
    repo = tmp_path / "repo"
    manifest = export_repository(checkpoint, repo, ["block1", "block2", "input"])  # block2 has no exit
    ck = load_checkpoint(checkpoint)
    rng = np.random.default_rng(0)
    for split, info in manifest.models.items():
        served = CloudRunner(repo / info.model / "1" / "model.onnx", threads=1)
        assert served.input_name == info.input.name  # Triton's tensor names, inside the graph too
        if info.input.dtype == "uint8":
            x = rng.integers(0, 256, (4, *info.input.shape), dtype=np.uint8)
        else:
            x = rng.standard_normal((4, *info.input.shape)).astype(np.float32)
        with torch.inference_mode():
            ref = cloud_part(ck.model, info.position)(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(served([x])[0], ref, atol=1e-4, rtol=0, err_msg=split)


def test_native_onnxruntime_platform_config_follows_the_schema(tmp_path, checkpoint):
    repo = tmp_path / "repo"
    export_repository(checkpoint, repo, ["block1"], ExportOptions(platform="onnxruntime", threads=2))
    cfg = parse_config(repo / "tiny-net-block1" / "config.pbtxt")  # Triton's ModelConfig schema
    assert (cfg.platform, cfg.backend, cfg.default_model_filename) == ("onnxruntime_onnx", "", "model.onnx")
    assert [i.name for i in cfg.input] == ["FEATURES"] and [o.name for o in cfg.output] == ["LOGITS"]
    assert cfg.parameters["intra_op_thread_count"].string_value == "2"
    assert sorted(str(p.relative_to(repo / "tiny-net-block1")) for p in (repo / "tiny-net-block1").rglob("*")) == [
        "1", "1/model.onnx", "config.pbtxt"]
    export_repository(checkpoint, repo, ["block1"], ExportOptions(platform="onnxruntime", kind="gpu"))
    gpu = parse_config(repo / "tiny-net-block1" / "config.pbtxt")
    (accel,) = gpu.optimization.execution_accelerators.gpu_execution_accelerator
    assert accel.name == "tensorrt" and accel.parameters["precision_mode"] == "FP16"
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(gpu.instance_group[0].kind) == "KIND_GPU"
    with pytest.raises(ValueError, match="--platform"):
        ExportOptions(platform="tensorflow")


def test_batch_problem_names_each_fault():
    ok = np.zeros((2, 4, 3, 3), np.float32)
    check = lambda a: batch_problem(a, np.dtype(np.float32), (4, 3, 3), 8)  # noqa: E731
    assert check(ok) is None
    assert "float32, got float64" in check(ok.astype(np.float64))
    assert "[N, 4, 3, 3], got [2, 5, 3, 3]" in check(np.zeros((2, 5, 3, 3), np.float32))
    assert "got [4, 3, 3]" in check(np.zeros((4, 3, 3), np.float32))
    assert "empty batch" in check(np.zeros((0, 4, 3, 3), np.float32))
    assert "exceeds max_batch_size 8" in check(np.zeros((9, 4, 3, 3), np.float32))
    bad = ok.copy()
    bad[1, 0, 0, 0] = np.nan
    assert "NaN or Inf" in check(bad)
    bad[1, 0, 0, 0] = np.inf
    assert "NaN or Inf" in check(bad)
    assert batch_problem(bad, np.dtype(np.float32), (4, 3, 3), 8, require_finite=False) is None


def test_runner_splits_a_merged_batch_back_per_request(tmp_path, checkpoint):
    export_repository(checkpoint, tmp_path / "repo", ["block1"])
    runner = CloudRunner(tmp_path / "repo" / "tiny-net-block1" / "1" / "model.onnx")
    rng = np.random.default_rng(1)
    parts = [rng.standard_normal((n, 4, 32, 32)).astype(np.float32) for n in (3, 1, 5)]
    merged = runner(parts)
    assert [m.shape for m in merged] == [(3, 10), (1, 10), (5, 10)]
    for part, got in zip(parts, merged, strict=True):
        np.testing.assert_allclose(got, runner([part])[0], rtol=1e-5, atol=1e-5)


def test_cli_exports_and_reports_the_models(tmp_path, checkpoint, capsys):
    repo = tmp_path / "repo"
    rc = cli_main(["export-triton", str(checkpoint), "-o", str(repo), "--splits", "input", "--kind", "gpu",
                   "--max-batch", "32", "--name", "edge-cloud"])
    assert rc == 0
    assert "input\tedge-cloud-input\tPIXELS uint8[32, 32, 3]" in capsys.readouterr().out
    cfg = parse_config(repo / "edge-cloud-input" / "config.pbtxt")
    assert cfg.max_batch_size == 32 and model_config_pb2.ModelInstanceGroup.Kind.Name(cfg.instance_group[0].kind) \
        == "KIND_GPU"
    assert cli_main(["export-triton", str(checkpoint), "-o", str(repo), "--splits", "block9"]) == 2
    assert "unknown split point 'block9'" in capsys.readouterr().err

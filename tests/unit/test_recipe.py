"""The fast training recipe: compact network, whitening stem, schedules, flips, averaging, and
the CLI generated from TrainConfig."""

import argparse
from dataclasses import fields

import pytest
import torch

from ddnn.checkpoint import load_checkpoint
from ddnn.cli import build_parser
from ddnn.models import ModelSpec, build_model, split_at
from ddnn.models.compact import WhiteningStem, whitening_stem
from ddnn.models.complexity import count_macs
from ddnn.training import TrainConfig, train
from ddnn.training.cli_args import config_from_args
from ddnn.training.config import RECIPES
from ddnn.training.recipe import WeightAverage, flip_mask, lr_factor, make_optimizer
from tests.conftest import make_imagefolder


def test_compact_network_shapes_exits_and_edge_share_of_macs():
    m = build_model(ModelSpec("compact", exits=(1, 2)))
    assert m.spec.label == "compact64" and m.spec.num_blocks == 3
    assert m.shapes == [(3, 32, 32), (64, 15, 15), (256, 7, 7), (256, 3, 3)]
    out = m.eval()(torch.randn(2, 3, 32, 32))
    assert list(out) == ["block1", "block2", "final"] and all(v.shape == (2, 10) for v in out.values())
    total = count_macs(m)
    normal_edge = count_macs(split_at(m, "block2").edge)
    # the normal-mode edge exit must cost at most 80% of the whole model (issue 14)
    assert 0.5 < normal_edge / total <= 0.8, normal_edge / total


def test_whitening_stem_decorrelates_patches():
    torch.manual_seed(0)
    mix = torch.tensor([[1.0, 0.8, 0.3], [0.0, 0.6, 0.5], [0.0, 0.0, 0.4]])
    images = torch.einsum("dc,nchw->ndhw", mix, torch.randn(64, 3, 32, 32))
    images = images + torch.roll(images, 1, dims=3)  # neighbouring pixels correlate
    stem = WhiteningStem()
    stem.init_from(images)
    with torch.no_grad():
        z = torch.nn.functional.conv2d(images, stem.conv.weight[:12])  # the +v half, before GELU
    flat = z.permute(1, 0, 2, 3).reshape(12, -1)
    cov = torch.cov(flat)
    torch.testing.assert_close(cov, torch.eye(12), atol=0.05, rtol=0.05)
    assert not stem.conv.weight.requires_grad and stem.conv.bias.requires_grad


def test_triangle_and_cosine_schedules():
    tri = TrainConfig(schedule="triangle", final_lr_fraction=0.07)
    assert lr_factor(tri, 0, 100, 20) == pytest.approx(0.2)
    assert lr_factor(tri, 20, 100, 20) == pytest.approx(1.0)
    assert lr_factor(tri, 100, 100, 20) == pytest.approx(0.07)
    cos = TrainConfig()
    assert lr_factor(cos, 9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(cos, 100, 100, 10) == pytest.approx(0.0, abs=1e-9)


def test_alternating_flips_see_every_image_both_ways():
    base = torch.rand(100, generator=torch.Generator().manual_seed(0)) < 0.5
    idx = torch.arange(100)
    g = torch.Generator()
    even, odd = flip_mask(idx, 4, base, g), flip_mask(idx, 5, base, g)
    assert torch.equal(even, base) and torch.equal(odd, ~base)


def test_decoupled_optimizer_keeps_lr_times_decay_and_scales_norm_params():
    m = build_model(ModelSpec("compact", exits=(1,), width=8))
    cfg = TrainConfig.from_recipe("fast", exits=(1,))
    opt = make_optimizer(cfg, m, [p for p in m.parameters() if p.requires_grad])
    scale = 1024 * (1 + 1 / (1 - cfg.momentum))
    for g in opt.param_groups:  # lr x weight_decay = the configured decay per 1024 samples
        assert g["lr"] * g["weight_decay"] == pytest.approx(cfg.weight_decay * cfg.batch_size / scale)
    assert opt.param_groups[1]["lr"] == pytest.approx(64 * opt.param_groups[0]["lr"])


def test_weight_average_tracks_parameters():
    m = torch.nn.Linear(2, 1)
    avg = WeightAverage(m, 0.5)
    before = m.weight.detach().clone()
    with torch.no_grad():
        m.weight.add_(2.0)
    avg.update(m)
    torch.testing.assert_close(avg.state["weight"], before + 1.0)


def test_every_config_field_is_a_flag_and_explicit_flags_beat_the_recipe():
    parser = build_parser()
    train_parser = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "train")[1]
    dests = {a.dest for a in train_parser._actions}
    assert {f.name for f in fields(TrainConfig)} <= dests
    assert config_from_args(parser.parse_args(["train"])) == TrainConfig()
    cfg = config_from_args(parser.parse_args(["train", "--recipe", "fast", "--epochs", "3", "--no-alternating-flip",
                                              "--exits", "1", "--loss-weights", "block1=0.2,final=1"]))
    assert cfg.arch == "compact" and cfg.batch_size == RECIPES["fast"]["batch_size"]
    assert cfg.epochs == 3 and cfg.alternating_flip is False and cfg.exits == (1,)
    assert cfg.loss_weights == {"block1": 0.2, "final": 1.0}
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--arch", "vgg"])
    with pytest.raises(argparse.ArgumentTypeError):
        from ddnn.training.cli_args import parse_ints
        parse_ints("1,x")
    with pytest.raises(ValueError, match="recipe"):
        TrainConfig.from_recipe("slow")


def test_fast_recipe_trains_the_compact_net_and_never_modifies_its_config(tmp_path):
    data = make_imagefolder(tmp_path / "data", classes=tuple(f"c{i}" for i in range(4)), per_class=12)
    cfg = TrainConfig.from_recipe("fast", out=str(tmp_path / "f.pt"), data=str(data), width=8, epochs=3,
                                  batch_size=8, device="cpu", val_fraction=0.25, ema_decay=0.9,
                                  time_budget=3600.0)
    before = cfg.to_dict()
    ck = load_checkpoint(train(cfg, progress=False))
    assert cfg.to_dict() == before
    assert ck.exit_names == ("block1", "block2", "final") and ck.spec.arch == "compact"
    assert ck.meta["config"]["optimizer"] == "sgd-decoupled" and ck.meta["config"]["epochs"] == 3
    assert all(r["loss"] == r["loss"] for r in ck.meta["history"])  # finite, not NaN
    stem = whitening_stem(ck.model)
    assert stem is not None and float(stem.conv.weight.abs().sum()) > 0

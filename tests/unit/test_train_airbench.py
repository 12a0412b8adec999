"""The airbench-faithful parts of the fast recipe: reflected translation, lookahead, exit-head lr,
identity conv init, whitening-bias freeze and BN momentum, each switchable from TrainConfig."""

import pytest
import torch

from ddnn.checkpoint import load_checkpoint
from ddnn.data import random_crop_flip
from ddnn.models import ModelSpec, build_model
from ddnn.models.compact import airbench_init, whitening_stem
from ddnn.training import TrainConfig, train
from ddnn.training.recipe import LOOKAHEAD_PEAK, Lookahead, make_optimizer, translate_flip
from tests.conftest import make_imagefolder


def test_reflected_translation_draws_like_zero_padding_and_fills_borders_with_the_image():
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0)) + 1.0  # never 0
    flips = torch.arange(16) % 2 == 0
    zero = translate_flip(x, torch.Generator().manual_seed(1), 2, flips, reflect=False)
    refl = translate_flip(x, torch.Generator().manual_seed(1), 2, flips, reflect=True)
    torch.testing.assert_close(zero, random_crop_flip(x, torch.Generator().manual_seed(1), 2, flips))
    inside = zero != 0
    assert not inside.all() and torch.equal(refl[inside], zero[inside])  # same offsets, only borders differ
    padded = torch.nn.functional.pad(x, (2,) * 4, mode="reflect")
    for i in range(16):  # each output is a window of the reflect-padded image, flipped as asked
        src = padded[i].flip(-1) if flips[i] else padded[i]
        windows = [src[:, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(refl[i], w) for w in windows), i


def test_lookahead_is_idle_in_epoch_one_then_pulls_and_ends_on_the_slow_copy():
    m = torch.nn.Linear(2, 1, bias=False)
    la = Lookahead(m)
    start = m.weight.detach().clone()
    with torch.no_grad():
        m.weight.add_(1.0)
    la.step(m, 5, 40, steps_per_epoch=10)  # epoch 1: no pull, the slow copy catches up
    torch.testing.assert_close(m.weight.detach(), start + 1.0)
    torch.testing.assert_close(la.state["weight"], start + 1.0)
    with torch.no_grad():
        m.weight.add_(1.0)
    la.step(m, 20, 40, steps_per_epoch=10)
    a = LOOKAHEAD_PEAK * (20 / 40) ** 3
    torch.testing.assert_close(m.weight.detach(), start + 1.0 + (1 - a))  # pulled back by a
    torch.testing.assert_close(la.state["weight"], m.weight.detach())
    with torch.no_grad():
        m.weight.add_(5.0)
    la.step(m, 21, 40, steps_per_epoch=10)  # not a multiple of 5: untouched
    slow = la.state["weight"].clone()
    assert not torch.equal(m.weight.detach(), slow)
    la.step(m, 39, 39, steps_per_epoch=10)  # the last step ends on the slow copy
    torch.testing.assert_close(m.weight.detach(), slow)


def test_exit_heads_learn_at_their_scale_with_the_same_decay_per_step():
    m = build_model(ModelSpec("compact", exits=(1, 2), width=8))
    cfg = TrainConfig.from_recipe("fast", exit_lr_scale=1 / 81)
    opt = make_optimizer(cfg, m, [p for p in m.parameters() if p.requires_grad])
    main, norm, exits = opt.param_groups
    assert exits["lr"] == pytest.approx(main["lr"] / 81) and norm["lr"] == pytest.approx(64 * main["lr"])
    assert {id(p) for p in exits["params"]} == {id(p) for p in m.exits.parameters()}
    for g in opt.param_groups:
        assert g["lr"] * g["weight_decay"] == pytest.approx(main["lr"] * main["weight_decay"])
    classic = TrainConfig(arch="compact", exits=(1,))  # plain SGD, no scaling: one group as before
    opt = make_optimizer(classic, m, [p for p in m.parameters() if p.requires_grad])
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == classic.weight_decay


def test_airbench_init_starts_each_group_as_the_identity():
    torch.manual_seed(0)
    m = build_model(ModelSpec("compact", exits=(1,), width=8))
    airbench_init(m)
    conv = m.blocks[1][0]  # 8 -> 32 channels
    x = torch.randn(2, conv.in_channels, 6, 6)
    with torch.no_grad():
        y = conv(x)
    torch.testing.assert_close(y[:, : conv.in_channels], x)
    assert all(not c.bias.detach().any() for c in m.modules()
               if isinstance(c, torch.nn.Conv2d) and c.bias is not None)
    bound = 1 / m.final.fc.in_features ** 0.5  # PyTorch's default Linear init, not N(0, 0.01)
    assert m.final.fc.weight.abs().max() <= bound and m.final.fc.weight.std() > 0.03


def test_settings_that_conflict_or_are_out_of_range_are_named():
    with pytest.raises(ValueError, match="--lookahead and --ema-decay"):
        TrainConfig(lookahead=True, ema_decay=0.9)
    for bad, flag in ({"bn_momentum": 0.0}, "--bn-momentum"), ({"exit_lr_scale": 0.0}, "--exit-lr-scale"), \
            ({"whiten_bias_epochs": -1}, "--whiten-bias-epochs"):
        with pytest.raises(ValueError, match=flag):
            TrainConfig(**bad)


@pytest.fixture
def tiny_fast(tmp_path):
    data = make_imagefolder(tmp_path / "data", classes=tuple(f"c{i}" for i in range(4)), per_class=12)

    def make(name, **kw):
        base = dict(out=str(tmp_path / f"{name}.pt"), data=str(data), width=4, epochs=3, batch_size=8,
                    device="cpu", val_fraction=0.25, warmup_epochs=1.0, lookahead=True, ema_decay=0.0,
                    crop_reflect=True, airbench_init=True, bn_momentum=0.4, exit_lr_scale=1 / 81,
                    whiten_bias_epochs=3)
        return TrainConfig.from_recipe("fast", **{**base, **kw})
    return make


def test_fast_recipe_is_deterministic_and_freezes_the_whitening_bias(tiny_fast, monkeypatch):
    import ddnn.training.loop as loop

    built = []
    real = loop.build_model
    monkeypatch.setattr(loop, "build_model", lambda spec: built.append(real(spec)) or built[-1])
    cfg = tiny_fast("a")
    before = cfg.to_dict()
    a = load_checkpoint(train(cfg, progress=False))
    b = load_checkpoint(train(tiny_fast("b"), progress=False))
    assert cfg.to_dict() == before
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(m.momentum == cfg.bn_momentum for m in built[0].modules() if isinstance(m, torch.nn.BatchNorm2d))
    frozen = load_checkpoint(train(tiny_fast("frozen", whiten_bias_epochs=0), progress=False))
    assert not whitening_stem(frozen.model).conv.bias.detach().any()  # zero-initialised, never trained
    assert whitening_stem(a.model).conv.bias.detach().any()


def test_resume_with_lookahead_continues_to_the_same_result(tiny_fast, monkeypatch):
    import ddnn.training.loop as loop

    full = load_checkpoint(train(tiny_fast("full"), progress=False))
    part = tiny_fast("part")
    real, calls = loop.evaluate_exits, {"n": 0}

    def interrupt(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(loop, "evaluate_exits", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(part, progress=False)
    monkeypatch.setattr(loop, "evaluate_exits", real)
    resumed = load_checkpoint(train(part.replace(resume=True), progress=False))
    sf, sr = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(sf[k].float(), sr[k].float(), atol=1e-6) for k in sf)


def test_a_time_budget_too_short_for_the_warm_up_is_reported(tiny_fast, caplog):
    with caplog.at_level("WARNING", logger="ddnn.training.loop"):
        train(tiny_fast("short", epochs=2, warmup_epochs=2.0, time_budget=3600.0), progress=False)
    assert "warm-up covers all 2 epochs" in caplog.text

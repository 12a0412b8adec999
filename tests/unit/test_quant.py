"""Quantized edge layers (Long et al. §II-A) and the xE+yC hybrid mapping."""

import pytest
import torch
from torch.nn import functional as F

from ddnn.models import ModelSpec, QuantSpec, build_model, layer_costs
from ddnn.models.hybrid import HybridConfig, check_fits, hybrid_configs, init_from_full_precision, parse_hybrid
from ddnn.models.quant import (
    QuantBasicBlock,
    QuantConv2d,
    quantize_activations,
    quantize_uniform,
    quantize_weights,
    xnor_alpha,
)
from ddnn.models.resnet import BasicBlock


def test_binary_quantizer_is_sign_with_sign_zero_positive():
    x = torch.tensor([-3.0, -0.4, -1e-6, 0.0, 1e-6, 0.7, 5.0])
    assert quantize_uniform(x, 1).tolist() == [-1, -1, -1, 1, 1, 1, 1]


def test_two_bit_quantizer_levels_by_hand():
    # Z = 3 steps on [-1, 1]: levels -1, -1/3, 1/3, 1; boundaries at -2/3, 0, 2/3.
    x = torch.tensor([-2.0, -0.7, -0.5, -0.2, 0.0, 0.2, 0.5, 0.7, 2.0])
    want = torch.tensor([-1, -1, -1 / 3, -1 / 3, 1 / 3, 1 / 3, 1 / 3, 1, 1])
    torch.testing.assert_close(quantize_uniform(x, 2), want)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_k_bit_quantizer_has_2_to_k_levels_and_bounded_error(bits):
    x = torch.linspace(-1, 1, 4001)
    q = quantize_uniform(x, bits)
    assert len(torch.unique(q)) == 2**bits
    if bits > 1:
        assert (q - x).abs().max() <= 1 / (2**bits - 1) + 1e-6  # half a step of 2/Z


def test_binary_weights_use_xnor_scaling_per_filter():
    w = torch.tensor([[[[0.5, -1.5], [2.0, 0.0]]], [[[-0.1, -0.2], [0.3, -0.4]]]])  # 2 filters of n = 4
    got = quantize_weights(w, 1)
    alpha = torch.tensor([4.0 / 4, 1.0 / 4])  # ||W||_1 / n by hand
    torch.testing.assert_close(xnor_alpha(w), alpha)
    sign = torch.tensor([[[[1.0, -1.0], [1.0, 1.0]]], [[[-1.0, -1.0], [1.0, -1.0]]]])
    torch.testing.assert_close(got, alpha.view(2, 1, 1, 1) * sign)


@pytest.mark.parametrize("bits", [2, 4])
def test_k_bit_weights_keep_each_filters_l1_norm(bits):
    w = torch.randn(6, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    q = quantize_weights(w, bits)
    torch.testing.assert_close(q.abs().flatten(1).sum(1), w.abs().flatten(1).sum(1))
    for f in range(6):
        assert len(torch.unique(q[f].round(decimals=5))) <= 2**bits  # w + (wq - w) rounds in the last bit


def test_activation_gradient_is_clipped_straight_through():
    x = torch.tensor([-2.0, -0.5, 0.3, 0.99, 1.5], requires_grad=True)
    quantize_activations(x, 1).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_weight_gradient_is_straight_through():
    w = torch.randn(4, 2, 3, 3, requires_grad=True)
    g = torch.randn(4, 2, 3, 3)
    (quantize_weights(w, 1) * g).sum().backward()
    torch.testing.assert_close(w.grad, g)


def test_quant_conv_matches_conv_with_alpha_sign_weights():
    conv = QuantConv2d(3, 5, 3, 1, 1, bits=1)
    x = torch.randn(2, 3, 8, 8)
    want = F.conv2d(x, xnor_alpha(conv.weight).view(5, 1, 1, 1) * torch.where(conv.weight >= 0, 1.0, -1.0),
                    padding=1)
    torch.testing.assert_close(conv(x), want)


@pytest.mark.parametrize("stride,cin,cout", [(1, 8, 8), (2, 8, 16)])
def test_quant_block_is_a_drop_in_for_basic_block(stride, cin, cout):
    x = torch.randn(2, cin, 16, 16)
    q, b = QuantBasicBlock(cin, cout, stride, 2), BasicBlock(cin, cout, stride)
    assert q(x).shape == b(x).shape
    # The shortcut is the same full-precision option-A identity.
    torch.testing.assert_close(q.shortcut(x), b.shortcut(x))


def test_quant_block_trains_every_parameter():
    blk = QuantBasicBlock(4, 8, 2, 1)
    blk(torch.randn(3, 4, 8, 8)).square().mean().backward()
    for name, p in blk.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_build_model_quantizes_only_the_leading_blocks():
    m = build_model(ModelSpec("resnet", 14, exits=(2,), width=4, quant=QuantSpec(2, 2)))
    kinds = [type(b).__name__ for b in m.blocks]
    assert kinds == ["QuantBasicBlock"] * 2 + ["BasicBlock"] * 4
    costs = {c.name: c for c in layer_costs(m)}
    # Hand count: block 1 convs are 4->4 3x3 on 32x32: 4*4*9*32*32 = 147456 MACs each, at 2 bits.
    assert costs["blocks.0.conv1.conv"].macs == 147456 and costs["blocks.0.conv1.conv"].bits == 2
    assert costs["blocks.1.conv2.conv"].bits == 2
    # First layer, later blocks, exits and the final head stay full precision.
    assert costs["stem.0"].bits == 32 and costs["stem.0"].macs == 3 * 4 * 9 * 1024
    assert costs["blocks.2.conv1"].bits == 32 and costs["blocks.2.conv1"].macs == 4 * 8 * 9 * 16 * 16
    assert costs["exits.block2.fc"].bits == 32 and costs["final.fc"].bits == 32


def test_parse_hybrid_maps_long_et_al_configurations():
    c = parse_hybrid("16E+14C")
    assert (c.edge_layers, c.cloud_layers, c.edge_blocks, c.exits()) == (16, 14, 8, (8,))
    spec = c.spec(1, 32)
    assert spec.quant == QuantSpec(1, 8) and spec.exits == (8,)
    assert parse_hybrid(" 10e + 20c ").quant(4) == QuantSpec(4, 5)
    assert parse_hybrid("20E+10C").exits(2) == (5, 10)  # Table IV: one mid-edge, one at the end
    assert parse_hybrid("12E+6C").exits(0) == ()


@pytest.mark.parametrize("bad", ["16E14C", "15E+15C", "16E+0C", "E+C", "0E+30C"])
def test_parse_hybrid_rejects_malformed(bad):
    with pytest.raises(ValueError):
        parse_hybrid(bad)


def test_hybrid_must_cover_the_resnet():
    check_fits(parse_hybrid("6E+12C"), 20)
    with pytest.raises(ValueError, match="ResNet-20 has 18"):
        check_fits(parse_hybrid("10E+20C"), 20)
    assert [c.label for c in hybrid_configs(8)] == ["2E+4C", "4E+2C"]
    assert HybridConfig(10, 20) in hybrid_configs(32)


def test_train_cli_hybrid_flag_sets_quant_blocks_and_exit():
    from ddnn.cli import build_parser
    from ddnn.cli.train import apply_hybrid
    from ddnn.training.cli_args import config_from_args

    def resolved(argv):
        args = build_parser().parse_args(["train", *argv])
        return apply_hybrid(config_from_args(args), args.hybrid, args.hybrid_exits)

    cfg = resolved(["--hybrid", "16E+14C", "--quant-bits", "1"])
    assert cfg.quant_blocks == 8 and cfg.exits == (8,)
    cfg = resolved(["--depth", "20", "--hybrid", "12E+6C", "--quant-bits", "2", "--hybrid-exits", "2"])
    assert cfg.quant_blocks == 6 and cfg.exits == (3, 6)
    with pytest.raises(ValueError, match="quant-bits"):
        resolved(["--hybrid", "16E+14C"])


def test_init_from_full_precision_copies_convs_into_quant_blocks():
    torch.manual_seed(0)
    fp = build_model(ModelSpec("resnet", 8, exits=(), width=4))
    hyb = build_model(parse_hybrid("2E+4C").spec(1, 8, width=4))
    keys = init_from_full_precision(hyb, fp.state_dict())
    torch.testing.assert_close(hyb.blocks[0].conv1.conv.weight, fp.blocks[0].conv1.weight)
    torch.testing.assert_close(hyb.blocks[2].bn2.weight, fp.blocks[2].bn2.weight)
    assert "stem.0.weight" in keys and not any(k.startswith("blocks.0.conv1.bn") for k in keys)

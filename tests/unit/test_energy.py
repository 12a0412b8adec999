"""The energy model (Long et al. Table I) on hand-computed layers and splits."""

import json

import pytest
import torch
from torch import nn

from ddnn.energy import EnergyTable, count_ops, energy_per_inference, expected_energy, split_ops
from ddnn.models import ModelSpec, build_model, count_macs
from ddnn.models.hybrid import parse_hybrid
from ddnn.models.quant import QuanConv

TABLE = EnergyTable.load()


def test_shipped_table_is_long_et_al_table_1():
    assert TABLE.mac(32) == 4.6 and TABLE.mac(1) == 0.2
    assert TABLE.add_32bit_pj == 0.9 and TABLE.memory_pj_per_bit == 2.5
    assert TABLE.mac(2) == 0.4 and TABLE.mac(4) == 0.8  # k-bit rule: k x binary MAC


def test_full_precision_conv_energy_by_hand():
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    ops, _ = count_ops(conv, torch.zeros(1, 2, 4, 4))
    macs = 3 * 4 * 4 * 2 * 9  # outputs x (in channels x kernel)
    assert ops.macs == {32: macs} and ops.adds_32bit == 0
    assert ops.compute_pj(TABLE) == pytest.approx(macs * 4.6)
    # Weights once (54 x 32 bits), input read once (32 values), output written once (48 values).
    assert ops.memory_pj(TABLE) == pytest.approx((54 + 32 + 48) * 32 * 2.5)


def test_quanconv_energy_by_hand():
    layer = QuanConv(2, 3, 1, bits=1)
    ops, _ = count_ops(layer, torch.zeros(1, 2, 4, 4))
    macs = 3 * 4 * 4 * 2 * 9
    # Binary MACs, plus one 32-bit MAC per input (BN) and per output (alpha) element.
    assert ops.macs == {1: macs, 32: 32 + 48}
    assert ops.compute_pj(TABLE) == pytest.approx(macs * 0.2 + 80 * 4.6)
    # Weights at 1 bit + a 32-bit alpha per filter + BN scale/shift; binary input read, 32-bit output.
    bits = 54 * 1 + 3 * 32 + 2 * 2 * 32 + 32 * 1 + 48 * 32
    assert ops.memory_pj(TABLE) == pytest.approx(bits * 2.5)


def test_linear_and_pooling_adds():
    from ddnn.models.heads import ExitHead

    head = ExitHead(4, 8, 10, pool=4)  # 4x8x8 -> avgpool 4 -> 4x2x2 = 16 -> 10
    ops, _ = count_ops(head, torch.zeros(1, 4, 8, 8))
    assert ops.macs == {32: 160}
    assert ops.adds_32bit == 4 * 8 * 8 + 10  # pooling accumulations + biases


def test_split_counts_every_layer_once():
    torch.manual_seed(0)
    m = build_model(ModelSpec("resnet", 8, exits=(1, 2), width=4))
    ops = split_ops(m, ["block1", "block2"])
    heads = sum(count_macs(m.exits[e], (1, *m.shapes[m.position(e)])) for e in ("block1", "block2"))
    seg_macs = sum(o.macs[32] for _, o in ops.segments)
    assert seg_macs + ops.cloud.macs[32] == ops.reference.macs[32] + heads
    assert ops.reference.macs[32] == count_macs(m) - heads


def test_expected_energy_weights_segments_by_reach():
    m = build_model(ModelSpec("resnet", 8, exits=(1, 2), width=4))
    ops = split_ops(m, ["block1", "block2"])
    e1, e2 = (o.compute_pj(TABLE) for _, o in ops.segments)
    ec = ops.cloud.compute_pj(TABLE)
    est = expected_energy(ops, {"block1": 0.5, "block2": 0.2}, TABLE)
    assert est.edge_pj == pytest.approx(e1 + 0.5 * e2)
    assert est.cloud_pj == pytest.approx(0.3 * ec)
    assert est.reduction == pytest.approx(ops.reference.compute_pj(TABLE) / (e1 + 0.5 * e2 + 0.3 * ec))
    dropped = expected_energy(ops, {"block1": 0.5, "block2": 0.2, "dropped": 0.1}, TABLE)
    assert dropped.cloud_pj == pytest.approx(0.2 * ec)
    with pytest.raises(ValueError, match="not edge exits"):
        expected_energy(ops, {"final": 0.1}, TABLE)
    with pytest.raises(ValueError, match="sum to at most 1"):
        expected_energy(ops, {"block1": 0.7, "block2": 0.7}, TABLE)


def test_binary_edge_with_exits_saves_energy_and_more_exits_save_more():
    m = build_model(parse_hybrid("4E+2C").spec(1, 8, width=16))
    fp_ref = build_model(ModelSpec("resnet", 8, exits=(), width=16))
    none, half, most = (energy_per_inference(m, {"block2": r}, reference=fp_ref) for r in (0.0, 0.5, 0.9))
    assert 1 < none.reduction < half.reduction < most.reduction
    assert none.edge_pj == half.edge_pj  # every sample runs the edge
    fp = build_model(ModelSpec("resnet", 8, exits=(2,), width=16))
    assert energy_per_inference(fp, {"block2": 0.5}).total_pj > half.total_pj
    # Without a reference model, the reference is the hybrid itself run cloud-only.
    assert energy_per_inference(m, {"block2": 0.0}).reduction < 1


def test_cloud_only_is_the_reference():
    m = build_model(ModelSpec("resnet", 8, exits=(1,), width=4))
    est = energy_per_inference(m, {}, edge_exits=[])
    assert est.total_pj == pytest.approx(est.reference_pj) and est.reduction == pytest.approx(1.0)


def test_user_table_replaces_the_energies(tmp_path):
    doc = json.loads(json.dumps({"format": "ddnn.energy-table/v1", "mac_pj": {"32": 1.0, "1": 0.5},
                                 "add_32bit_pj": 0.0, "memory_pj_per_bit": 0.0}))
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    table = EnergyTable.load(path)
    conv = nn.Conv2d(1, 1, 1, bias=False)
    ops, _ = count_ops(conv, torch.zeros(1, 1, 2, 2))
    assert ops.compute_pj(table) == 4.0
    with pytest.raises(ValueError, match="no 4-bit MAC"):
        table.mac(4)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        EnergyTable.load(path)
    with pytest.raises(ValueError, match="format"):
        EnergyTable.from_dict({"mac_pj": {"32": 1}})


def test_aux_principal_split_sends_raw_input_to_the_whole_principal():
    from ddnn.models import aux_principal

    aux = build_model(ModelSpec("resnet", 8, exits=(), width=4))
    principal = build_model(ModelSpec("resnet", 8, exits=(), width=8))
    est = energy_per_inference(aux_principal(aux, principal), {"aux_final": 0.25})
    aux_ops, _ = count_ops(aux, torch.zeros(1, 3, 32, 32))  # the aux network's stem, blocks and final head
    principal_ops = split_ops(principal, []).reference
    assert est.edge_pj == pytest.approx(aux_ops.compute_pj(TABLE))
    assert est.cloud_pj == pytest.approx(0.75 * principal_ops.compute_pj(TABLE))
    assert est.reference_pj == pytest.approx(principal_ops.compute_pj(TABLE))

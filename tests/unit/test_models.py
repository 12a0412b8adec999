import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ddnn.models import (
    ModelSpec,
    aux_principal,
    build_model,
    cloud_part,
    count_macs,
    count_params,
    layer_costs,
    raw_input_split,
    split_at,
)


def small(arch="resnet", depth=14, exits=(1, 3), width=4, classes=10):
    torch.manual_seed(0)
    m = build_model(ModelSpec(arch=arch, depth=depth, num_classes=classes, exits=exits, width=width))
    # Random BN statistics so the equivalence check is not trivially satisfied by identities.
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.weight.data.uniform_(0.5, 1.5)
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


def test_resnet_parameter_counts_match_he_et_al():
    # He et al. (2016) Table 6: ResNet-20 0.27M, ResNet-32 0.46M, ResNet-56 0.85M parameters.
    for depth, expected in ((20, 0.27e6), (32, 0.46e6), (56, 0.85e6)):
        n = count_params(build_model(ModelSpec(depth=depth, exits=())))
        assert abs(n - expected) / expected < 0.03, (depth, n)


def test_exit_outputs_and_shapes():
    m = small()
    out = m(torch.randn(2, 3, 32, 32))
    assert list(out) == ["block1", "block3", "final"]
    assert all(v.shape == (2, 10) for v in out.values())
    assert m.shapes[0] == (3, 32, 32) and m.shapes[-1] == (16, 8, 8)


@settings(max_examples=12, deadline=None)
@given(arch=st.sampled_from(["resnet", "plain", "compact"]), data=st.data())
def test_edge_then_cloud_equals_full_model_at_every_split(arch, data):
    depth = 14
    n_blocks = {"plain": 9, "resnet": 6, "compact": 3}[arch]
    exits = tuple(sorted(data.draw(st.sets(st.integers(1, n_blocks - 1), min_size=1, max_size=3))))
    m = small(arch=arch, depth=depth, exits=exits, width=4)
    x = torch.randn(data.draw(st.integers(1, 4)), 3, 32, 32)
    with torch.no_grad():
        full = m(x)
        for e in m.exit_names[:-1]:
            s = split_at(m, e)
            logits, feats = s.edge(x)
            assert feats.shape[1:] == s.edge.feature_shape
            for name, lg in logits.items():
                torch.testing.assert_close(lg, full[name], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(s.cloud(feats), full["final"], rtol=1e-5, atol=1e-5)


def test_raw_input_cloud_part_takes_uint8_pixels():
    from ddnn.data import to_tensor

    m = small()
    pixels = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        want = m(to_tensor(pixels))["final"]
        s = raw_input_split(m, ["block1"])
        s.edge(to_tensor(pixels))
        assert s.edge.offload == "input" and s.cloud.input_dtype == "uint8"
        torch.testing.assert_close(s.cloud(pixels), want)
        torch.testing.assert_close(cloud_part(m, 0)(pixels), want)


def test_aux_principal_arrangement():
    aux, principal = small(depth=8, exits=(1,)), small(depth=14, exits=(2,))
    pixels = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    from ddnn.data import to_tensor

    with torch.no_grad():
        s = aux_principal(aux, principal)
        logits, _ = s.edge(to_tensor(pixels))
        assert list(logits) == ["aux_block1", "aux_final"]
        torch.testing.assert_close(logits["aux_final"], aux(to_tensor(pixels))["final"])
        torch.testing.assert_close(s.cloud(pixels), principal(to_tensor(pixels))["final"])


def test_split_rejects_unknown_exit_and_final():
    m = small()
    with pytest.raises(KeyError, match="block2"):
        split_at(m, "block2")
    with pytest.raises(ValueError, match="final"):
        split_at(m, "final")


def test_spec_validation_messages():
    with pytest.raises(ValueError, match="out of range"):
        ModelSpec(depth=20, exits=(9,))
    with pytest.raises(ValueError, match="depth"):
        ModelSpec(depth=21)
    with pytest.raises(ValueError, match="increasing"):
        ModelSpec(depth=20, exits=(4, 2))


def test_macs_of_hand_counted_network():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(4, 8, 3, stride=2, padding=1),
                        nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    # conv1: 32*32 outputs * 4 ch * (3*3*3) = 110592; conv2: 16*16*8 * (4*3*3) = 73728;
    # fc: 2048 * 10 = 20480.
    assert [c.macs for c in layer_costs(net)] == [110592, 73728, 20480]
    assert count_macs(net) == 204800


def test_resnet20_macs_and_part_sums():
    m = build_model(ModelSpec(depth=20, exits=(3,)))
    total = count_macs(m)
    # ResNet-20 backbone is ~40.6M MACs (41M commonly quoted); the exit adds its FC.
    assert 40.5e6 < total < 40.7e6
    s = split_at(m, "block3")
    edge = count_macs(s.edge)
    cloud = count_macs(s.cloud, (1, *s.edge.feature_shape))
    # Edge + cloud = the whole network (the edge also runs the block-3 exit head).
    assert edge + cloud == total

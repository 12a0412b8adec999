import pytest
import torch

from ddnn.checkpoint import CheckpointError, load_checkpoint
from ddnn.training import TrainConfig, train
from tests.conftest import make_imagefolder

CLASSES = tuple(f"c{i}" for i in range(10))


@pytest.fixture
def data(tmp_path):
    return make_imagefolder(tmp_path / "data", classes=CLASSES, per_class=8)


def cfg(tmp_path, data, **kw):
    base = dict(out=str(tmp_path / "m.pt"), data=str(data), depth=8, width=4, exits=(1,), epochs=2,
                batch_size=16, device="cpu", val_fraction=0.25)
    base.update(kw)
    return TrainConfig(**base)


def test_checkpoint_records_everything(tmp_path, data):
    path = train(cfg(tmp_path, data), command="ddnn train --test", progress=False)
    ck = load_checkpoint(path)
    assert ck.exit_names == ("block1", "final") and ck.classes == CLASSES
    assert set(ck.meta["metrics"]["val_accuracy"]) == {"block1", "final"}
    assert ck.meta["command"] == "ddnn train --test"
    assert ck.meta["config"]["depth"] == 8 and ck.meta["data"]["val_count"] == 20
    assert len(ck.meta["history"]) == 2 and ck.meta["loss_weights"] == {"block1": 0.5, "final": 1.0}
    assert not (tmp_path / "m.pt.state").exists()


def test_same_seed_same_weights_other_seed_differs(tmp_path, data):
    a = load_checkpoint(train(cfg(tmp_path, data, out=str(tmp_path / "a.pt")), progress=False))
    b = load_checkpoint(train(cfg(tmp_path, data, out=str(tmp_path / "b.pt")), progress=False))
    c = load_checkpoint(train(cfg(tmp_path, data, out=str(tmp_path / "c.pt"), seed=1), progress=False))
    sa, sb, sc = (x.model.state_dict() for x in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_separate_optimization_trains_only_exits(tmp_path, data):
    base = load_checkpoint(train(cfg(tmp_path, data, out=str(tmp_path / "base.pt"), exits=()), progress=False))
    sep = load_checkpoint(train(cfg(tmp_path, data, out=str(tmp_path / "sep.pt"), exits=(1, 2), mode="separate",
                                    init=str(tmp_path / "base.pt")), progress=False))
    sb, ss = base.model.state_dict(), sep.model.state_dict()
    for k, v in sb.items():  # backbone, final head and BN statistics unchanged
        assert torch.equal(v, ss[k]), k
    assert {k for k in ss if k not in sb} == {"exits.block1.fc.weight", "exits.block1.fc.bias",
                                              "exits.block2.fc.weight", "exits.block2.fc.bias"}
    assert sep.meta["init"]["sha256"] == base.sha256


def test_resume_continues_to_the_same_result(tmp_path, data):
    full = load_checkpoint(train(cfg(tmp_path, data, out=str(tmp_path / "full.pt"), epochs=3), progress=False))
    part_cfg = cfg(tmp_path, data, out=str(tmp_path / "part.pt"), epochs=3)
    # Simulate an interruption after epoch 2: run a 3-epoch job but stop the loop early.
    import ddnn.training.loop as loop

    calls = {"n": 0}
    real = loop.evaluate_exits

    def interrupt(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    loop.evaluate_exits = interrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            train(part_cfg, progress=False)
    finally:
        loop.evaluate_exits = real
    assert (tmp_path / "part.pt.state").exists()
    part_cfg = part_cfg.replace(resume=True)
    resumed = load_checkpoint(train(part_cfg, progress=False))
    sf, sr = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(sf[k].float(), sr[k].float(), atol=1e-6) for k in sf)


def test_bad_settings_are_named(tmp_path, data):
    with pytest.raises(ValueError, match="--init"):
        TrainConfig(mode="separate")
    with pytest.raises(ValueError, match="unknown exits"):
        train(cfg(tmp_path, data, loss_weights={"block9": 1.0}), progress=False)


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"bad\.pt"):
        load_checkpoint(bad)
    torch.save({"format": "other"}, bad)
    with pytest.raises(CheckpointError, match="format 'other'"):
        load_checkpoint(bad)


def test_experiments_and_the_cli_read_train_flags_alike():
    # `ddnn reproduce` records each run as a `ddnn train` command and trains it through the library
    # (ddnn.training.cli_args), so that command must mean the same config on the command line.
    from ddnn.cli import build_parser
    from ddnn.training.cli_args import config_from_args, config_from_argv

    argv = ["--hybrid", "10E+8C", "--quant-bits", "1", "--hybrid-exits", "1", "--loss-weights", "block5=0.6,final=0.4",
            "--depth", "20", "--epochs", "1", "--lr", "0.05", "--limit", "24000", "--no-progress", "-o", "x.pt"]
    from_cli = config_from_args(build_parser().parse_args(["train", *argv]))
    assert config_from_argv(argv) == from_cli
    assert from_cli.quant_blocks == 5 and from_cli.exits == (5,)

"""`ddnn calibrate`, `ddnn eval` and `ddnn sweep` on a tiny checkpoint trained here."""

import csv
import io
import json
from pathlib import Path

import pytest

from ddnn.checkpoint import load_checkpoint
from ddnn.cli import main
from ddnn.paths import REPO_ROOT
from ddnn.training import TrainConfig, train
from tests.conftest import make_imagefolder


def read_csv(path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(Path(path).read_text())))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-class ResNet-8 with exits after blocks 1 and 2, trained for one epoch on random images."""
    root = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DDNN_CACHE_DIR", str(root / "cache"))
        data = make_imagefolder(root / "data", classes=("cat", "dog", "ship"), per_class=16)
        cfg = TrainConfig(out=str(root / "tiny.pt"), data=str(data), depth=8, width=4, exits=(1, 2), epochs=1,
                          batch_size=16, device="cpu", val_fraction=0.25)
        ck = train(cfg, progress=False)
    return {"ck": str(ck), "data": str(data), "root": root}


@pytest.fixture(scope="module")
def policy(trained):
    """An AO cascade policy over both exits, calibrated by the CLI to keep half the samples at the edge."""
    out = trained["root"] / "policy.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DDNN_CACHE_DIR", str(trained["root"] / "cache"))
        rc = main(["calibrate", "--checkpoint", trained["ck"], "--data", trained["data"], "--exits", "block1,block2",
                   "--target-exit-rate", "0.5", "--no-progress", "-o", str(out)])
    assert rc == 0
    return out


def run(args, capsys) -> tuple[int, str, str]:
    try:
        rc = main(args)
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_calibrate_writes_a_policy_that_records_how_it_was_made(trained, tmp_path, capsys):
    out = tmp_path / "p.json"
    rc, stdout, _ = run(["calibrate", "--checkpoint", trained["ck"], "--data", trained["data"], "--method", "cdl",
                         "--target-exit-rate", "0.5", "--drop-threshold", "0.99", "-o", str(out)], capsys)
    assert rc == 0 and f"wrote {out}" in stdout and "edge exit rate" in stdout
    doc = json.loads(out.read_text())
    meta = doc["meta"]
    assert doc["exits"]["block2"]["kind"] == "max_softmax" and list(doc["exits"]) == ["block2"]  # deepest exit
    assert doc["drop"] == {"kind": "normalized_entropy", "threshold": 0.99}
    assert meta["method"] == "cdl" and meta["exits"] == ["block2"]
    assert meta["target"] == {"kind": "exit_rate", "value": 0.5}
    assert meta["checkpoint_sha256"] == load_checkpoint(trained["ck"]).sha256
    assert meta["validation"]["edge_exit_rate"] >= 0.5 and meta["validation_data"]["count"] == 12
    assert meta["command"].startswith("ddnn calibrate")


def test_eval_json_and_per_sample_csv(trained, policy, tmp_path, capsys):
    per_sample = tmp_path / "samples.csv"
    rc, stdout, _ = run(["eval", "--checkpoint", trained["ck"], "--data", trained["data"], "--policy", str(policy),
                         "--json", "--per-sample", str(per_sample), "--no-progress"], capsys)
    assert rc == 0
    report = json.loads(stdout)
    assert report["exits"] == ["block1", "block2"] and report["images"] == 48
    assert set(report["exit_rate"]) == {"block1", "block2", "cloud", "dropped"}
    assert sum(report["exit_rate"].values()) == pytest.approx(1.0)
    assert set(report["acc_separate"]) == {"block1", "block2", "final"}
    for key in ("acc_overall", "acc_aux_allocate", "acc_prin_allocate", "local_accuracy", "ideal_accuracy",
                "acc_answered", "macs", "link_bytes"):
        assert key in report
    assert report["macs"]["edge_expected_norm"] > 0 and report["link_bytes"]["raw_input"] == 3072
    rows = read_csv(per_sample)
    assert len(rows) == 48 and set(rows[0]) == {"sample_id", "label", "exit", "prediction", "confidence"}
    shares = {e: sum(r["exit"] == e for r in rows) / 48 for e in report["exit_rate"]}
    assert shares == pytest.approx(report["exit_rate"])


def test_eval_text_report_and_knob_override(trained, policy, capsys):
    rc, stdout, _ = run(["eval", "--checkpoint", trained["ck"], "--data", trained["data"], "--policy", str(policy),
                         "--knob", "0"], capsys)
    assert rc == 0
    assert "acc_separate" in stdout and "block1" in stdout and "final (cloud)" in stdout
    assert "knob=0" in stdout  # AO knob 0: every sample exits at block1
    assert "edge exit rate (n in Eq. 8)              100.00%" in stdout


def test_eval_without_policy_is_cloud_only(trained, capsys):
    rc, stdout, _ = run(["eval", "--checkpoint", trained["ck"], "--data", trained["data"], "--no-policy", "--json"],
                        capsys)
    assert rc == 0 and json.loads(stdout)["exit_rate"] == {"cloud": 1.0, "dropped": 0.0}


@pytest.mark.parametrize(("args", "needle"), [
    (["eval", "--policy", "{tmp}/missing.json"], "missing.json: no such policy file"),
    (["eval", "--policy", "{policy}", "--exits", "block9"], "block9"),
    (["eval", "--exits", "block1"], "--exits needs a policy"),
    (["calibrate", "--data", "{tmp}/nope", "--target-accuracy", "0.5"], "nope: --data path does not exist"),
    (["calibrate", "--data", "{data}", "--exits", "block9", "--target-accuracy", "0.5"], "--exits block9"),
    (["calibrate", "--data", "{data}", "--target-accuracy", "0.999"], "not reachable on the validation split"),
    (["sweep", "--data", "{data}", "--exit", "final"], "--exit final: not an edge exit"),
])
def test_user_errors_name_the_culprit_without_traceback(trained, policy, tmp_path, capsys, args, needle):
    fill = {"tmp": str(tmp_path), "policy": str(policy), "data": trained["data"]}
    argv = [a.format(**fill) for a in args]
    argv[1:1] = ["--checkpoint", trained["ck"]]
    if argv[0] == "eval":
        argv += ["--data", trained["data"]]
    rc, _, stderr = run(argv, capsys)
    assert rc == 2 and "Traceback" not in stderr
    error = [line for line in stderr.splitlines() if line.startswith(f"ddnn {argv[0]}: error: ")]
    assert len(error) == 1 and needle in error[0]


@pytest.mark.parametrize(("args", "needle"), [
    (["calibrate", "--target-accuracy", "90"], "fraction in [0, 1]"),
    (["calibrate"], "one of the arguments --target-accuracy --target-exit-rate --max-accuracy-loss is required"),
    (["eval", "--exits", ""], "expected exit names"),
])
def test_bad_flags_are_rejected_by_the_parser(capsys, args, needle):
    rc, _, stderr = run(args, capsys)
    assert rc == 2 and needle in stderr


def test_sweep_writes_csv_plot_table_and_summary(trained, tmp_path, capsys):
    out = tmp_path / "sweep"
    rc, stdout, _ = run(["sweep", "--checkpoint", trained["ck"], "--data", trained["data"], "--test-data",
                         trained["data"], "--points", "6", "--ao-knobs", "1,2", "-o", str(out)], capsys)
    assert rc == 0
    assert "AO knob 1: overall" in stdout and "CDL" in stdout and "BranchyNet" in stdout
    rows = read_csv(out / "sweep.csv")
    assert {r["method"] for r in rows} == {"CDL", "BranchyNet", "AO"}
    assert sum(r["reference"] == "True" for r in rows) == 2
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = read_csv(out / "table2.csv")
    assert [r["method"] for r in table[:3]] == ["CDL", "BranchyNet", "AO"] and table[0]["reference_knob"] == "1.0"
    summary = (out / "summary.md").read_text()
    assert "## AO knob 1" in summary and "measured on the test split" in summary
    assert json.loads((out / "sweep.json").read_text())["exit"] == "block2"


def test_sweep_aux_principal_arrangement(trained, tmp_path, capsys):
    # The same tiny network serves as auxiliary (edge, its block1 exit) and principal (cloud).
    out = tmp_path / "aux"
    rc, stdout, _ = run(["sweep", "--checkpoint", trained["ck"], "--aux", trained["ck"], "--exit", "block1",
                         "--data", trained["data"], "--test-data", trained["data"], "--points", "4", "-o", str(out)],
                        capsys)
    assert rc == 0 and "AO knob 1" in stdout
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["exit"] == "aux_block1"
    # Recorded repo-relative when the file lies beside the repository (a clone under /tmp does).
    assert (REPO_ROOT / doc["info"]["aux_checkpoint"]).resolve() == Path(trained["ck"]).resolve()
    assert set(doc["separate"]) == {"aux_block1", "final"}
    # The cloud gets the raw image: 3072 bytes per offloaded sample.
    row = doc["rows"][0]
    assert row["link_bytes"] == pytest.approx(3072 * (1 - row["edge_exit_rate"]))


def test_calibrate_into_merges_one_exit_per_mode(trained, tmp_path, capsys):
    first = tmp_path / "normal.json"
    args = ["calibrate", "--checkpoint", trained["ck"], "--data", trained["data"], "--target-exit-rate", "0.5",
            "--no-progress"]
    assert run([*args, "--exits", "block2", "-o", str(first)], capsys)[0] == 0
    merged = tmp_path / "both.json"
    assert run([*args, "--method", "cdl", "--exits", "block1", "--into", str(first), "-o", str(merged)], capsys)[0] == 0
    doc = json.loads(merged.read_text())
    assert doc["exits"]["block2"] == json.loads(first.read_text())["exits"]["block2"]  # kept as fitted
    assert doc["exits"]["block1"]["kind"] == "max_softmax"
    assert "--into" in doc["meta"]["per_exit"]["block1"]["command"]
    assert "--into" not in doc["meta"]["per_exit"]["block2"]["command"]


def test_eval_reports_energy_at_the_measured_exit_rates(trained, policy, tmp_path, capsys):
    args = ["eval", "--checkpoint", trained["ck"], "--data", trained["data"], "--policy", str(policy), "--no-progress"]
    rc, stdout, _ = run([*args, "--json"], capsys)
    assert rc == 0
    report = json.loads(stdout)
    e = report["energy"]["compute"]
    assert e["total_uj"] == pytest.approx(e["edge_uj"] + e["cloud_uj"])
    # Every sample runs block1's segment; block2's only if it did not exit at block1; the cloud
    # part only for the offloaded ones.
    rates = report["exit_rate"]
    seg = e["segments_uj"]
    assert e["edge_uj"] == pytest.approx(seg["block1"] + (1 - rates["block1"]) * seg["block2"])
    assert e["cloud_uj"] == pytest.approx(rates["cloud"] * e["cloud_part_uj"])
    assert e["reduction"] == pytest.approx(e["reference_uj"] / e["total_uj"])
    assert report["energy"]["with_memory"]["total_uj"] > e["total_uj"]
    # A user table with every energy doubled doubles every figure.
    table = json.loads((REPO_ROOT / "ddnn/resources/energy_table1.json").read_text())
    table["mac_pj"] = {k: 2 * v for k, v in table["mac_pj"].items()}
    table["add_32bit_pj"] *= 2
    table["memory_pj_per_bit"] *= 2
    (tmp_path / "t.json").write_text(json.dumps(table))
    rc, stdout, _ = run([*args, "--json", "--energy-table", str(tmp_path / "t.json")], capsys)
    assert rc == 0 and json.loads(stdout)["energy"]["compute"]["total_uj"] == pytest.approx(2 * e["total_uj"])
    rc, stdout, _ = run(args, capsys)
    assert rc == 0 and "energy/inference" in stdout and "less than cloud-only" in stdout


def test_eval_names_a_missing_energy_table(trained, tmp_path, capsys):
    missing = tmp_path / "nope.json"
    rc, _, stderr = run(["eval", "--checkpoint", trained["ck"], "--data", trained["data"], "--no-progress",
                         "--energy-table", str(missing)], capsys)
    assert rc != 0 and str(missing) in stderr


def test_sweep_rows_carry_energy(trained, tmp_path, capsys):
    out = tmp_path / "sw"
    rc, _, _ = run(["sweep", "--checkpoint", trained["ck"], "--data", trained["data"], "--test-data", trained["data"],
                    "--points", "3", "--no-progress", "-o", str(out)], capsys)
    assert rc == 0
    rows = read_csv(out / "sweep.csv")
    energies = {float(r["edge_exit_rate"]): float(r["energy_uj"]) for r in rows}
    assert all(v > 0 for v in energies.values())
    assert "energy µJ/inference" in (out / "summary.md").read_text()
    assert "energy_uj" in read_csv(out / "table2.csv")[0]

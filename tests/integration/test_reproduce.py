"""``ddnn reproduce <experiment> --quick``: every experiment runs end to end and its report has every table."""

from pathlib import Path

import pytest

from ddnn.cli import main

pytestmark = pytest.mark.integration


def reproduce(tmp_path: Path, name: str, *extra: str) -> str:
    out = tmp_path / "out"
    rc = main(["reproduce", name, "--quick", "--threads", "1", "--out", str(out), "--work", str(tmp_path / "work"),
               *extra])
    assert rc == 0
    report = (out / "README.md").read_text()
    assert "## How this report was made" in report and "JPEG re-encodings" in report
    for link in (line[line.index("(") + 1 : -1] for line in report.splitlines() if line.startswith("![")):
        assert (out / link).is_file(), link
    return report


@pytest.fixture
def cifar10_small(tmp_path):
    from tests.conftest import make_cifar10_pickles

    return str(make_cifar10_pickles(tmp_path / "c10", per_batch=40, test=60))


def test_hybrid_quick_report_has_every_table(tmp_path, cifar10_small):
    report = reproduce(tmp_path, "hybrid", "--data", cifar10_small, "--test-data", cifar10_small)
    for heading in ("## Headline", "## Best configuration per bit-width", "## Fig. 4", "## Table II",
                    "## Table III", "## Energy-model check", "## Table IV", "## Figures"):
        assert heading in report, heading
    for row in ("1-bit 2E+4C", "2-bit 4E+2C", "4-bit 4E+2C", "FP cloud-only", "| separate |", "| joint |"):
        assert row in report, row
    assert "ddnn train --hybrid 2E+4C --quant-bits 1" in report
    assert "--mode separate" in report and "--hybrid-exits 2" in report
    # A second run reuses every checkpoint made by the same command.
    work = sorted((tmp_path / "work").glob("*.pt"))
    stamps = [p.stat().st_mtime_ns for p in work]
    reproduce(tmp_path, "hybrid", "--data", cifar10_small, "--test-data", cifar10_small)
    assert [p.stat().st_mtime_ns for p in work] == stamps


def test_hybrid_quick_runs_on_cifar100(tmp_path):
    from tests.conftest import make_cifar100_pickles

    data = str(make_cifar100_pickles(tmp_path / "c100", train=200, test=60))
    report = reproduce(tmp_path, "hybrid", "--data", data, "--test-data", data)
    assert "100-class data" in report and "< 1 (the paper's 1.0" in report
    assert "## Table II" in report and "## Table IV" in report


def test_sem_vs_mem_quick_report_has_every_table(tmp_path, cifar10_small):
    report = reproduce(tmp_path, "sem-vs-mem", "--data", cifar10_small, "--test-data", cifar10_small)
    for heading in ("## Verdict", "## Fig. 5 / Fig. 6", "## Fig. 7 / Fig. 8", "## Fig. 10", "## Figures"):
        assert heading in report, heading
    for row in ("| SEM-1 |", "| SEM-8 |", "| MEM exit 8 |", "T = 0.1", "T = 0.8"):
        assert row in report, row
    assert "fig9_training.png" in report


def test_thresholds_quick_report_has_table_3(tmp_path):
    report = reproduce(tmp_path, "thresholds")
    assert "## Table III" in report and "| 0.4 (ours) |" in report and "| 0.8 (paper) |" in report
    assert "## All thresholds" in report


def test_ao_vs_cdl_quick_report_has_table_2(tmp_path):
    report = reproduce(tmp_path, "ao-vs-cdl")
    assert "## Paper, Table II" in report and report.count("## Table II, ours") == 4
    assert "| BranchyNet |" in report and "fig11_aux-block4.png" in report


def test_ws_vs_normal_quick_report_has_table_3(tmp_path):
    report = reproduce(tmp_path, "ws-vs-normal")
    assert "## Table III" in report and "| WS: 9 layers" in report and "| Normal: 15 layers" in report

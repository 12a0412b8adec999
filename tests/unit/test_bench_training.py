"""The training section of make bench: its table and the projection for the next accuracy rung."""

from __future__ import annotations

from benchmarks import training


def _row(model: str, precision: str, seconds: float) -> dict:
    return {"recipe": "fast", "model": model, "precision": precision, "batch_size": 512,
            "macs_per_image": 255_000_000, "seconds_per_epoch": seconds}


def test_render_projects_the_next_rung_from_its_fastest_timed_precision():
    result = {"threads": 2, "timed_steps": 6, "table": [
        {"recipe": "classic", "model": "resnet20w32", "precision": "fp32", "batch_size": 128,
         "macs_per_image": 41_000_000, "seconds_per_epoch": 600.0},
        _row("compact64", "fp32", 300.0),
        _row("compact96", "fp32", 720.0),
        _row("compact96", "bf16", 240.0),
    ]}
    lines = training.render(result)
    assert "| fast | compact64 | 255 | fp32 | 512 | 300 | 2.00x |" in lines
    projection = lines[-1]
    assert f"{training.NEXT_RUNG_EPOCHS} epochs of it take 60 min" in projection  # 15 x 240 s, the bf16 row
    assert "(bf16;" in projection


def test_render_reads_results_recorded_before_the_macs_column():
    old = {"threads": 2, "timed_steps": 6, "table": [
        {"recipe": "classic", "model": "resnet20w32", "precision": "fp32", "batch_size": 128,
         "seconds_per_epoch": 583.0}]}
    lines = training.render(old)
    assert "| classic | resnet20w32 | - | fp32 | 128 | 583 | 1.00x |" in lines
    assert not any("projection" in line for line in lines)

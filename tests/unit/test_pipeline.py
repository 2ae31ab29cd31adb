"""The pipeline's command line, without running a pipeline (the runs are in integration/test_pipeline.py)."""

from __future__ import annotations

from ray_jobs import pipeline


def test_cli_rejects_bad_settings_with_a_clear_message(capsys):
    assert pipeline.main(["--tune-samples", "0"]) == 2
    assert "tune_num_samples" in capsys.readouterr().err

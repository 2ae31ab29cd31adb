"""The pipeline end to end on the real local stack: Ray cluster, MLflow server, local store.

One source file holds three batches in order: two from the same distribution, then one that
only has cheap Florida homes. Runs then follow the product's story: the first batch makes a
champion, the second (no drift, few new rows) is skipped, the third (drift) retrains and
the challenger is promoted or rejected on evidence. A re-run with nothing new changes nothing.
"""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ray_jobs import pipeline
from ray_jobs.drift import load_drift_history
from rayestate import history, registry, store
from rayestate.devstack.synthetic import generate_listings

pytestmark = pytest.mark.timeout(900)
BATCH_ROWS = 3000


@pytest.fixture(scope="module")
def story(ray_cluster, mlflow_server, tmp_path_factory):
    """Settings whose source file is: batch 1, batch 2 (same market), batch 3 (shifted market)."""
    from rayestate.settings import Settings

    root = tmp_path_factory.mktemp("pipeline")
    market = generate_listings(80_000, seed=11)
    market = market[market["price"].between(20_000, 5_000_000)]
    same = market.sample(2 * BATCH_ROWS, random_state=1)
    shifted = market[(market["state"] == "Florida") & (market["price"] <= 300_000)]
    assert len(shifted) >= BATCH_ROWS, "synthetic data should hold enough cheap Florida homes"
    rows = pd.concat([same, shifted.sample(BATCH_ROWS, random_state=2)], ignore_index=True)
    source = root / "listings.parquet"
    rows.to_parquet(source)
    return Settings(
        state_dir=root / "state",
        mlflow_tracking_uri=mlflow_server,
        mlflow_experiment="pipeline-story",
        model_name="pipeline-story",
        source_path=source,
        file_batch_rows=BATCH_ROWS,
        ray_address="auto",
        retrain_min_new_rows=50_000,
        tune_num_samples=2,
        tune_time_budget_s=60,
        bootstrap_samples=200,
    )


def _versions(settings) -> list:
    return MlflowClient(settings.mlflow_tracking_uri).search_model_versions(f"name = '{settings.model_name}'")


def test_first_run_registers_a_champion(story):
    result = pipeline.run_pipeline(story)
    assert result.outcome == "first_model", result
    assert result.batches == ["file-listings.g0.file.b000001"]
    champion = registry.champion(registry.connect(story), story)
    assert champion is not None and champion.version == result.model_version
    assert champion.training_batches == result.batches
    assert result.metrics["mdape"] < 0.5  # learned something real from the synthetic market


def test_same_distribution_batch_is_skipped(story):
    before = len(_versions(story))
    result = pipeline.run_pipeline(story)
    assert result.outcome == "skipped", result
    assert result.drift_verdict == "no_drift"
    assert "skipped" in result.reason
    assert len(_versions(story)) == before
    # The skip is recorded: the drift report is kept, and the batch is no longer pending.
    assert load_drift_history(story, limit=1)[0].verdict == "no_drift"
    assert pipeline.pending_batches(story) == []


def test_shifted_batch_drifts_and_retrains(story):
    before = len(_versions(story))
    result = pipeline.run_pipeline(story)
    assert result.drift_verdict == "drift", result
    assert result.outcome in {"promoted", "rejected"}, result
    assert len(_versions(story)) == before + 1
    decided = registry.promotion_history(registry.connect(story), story)
    assert decided[0].version == result.model_version  # newest first
    assert (decided[0].decision, decided[0].reason) == (result.outcome, result.reason)


def test_rerun_without_new_data_changes_nothing(story):
    before = [v.version for v in _versions(story)]
    ledger = history.pipeline_runs(story)
    result = pipeline.run_pipeline(story)
    assert result.outcome == "no_new_data"
    assert [v.version for v in _versions(story)] == before
    assert history.pipeline_runs(story) == ledger
    assert len(store.list_records(story, "raw")) == 3

"""A champion this code cannot load is never replaced blindly (issue 14, "Bugs to fix on the way").

Before f67a011 a champion whose model failed to load (an artifact saved with an older feature
transform, or a corrupt one) made the challenger "promoted" with the load error as its reason: the
registry moved the serving alias to a model nobody had compared with anything. Now the round fails
with ChampionUnreadable naming the version, before any training, and registers nothing.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from mlflow.tracking import MlflowClient

from ray_jobs import pipeline, register
from ray_jobs.challenger import ChampionUnreadable, train_and_decide
from ray_jobs.split import split_frame
from rayestate import history, registry, store
from rayestate.features import FEATURE_VERSION
from rayestate.model import PriceModel, booster_file
from rayestate.schema import conform_table
from rayestate.settings import Settings
from tests.support.champion import register_sample_model
from tests.support.models import sample_listings, train_sample_model

pytestmark = pytest.mark.timeout(600)


class CorruptOnSave(PriceModel):
    """Saves a booster file that is not a booster: the registered artifact is corrupt."""

    def save(self, directory: Path) -> Path:
        directory = super().save(directory)
        (directory / booster_file(0)).write_bytes(b"not a booster")
        return directory


def unreadable(model: PriceModel, how: str) -> PriceModel:
    """``model`` made so that the version registered from it cannot be loaded by this code."""
    if how == "old feature transform":
        model.transform.version = FEATURE_VERSION - 1  # saved as an older transform; load refuses it
        return model
    return CorruptOnSave(boosters=model.boosters, transform=model.transform, meta=model.meta)


def register_unreadable_champion(settings: Settings, how: str, training_batches: list[str]) -> str:
    """Register a first model (so the champion) whose artifact this code cannot load; returns its version."""
    splits = split_frame(sample_listings(2000, seed=31))
    model = unreadable(train_sample_model(pd.concat([splits.train, splits.valid]), rounds=20), how)
    record = register_sample_model(
        settings.mlflow_tracking_uri, settings.model_name, model, splits.test, run_key="old-champion",
        training_batches=training_batches,
    )  # fmt: skip
    assert record.decision == "first_model" and "champion" in record.aliases
    return record.version


def round_settings(mlflow_server: str, tmp_path: Path, **overrides) -> Settings:
    return Settings(
        state_dir=tmp_path / "state", mlflow_tracking_uri=mlflow_server, mlflow_experiment=f"unreadable-{tmp_path.name}",
        model_name=f"unreadable-{tmp_path.name}", tune_num_samples=1, tune_time_budget_s=60, bootstrap_samples=200,
        **overrides,
    )  # fmt: skip


def publish_clean(settings: Settings, batch_id: str, frame: pd.DataFrame) -> dict:
    table = conform_table(pa.Table.from_pandas(frame, preserve_index=False))
    record = store.CleanRecord(
        batch_id=batch_id, source="test", group_number=1, day="Tuesday", batch_number=1, rows=table.num_rows,
        sha256=store.content_sha256(table), fetched_at=store.now(),
    )  # fmt: skip
    return {batch_id: store.publish(settings, "clean", record, table)}


@pytest.mark.parametrize("how", ["old feature transform", "corrupt artifact"])
def test_an_unreadable_champion_fails_the_round_before_training_and_registers_nothing(
    ray_cluster, mlflow_server, tmp_path, how
):
    settings = round_settings(mlflow_server, tmp_path)
    champion_version = register_unreadable_champion(settings, how, ["old-batch"])
    # Rows a round could train on: an implementation that trains first would register a challenger.
    records = publish_clean(settings, "new-batch", sample_listings(2500, seed=32))
    client = registry.connect(settings)
    champion = registry.champion(client, settings)

    with (
        pytest.raises(ChampionUnreadable, match=rf"champion v{champion_version} .*cannot be loaded") as raised,
        register.pipeline_run(client, settings, "challenger-key", ["new-batch"], records) as run,
    ):
        train_and_decide(client, settings, "challenger-key", records, champion)

    assert "Nothing was trained or registered" in str(raised.value)
    assert [v.version for v in registry.versions(client, settings)] == [champion_version]  # nothing registered
    assert registry.find_version(client, settings, "challenger-key") is None
    aliases = client.get_registered_model(settings.model_name).aliases
    assert aliases == {"champion": champion_version, "challenger": champion_version}  # no alias moved
    assert client.get_run(run.info.run_id).info.status == "FAILED"
    trials = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert trials == []  # it failed before the search: no Tune trial ran


@pytest.mark.timeout(900)
def test_a_pipeline_round_with_an_unreadable_champion_fails_and_the_next_one_recovers(
    ray_cluster, mlflow_server, tmp_path
):
    """The whole round: the new batch stays pending, and once the alias is removed (what the error
    says to do) the next run registers a first model from it."""
    source = tmp_path / "listings.parquet"
    sample_listings(4000, seed=33).to_parquet(source)
    settings = round_settings(
        mlflow_server, tmp_path, source_path=source, file_batch_rows=2000, ray_address="auto", retrain_min_new_rows=1
    )
    (old,) = pipeline.ingest_new_batches(settings, 1)  # an earlier run trained the champion on batch 1
    history.record_run(settings, {"run_key": "earlier", "batches": [old.batch_id], "outcome": "first_model"})
    champion_version = register_unreadable_champion(settings, "old feature transform", [old.batch_id])

    with pytest.raises(ChampionUnreadable, match=rf"champion v{champion_version} "):
        pipeline.run_pipeline(settings)  # ingests batch 2; enough new rows to retrain; the champion is unreadable
    client = MlflowClient(tracking_uri=mlflow_server)
    assert [v.version for v in registry.versions(client, settings)] == [champion_version]
    (new,) = pipeline.pending_batches(settings)  # decided on by no one: the next run picks it up
    assert new != old.batch_id and [r["run_key"] for r in history.pipeline_runs(settings)] == ["earlier"]

    client.delete_registered_model_alias(settings.model_name, "champion")
    result = pipeline.run_pipeline(settings)
    assert (result.outcome, result.batches) == ("first_model", [new])
    assert registry.champion(client, settings).version == result.model_version != champion_version

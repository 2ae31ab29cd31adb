"""Ray Tune search on the real local cluster, its nested MLflow runs, the refit, and the wiring
of a whole training round (store -> split -> tune -> refit -> register -> decide)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ray_jobs.challenger import train_and_decide
from ray_jobs.split import split_frame
from ray_jobs.tune import DEFAULT_CONFIG, METRIC, XGBOOST_DEFAULTS, fit_untuned, refit, tune_model
from rayestate import registry, store
from rayestate.schema import conform_table
from rayestate.settings import Settings
from tests.support.models import sample_listings


def test_untuned_baseline_early_stops_and_refits():
    splits = split_frame(sample_listings(3000, seed=41))
    model, result = fit_untuned(splits.train, splits.valid)
    assert 1 <= result.best_rounds < 3000 and model.meta["rounds"] == result.best_rounds
    assert model.boosters[0].num_boosted_rounds() == result.best_rounds
    assert np.isfinite(model.predict(splits.test)).all()


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_search_logs_each_trial_as_a_nested_run_and_refits(ray_cluster, mlflow_server, tmp_path):
    splits = split_frame(sample_listings(3000, seed=42))
    settings = Settings(
        state_dir=tmp_path / "state", mlflow_tracking_uri=mlflow_server, mlflow_experiment=f"tune-{tmp_path.name}",
        tune_num_samples=3, tune_time_budget_s=600, seed=5,
    )  # fmt: skip
    client = registry.connect(settings)
    with registry.pipeline_run(client, settings, "tune-test", ["b1"]) as parent:
        result = tune_model(
            splits.train, splits.valid, settings, mlflow_parent_run_id=parent.info.run_id, max_rounds=40
        )

    assert 1 <= result.num_trials <= 3 and len(result.trials) == result.num_trials
    assert DEFAULT_CONFIG in [t["config"] for t in result.trials]  # Optuna starts from the default
    assert result.best_valid_mae == min(t[METRIC] for t in result.trials if t[METRIC] is not None)
    assert 1 <= result.best_rounds <= 40

    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == result.num_trials
    for child in children:
        assert child.info.status in ("FINISHED", "KILLED")  # ASHA-stopped trials are closed too
        assert {"eta", "max_depth", "objective"} <= set(child.data.params)
        history = client.get_metric_history(child.info.run_id, "valid_mae_log")
        assert [m.step for m in history] == list(range(1, len(history) + 1))  # every round logged
    best_child = next(c for c in children if c.info.run_id == _best_trial(result)["mlflow_run_id"])
    assert best_child.data.metrics[METRIC] == pytest.approx(result.best_valid_mae)

    model = refit(pd.concat([splits.train, splits.valid]), result, seed=settings.seed)
    assert model.boosters[0].num_boosted_rounds() == result.best_rounds
    predicted = model.predict(splits.test)
    assert np.isfinite(predicted).all() and (predicted > 0).all()


def _best_trial(result):
    return min((t for t in result.trials if t[METRIC] is not None), key=lambda t: t[METRIC])


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_a_training_round_registers_once_per_run_key(ray_cluster, mlflow_server, tmp_path):
    settings = Settings(
        state_dir=tmp_path / "state", mlflow_tracking_uri=mlflow_server, mlflow_experiment=f"round-{tmp_path.name}",
        model_name=f"round-{tmp_path.name}", tune_num_samples=1, tune_time_budget_s=600, bootstrap_samples=200,
    )  # fmt: skip
    table = conform_table(pa.Table.from_pandas(sample_listings(2500, seed=43), preserve_index=False))
    record = store.CleanRecord(
        batch_id="test-1", source="test", group_number=1, day="Tuesday", batch_number=1, rows=table.num_rows,
        sha256=store.content_sha256(table), fetched_at=store.now(),
    )  # fmt: skip
    records = {"test-1": store.publish(settings, "clean", record, table)}
    client = registry.connect(settings)

    outcomes = []
    for _ in range(2):  # the second run is a re-execution of the same run (same batches, same key)
        with registry.pipeline_run(client, settings, "round-key", ["test-1"], records):
            outcomes.append(train_and_decide(client, settings, "round-key", records, None))
    assert [o.outcome for o in outcomes] == ["first_model", "first_model"]
    assert outcomes[0].version == outcomes[1].version
    assert len(client.search_model_versions(f"name = '{settings.model_name}'")) == 1
    champion = registry.champion_info(client, settings)
    assert champion.version == outcomes[0].version and champion.training_batches == ["test-1"]
    assert 0 < outcomes[0].metrics["mdape"] < 1


def test_a_bag_averages_its_boosters_explains_exactly_and_round_trips(tmp_path):
    from rayestate.model import PriceModel

    splits = split_frame(sample_listings(3000, seed=43))
    _, plain = fit_untuned(splits.train, splits.valid)
    together = pd.concat([splits.train, splits.valid])
    assert len(refit(together, plain, seed=3, bag_size=2).boosters) == 1  # no sampling: seeds change nothing
    _, result = fit_untuned(splits.train, splits.valid, config={**XGBOOST_DEFAULTS, "subsample": 0.7})
    bag = refit(together, result, seed=3, bag_size=2)
    assert len(bag.boosters) == 2 and bag.meta["bag_size"] == 2
    members = [PriceModel(boosters=[b], transform=bag.transform) for b in bag.boosters]
    outputs = [m.predict_log(splits.test) for m in members]
    assert not np.allclose(outputs[0], outputs[1])  # different seeds, different trees
    np.testing.assert_allclose(bag.predict_log(splits.test), np.mean(outputs, axis=0), rtol=1e-6)

    rows = splits.test.head(5)
    for explanation, log_price in zip(bag.explain(rows), bag.predict_log(rows), strict=True):
        total = explanation.base_value + sum(explanation.shap.values())
        assert total == pytest.approx(log_price, abs=1e-4)  # additive: SHAP adds up to the model's output
        assert explanation.log_price == pytest.approx(log_price, abs=1e-12)  # which the explanation carries

    loaded = PriceModel.load(bag.save(tmp_path / "bag"))
    assert len(loaded.boosters) == 2
    np.testing.assert_allclose(loaded.predict_log(splits.test), bag.predict_log(splits.test), rtol=1e-6)
    with pytest.raises(ValueError, match="at least one booster"):
        PriceModel(boosters=[], transform=bag.transform)

"""Registry decisions, aliases, idempotency and MLflow outages, against real MLflow servers."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ray_jobs import register
from ray_jobs.challenger import load_champion, register_and_decide
from ray_jobs.split import split_frame
from rayestate import registry
from rayestate.localstack import MlflowServer, free_port
from rayestate.model_io import load_model_by_alias
from rayestate.registry import MlflowUnavailable, Tag, VersionRecord
from rayestate.settings import Settings
from tests.support.models import make_model, sample_listings

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def splits():
    return split_frame(sample_listings(6000, seed=21))


@pytest.fixture(scope="module")
def models(splits):
    """A weak first model, a useless one (shuffled prices) and a sound one, built on purpose."""
    return {
        "weak": make_model(splits.train, rounds=3),
        "useless": make_model(splits.train, shuffled=True),
        "sound": make_model(splits.train, rounds=60),
    }


def settings_for(uri: str, tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        mlflow_tracking_uri=uri,
        mlflow_experiment=f"registry-{tmp_path.name}",
        model_name=f"price-{tmp_path.name}",
        bootstrap_samples=300,
    )


def run_round(client, settings, model, test, run_key: str, batches=("b1",)):
    """What the pipeline does after training: its run, registration and decision."""
    champion = load_champion(client, settings, registry.champion(client, settings))
    with register.pipeline_run(client, settings, run_key, list(batches)):
        return register_and_decide(
            client, settings, model, test, run_key=run_key, training_batches=list(batches), champion_model=champion
        )


def versions(client, settings) -> list[VersionRecord]:
    return registry.versions(client, settings)


def register_undecided(client, settings, model, run_key: str, batches: list[str]) -> VersionRecord:
    """A pipeline run that crashed right after create_model_version: registered, undecided, no alias."""
    with register.pipeline_run(client, settings, run_key, batches):
        return register.register_model(
            client, settings, model, run_key=run_key, metrics={"mdape": 0.1}, training_batches=batches
        )


def test_first_model_then_worse_rejected_then_better_promoted(mlflow_server, tmp_path, splits, models):
    settings = settings_for(mlflow_server, tmp_path)
    client = registry.connect(settings)

    first = run_round(client, settings, models["weak"], splits.test, "k1")
    assert first.outcome == "first_model"
    assert registry.champion(client, settings).version == first.version

    worse = run_round(client, settings, models["useless"], splits.test, "k2", ("b1", "b2"))
    assert worse.outcome == "rejected" and "worse" in worse.reason
    assert worse.numbers["diff_ci_low"] > 0
    assert registry.champion(client, settings).version == first.version

    better = run_round(client, settings, models["sound"], splits.test, "k3", ("b1", "b2", "b3"))
    assert better.outcome == "promoted", better.reason
    assert better.numbers["diff_ci_high"] < 0
    champion = registry.champion(client, settings)
    assert champion.version == better.version and champion.training_batches == ["b1", "b2", "b3"]
    model = client.get_registered_model(settings.model_name)
    assert model.aliases == {"champion": better.version, "challenger": better.version}
    # What Serve loads by alias is the promoted model, transform included.
    loaded = load_model_by_alias(client, settings.model_name, "champion")
    assert loaded.model.predict(splits.test.head(5)) == pytest.approx(models["sound"].predict(splits.test.head(5)))

    history = registry.promotion_history(client, settings)
    assert [(h.version, h.decision) for h in history] == [
        (better.version, "promoted"),
        (worse.version, "rejected"),
        (first.version, "first_model"),
    ]
    assert history[1].numbers == worse.numbers and history[1].reason == worse.reason
    assert history[0].metrics == better.metrics  # exactly what the round measured
    assert all(h.complete for h in history)
    assert [h.aliases for h in history] == [["challenger", "champion"], [], []]
    run = client.get_run(history[0].run_id)
    assert run.data.metrics["r2_log"] == pytest.approx(better.metrics["r2_log"])
    assert run.data.tags[Tag.RUN_KEY] == "k3"


def test_a_rerun_reuses_its_version(mlflow_server, tmp_path, splits, models):
    settings = settings_for(mlflow_server, tmp_path)
    client = registry.connect(settings)
    first = run_round(client, settings, models["weak"], splits.test, "same-key")
    again = run_round(client, settings, models["sound"], splits.test, "same-key")
    assert (again.version, again.outcome) == (first.version, "first_model")
    assert len(versions(client, settings)) == 1


def test_a_crash_after_registration_is_finished_by_the_rerun(mlflow_server, tmp_path, splits, models):
    settings = settings_for(mlflow_server, tmp_path)
    client = registry.connect(settings)
    run_round(client, settings, models["weak"], splits.test, "k1")
    half = register_undecided(client, settings, models["sound"], "k2", ["b1", "b2"])
    assert not registry.find_version(client, settings, "k2").complete
    assert client.get_registered_model(settings.model_name).aliases == {"champion": "1", "challenger": "1"}
    assert [h.version for h in registry.promotion_history(client, settings)] == ["1"]  # undecided: not history

    redo = run_round(client, settings, models["useless"], splits.test, "k2", ("b1", "b2"))
    # The registered (sound) model was decided on, not the one the re-run would have trained.
    assert (redo.version, redo.outcome) == (half.version, "promoted")
    assert len(versions(client, settings)) == 2
    assert registry.find_version(client, settings, "k2").complete


def test_a_crash_mid_promotion_reapplies_the_recorded_decision(mlflow_server, tmp_path, splits, models):
    settings = settings_for(mlflow_server, tmp_path)
    client = registry.connect(settings)
    run_round(client, settings, models["weak"], splits.test, "k1")
    half = register_undecided(client, settings, models["sound"], "k2", ["b1", "b2"])
    # The decision tags are written, then the run crashes before any alias moves.
    for key, value in {Tag.DECISION: "promoted", Tag.REASON: "better", Tag.NUMBERS: "{}"}.items():
        client.set_model_version_tag(settings.model_name, half.version, key, value)

    redo = run_round(client, settings, models["sound"], splits.test, "k2", ("b1", "b2"))
    # Not re-compared against itself (which would reject it): the recorded decision is applied.
    assert (redo.version, redo.outcome, redo.reason) == (half.version, "promoted", "better")
    assert registry.champion(client, settings).version == half.version


def test_unreachable_mlflow_fails_fast_naming_the_uri(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MlflowUnavailable, match=uri.replace(".", r"\.")):
        registry.connect(settings_for(uri, tmp_path))


@pytest.fixture
def own_mlflow(tmp_path):
    """A separate MLflow server this test may stop and restart (same port, same database)."""
    server = MlflowServer(tmp_path / "own-mlflow")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_mlflow_down_mid_run_is_a_clear_error_and_the_rerun_finishes(own_mlflow, tmp_path, splits, models):
    uri = own_mlflow.uri
    settings = settings_for(uri, tmp_path)
    client = registry.connect(settings)
    run_round(client, settings, models["weak"], splits.test, "k1")
    champion = registry.champion(client, settings)
    champion_model = load_champion(client, settings, champion)
    register_undecided(client, settings, models["sound"], "k2", ["b1", "b2"])

    own_mlflow.stop()
    with pytest.raises(MlflowUnavailable, match=uri.replace(".", r"\.")):
        register_and_decide(
            client, settings, models["sound"], splits.test, run_key="k2", training_batches=["b1", "b2"],
            champion_model=champion_model,
        )  # fmt: skip
    with pytest.raises(MlflowUnavailable, match="unreachable"):
        registry.connect(settings)

    own_mlflow.start()
    client = MlflowClient(tracking_uri=uri)
    assert registry.champion(client, settings).version == champion.version  # nothing moved while down
    redo = run_round(client, settings, models["sound"], splits.test, "k2", ("b1", "b2"))
    assert redo.outcome == "promoted"
    assert len(versions(client, settings)) == 2
    assert all(v.complete for v in versions(client, settings))


def test_the_pipeline_run_records_drift_outcome_and_failure(mlflow_server, tmp_path):
    from ray_jobs.drift import DriftReport

    settings = settings_for(mlflow_server, tmp_path)
    client = registry.connect(settings)
    report = DriftReport(
        verdict="no_drift", reason="nothing moved", features=[], n_reference=10, n_current=10,
        alpha=0.01, effect_threshold=0.02, missing_threshold=0.05,
    )  # fmt: skip
    with register.pipeline_run(client, settings, "ok-key", ["b1"]) as ok:
        register.log_drift(report)
        register.log_outcome("skipped", "no drift and too few new rows")
    run = client.get_run(ok.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["drift_verdict"] == "no_drift" and run.data.tags["outcome"] == "skipped"
    assert run.data.metrics["drift.detected"] == 0.0
    assert "drift_report.json" in [a.path for a in client.list_artifacts(ok.info.run_id)]

    with pytest.raises(RuntimeError, match="boom"), register.pipeline_run(client, settings, "bad-key", ["b1"]) as bad:
        raise RuntimeError("boom")
    assert client.get_run(bad.info.run_id).info.status == "FAILED"

"""Registry decisions, aliases, idempotency and MLflow outages, against real MLflow servers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from rayestate.mlflow_model import load_model_by_alias

from ray_jobs import registry
from ray_jobs.challenger import register_and_decide
from ray_jobs.split import split_frame
from rayestate.localstack import BIN, free_port, stop_process, wait_http
from rayestate.settings import Settings
from tests.support.models import make_model, sample_listings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


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
    champion = registry.champion_info(client, settings)
    with registry.pipeline_run(client, settings, run_key, list(batches)):
        return register_and_decide(
            client, settings, model, test, run_key=run_key, training_batches=list(batches), champion=champion
        )


def versions(client, settings) -> list:
    return client.search_model_versions(f"name = '{settings.model_name}'")


def test_first_model_then_worse_rejected_then_better_promoted(mlflow_server, tmp_path, splits, models):
    settings = settings_for(mlflow_server, tmp_path)
    client = registry.connect(settings)

    first = run_round(client, settings, models["weak"], splits.test, "k1")
    assert first.outcome == "first_model"
    assert registry.champion_info(client, settings).version == first.version

    worse = run_round(client, settings, models["useless"], splits.test, "k2", ("b1", "b2"))
    assert worse.outcome == "rejected" and "worse" in worse.reason
    assert worse.numbers["diff_ci_low"] > 0
    assert registry.champion_info(client, settings).version == first.version

    better = run_round(client, settings, models["sound"], splits.test, "k3", ("b1", "b2", "b3"))
    assert better.outcome == "promoted", better.reason
    assert better.numbers["diff_ci_high"] < 0
    champion = registry.champion_info(client, settings)
    assert champion.version == better.version and champion.training_batches == ["b1", "b2", "b3"]
    model = client.get_registered_model(settings.model_name)
    assert model.aliases == {"champion": better.version, "challenger": better.version}
    # What Serve loads by alias is the promoted model, transform included.
    loaded = load_model_by_alias(client, settings.model_name, "champion")
    assert loaded.model.predict(splits.test.head(5)) == pytest.approx(models["sound"].predict(splits.test.head(5)))

    history = registry.promotion_history(settings)
    assert [(h["version"], h["decision"]) for h in history] == [
        (better.version, "promoted"),
        (worse.version, "rejected"),
        (first.version, "first_model"),
    ]
    assert history[1]["numbers"]["diff_ci_low"] > 0 and "worse" in history[1]["reason"]
    assert history[0]["metrics"]["r2_log"] == pytest.approx(better.metrics["r2_log"])
    assert all(h["registration"] == "complete" for h in history)
    run = client.get_run(history[0]["run_id"])
    assert run.data.metrics["r2_log"] == pytest.approx(better.metrics["r2_log"])
    assert run.data.tags[registry.RUN_KEY_TAG] == "k3"


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
    # The run crashes right after create_model_version: registered, undecided, no alias.
    with registry.pipeline_run(client, settings, "k2", ["b1", "b2"]):
        half = registry.register_model(
            client, settings, models["sound"], run_key="k2", input_example=splits.test.head(3),
            metrics={"mdape": 0.1}, training_batches=["b1", "b2"],
        )  # fmt: skip
    assert not registry.is_complete(client.get_model_version(settings.model_name, half.version))
    assert client.get_registered_model(settings.model_name).aliases == {"champion": "1", "challenger": "1"}
    assert [h["version"] for h in registry.promotion_history(settings)] == ["1"]  # undecided: not history

    redo = run_round(client, settings, models["useless"], splits.test, "k2", ("b1", "b2"))
    # The registered (sound) model was decided on, not the one the re-run would have trained.
    assert (redo.version, redo.outcome) == (half.version, "promoted")
    assert len(versions(client, settings)) == 2
    assert registry.is_complete(client.get_model_version(settings.model_name, half.version))


def test_a_crash_mid_promotion_reapplies_the_recorded_decision(mlflow_server, tmp_path, splits, models):
    settings = settings_for(mlflow_server, tmp_path)
    client = registry.connect(settings)
    run_round(client, settings, models["weak"], splits.test, "k1")
    with registry.pipeline_run(client, settings, "k2", ["b1", "b2"]):
        half = registry.register_model(
            client, settings, models["sound"], run_key="k2", input_example=splits.test.head(3),
            metrics={"mdape": 0.1}, training_batches=["b1", "b2"],
        )  # fmt: skip
    for key, value in {"decision": "promoted", "reason": "better", "decision_numbers": "{}"}.items():
        client.set_model_version_tag(settings.model_name, half.version, key, value)

    redo = run_round(client, settings, models["sound"], splits.test, "k2", ("b1", "b2"))
    # Not re-compared against itself (which would reject it): the recorded decision is applied.
    assert (redo.version, redo.outcome, redo.reason) == (half.version, "promoted", "better")
    assert registry.champion_info(client, settings).version == half.version


def test_unreachable_mlflow_fails_fast_naming_the_uri(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(registry.MlflowUnavailable, match=uri.replace(".", r"\.")):
        registry.connect(settings_for(uri, tmp_path))


@pytest.fixture
def own_mlflow(tmp_path):
    """A separate MLflow server this test may stop and restart (same port, same database)."""
    root, port = tmp_path / "own-mlflow", free_port()
    root.mkdir()
    command = [
        str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    processes = []

    def start():
        log = (root / "server.log").open("a")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        processes.append(process)
        wait_http(f"{uri}/health", timeout=120, process=process)

    def stop():
        stop_process(processes[-1])

    start()
    try:
        yield uri, start, stop
    finally:
        for process in processes:
            stop_process(process)


def test_mlflow_down_mid_run_is_a_clear_error_and_the_rerun_finishes(own_mlflow, tmp_path, splits, models):
    uri, start, stop = own_mlflow
    settings = settings_for(uri, tmp_path)
    client = registry.connect(settings)
    run_round(client, settings, models["weak"], splits.test, "k1")
    champion = registry.champion_info(client, settings)
    with registry.pipeline_run(client, settings, "k2", ["b1", "b2"]):
        registry.register_model(
            client, settings, models["sound"], run_key="k2", input_example=splits.test.head(3),
            metrics={"mdape": 0.1}, training_batches=["b1", "b2"],
        )  # fmt: skip

    stop()
    with pytest.raises(registry.MlflowUnavailable, match=uri.replace(".", r"\.")):
        register_and_decide(
            client, settings, models["sound"], splits.test, run_key="k2", training_batches=["b1", "b2"],
            champion=champion,
        )  # fmt: skip
    with pytest.raises(registry.MlflowUnavailable, match="unreachable"):
        registry.connect(settings)

    start()
    client = MlflowClient(tracking_uri=uri)
    assert registry.champion_info(client, settings).version == champion.version  # nothing moved while down
    redo = run_round(client, settings, models["sound"], splits.test, "k2", ("b1", "b2"))
    assert redo.outcome == "promoted"
    assert len(versions(client, settings)) == 2
    assert all(registry.is_complete(v) for v in versions(client, settings))


def test_the_pipeline_run_records_drift_outcome_and_failure(mlflow_server, tmp_path):
    from ray_jobs.drift import DriftReport

    settings = settings_for(mlflow_server, tmp_path)
    client = registry.connect(settings)
    report = DriftReport(
        verdict="no_drift", reason="nothing moved", features=[], n_reference=10, n_current=10,
        alpha=0.01, effect_threshold=0.02, missing_threshold=0.05,
    )  # fmt: skip
    with registry.pipeline_run(client, settings, "ok-key", ["b1"]) as ok:
        registry.log_drift(report)
        registry.log_outcome("skipped", "no drift and too few new rows")
    run = client.get_run(ok.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["drift_verdict"] == "no_drift" and run.data.tags["outcome"] == "skipped"
    assert run.data.metrics["drift.detected"] == 0.0
    assert "drift_report.json" in [a.path for a in client.list_artifacts(ok.info.run_id)]

    with pytest.raises(RuntimeError, match="boom"), registry.pipeline_run(client, settings, "bad-key", ["b1"]) as bad:
        raise RuntimeError("boom")
    assert client.get_run(bad.info.run_id).info.status == "FAILED"

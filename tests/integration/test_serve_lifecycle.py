"""Model lifecycle on the running Serve app: hot swaps under load, MLflow outages, no-model replicas."""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager

import httpx
import pytest
from mlflow.tracking import MlflowClient

from ray_jobs.split import split_frame
from rayestate.localstack import BIN, deploy_serve, free_port, running, stop_process, wait_ready
from tests.support.champion import register_sample_model
from tests.support.load import LISTING, MODEL_PARTS, REQUESTS, LoadGenerator, wait_for_version
from tests.support.models import make_model, sample_listings, train_sample_model
from tests.support.serve import serve_test_config

pytestmark = pytest.mark.timeout(900)


def wait_until_every_answer_is(url: str, version: str, *, in_a_row: int = 30, timeout: float = 60.0) -> None:
    """Send the load's requests in turn until `in_a_row` consecutive answers come from `version`.

    The endpoints reach the ingress replicas and the predictors: all must have swapped.
    """
    deadline, streak = time.monotonic() + timeout, 0
    with httpx.Client(base_url=url, timeout=30) as client:
        while streak < in_a_row:
            assert time.monotonic() < deadline, f"some replicas still answer with a version other than {version}"
            path, body = REQUESTS[streak % len(REQUESTS)]
            answer = client.post(path, json=body)
            streak = streak + 1 if answer.json().get("model_version") == version else 0


def test_hot_swap_under_load_drops_nothing(serve_app_url, champion):
    client = MlflowClient(tracking_uri=champion.tracking_uri)
    start_version = wait_ready(serve_app_url)["model_version"]
    # A second version of the champion's model, registered as a pipeline run would: a model of
    # shuffled prices, so the promotion rule rejects it and only this test moves the alias to it.
    splits = split_frame(sample_listings(2500, seed=7))
    registered = register_sample_model(
        champion.tracking_uri, champion.name, make_model(splits.train, shuffled=True, seed=7), splits.test,
        run_key="hot-swap-7",
    )  # fmt: skip
    assert registered.decision == "rejected", registered
    challenger = registered.version
    try:
        with LoadGenerator(serve_app_url) as load:
            load.wait_for_answers(20)
            client.set_registered_model_alias(champion.name, "champion", challenger)
            reload = httpx.post(f"{serve_app_url}/reload", timeout=60)
            assert reload.status_code == 200 and reload.json()["model_version"] == challenger
            wait_for_version(serve_app_url, challenger)
            # /reload reached one replica of each deployment; the others follow on their next poll.
            wait_until_every_answer_is(serve_app_url, challenger)
            switched_at = time.monotonic()
            load.wait_for_answers(20)
            moved_back_at = time.monotonic()
            # Back to the original version without /reload: the replicas' alias polling must find it.
            client.set_registered_model_alias(champion.name, "champion", start_version)
            wait_for_version(serve_app_url, start_version)
            load.wait_for_answers(10)
    finally:
        client.set_registered_model_alias(champion.name, "champion", start_version)

    statuses = Counter(status for _, _, status, _ in load.results)
    assert load.errors == [] and set(statuses) == {200}, (statuses, load.errors[:3])
    versions = Counter(version for _, _, _, version in load.results)
    assert versions[start_version] > 0 and versions[challenger] > 0, versions
    # Once every replica had swapped, and until the alias moved back, only the new version answered.
    settled = [v for t, _, _, v in load.results if switched_at < t < moved_back_at]
    assert settled and set(settled) == {challenger}
    assert {path for _, path, _, _ in load.results} == {path for path, _ in REQUESTS}  # every replica kind


@contextmanager
def own_mlflow_server(tmp_path):
    """A second real MLflow server that this test may stop (the session one is shared)."""
    port = free_port()
    command = [
        str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--artifacts-destination", str(tmp_path / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    with running(command, f"{uri}/health", tmp_path / "mlflow.log") as process:
        yield uri, process


def test_mlflow_outage_keeps_the_last_good_model_and_no_model_means_not_ready(
    serve_app_url, serve_http_port, serve_state_dir, dashboard_url, champion, tmp_path
):
    from ray import serve

    dead_uri = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    with own_mlflow_server(tmp_path) as (uri, process):
        splits = split_frame(sample_listings(1500, seed=11))
        model = train_sample_model(splits.train, rounds=20)
        version = register_sample_model(uri, "outage-model", model, splits.test, run_key="outage-11").version
        extra_apps = {
            "outage": {"mlflow_tracking_uri": uri, "model_name": "outage-model"},
            "nomodel": {"mlflow_tracking_uri": dead_uri, "model_load_timeout_s": 5},
        }
        config = serve_test_config(
            champion, port=serve_http_port, state_dir=serve_state_dir, poll_s=1, extra_apps=extra_apps
        )
        for app in config["applications"][1:]:  # one replica each is enough here; spare the 2 cores
            for deployment in app["deployments"]:
                deployment["autoscaling_config"]["min_replicas"] = 1
        deploy_serve(dashboard_url, config)
        try:
            outage_url = f"{serve_app_url}/outage"
            assert wait_ready(outage_url)["model_version"] == version
            before = httpx.post(f"{outage_url}/predict", json=LISTING, timeout=60).json()

            stop_process(process)  # MLflow goes away
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # until both deployments have failed an alias poll
                ready = httpx.get(f"{outage_url}/ready", timeout=30)
                if all(ready.json()[part].get("registry_reachable") is False for part in MODEL_PARTS):
                    break
                time.sleep(1)
            assert ready.status_code == 200, ready.text
            body = ready.json()
            assert body["ready"] is True and body["registry_reachable"] is False
            assert body["model_version"] == version and "unreachable" in body["detail"]
            assert all("still serving version" in body[part]["last_error"] for part in MODEL_PARTS)
            for _ in range(5):
                after = httpx.post(f"{outage_url}/predict", json=LISTING, timeout=60)
                assert after.status_code == 200 and after.json()["price"] == pytest.approx(before["price"])
            assert httpx.post(f"{outage_url}/explain", json=LISTING, timeout=60).status_code == 200
            card = httpx.get(f"{outage_url}/model", timeout=60).json()
            assert card["registry_available"] is False and card["served"]["model_version"] == version

            # A replica that cannot load any model never becomes ready and gets no traffic.
            nomodel = httpx.get(f"{serve_app_url}/nomodel/ready", timeout=60)
            assert nomodel.status_code != 200
            # The ingress itself starts without a model, so it can say so: a fast 503, not a hang.
            assert nomodel.status_code == 503 and "no model loaded" in nomodel.json()["detail"]
            unpriced = httpx.post(f"{serve_app_url}/nomodel/predict", json=LISTING, timeout=60)
            assert unpriced.status_code == 503 and "no model loaded" in unpriced.json()["detail"], unpriced.text
            status = serve.status().applications["nomodel"]
            assert status.status != "RUNNING"
            assert status.deployments["Predictor"].status != "HEALTHY"
        finally:
            deploy_serve(dashboard_url, serve_test_config(champion, port=serve_http_port, state_dir=serve_state_dir))
    # the main app was never disturbed
    assert httpx.post(f"{serve_app_url}/predict", json=LISTING, timeout=60).status_code == 200

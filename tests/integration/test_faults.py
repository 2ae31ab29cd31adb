"""Faults, each asserting nothing is lost: killed replicas, MLflow coming back, bad data-API
answers (quarantined, raw store untouched), and the pipeline killed mid-tuning / mid-registration.

Already covered elsewhere (not repeated here): transient data-API failures and malformed payloads
(test_source.py), MLflow down mid-run for the pipeline (test_registry.py), MLflow down for serving
and hot swaps under load (test_serve_lifecycle.py).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient

from ray_jobs.quarantine import QuarantinedBatch, fetch_batch_or_quarantine, list_quarantine, read_payload
from ray_jobs.source import BatchError, DataAPIUnavailable
from ray_jobs.split import split_frame
from ray_jobs.tune import ROUND_METRIC
from rayestate import history, store
from rayestate.devstack.synthetic import generate_listings
from rayestate.localstack import REPO, MlflowServer, deploy_serve, wait_ready
from rayestate.registry import VersionRecord
from rayestate.schema import RAW_COLUMNS
from tests.support.champion import register_sample_model
from tests.support.jobs import last_json_line
from tests.support.listings import api_body, api_rows
from tests.support.load import LISTING, LoadGenerator, wait_for_version
from tests.support.models import make_model, sample_listings, train_sample_model
from tests.support.serve import serve_test_config
from tests.support.servers import STALL, FaultProxy

#: Clients of the load below: at most this many requests are in flight when a replica is killed.
CLIENTS = 6

# --- replicas killed under load ---------------------------------------------------------------


def replica_actors(app: str, deployment: str) -> list[str]:
    import ray

    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("deployment", ["Predictor"])  # the model deployment behind the ingress
def test_a_killed_replica_is_replaced_and_only_its_in_flight_requests_can_fail(serve_app_url, deployment):
    import ray

    wait_ready(serve_app_url)
    (victim,) = replica_actors("rayestate", deployment)[:1]
    with LoadGenerator(serve_app_url, clients=CLIENTS) as load:
        load.wait_for_answers(30)  # traffic is flowing before the kill
        killed_at = time.monotonic()
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)  # as if its process crashed
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            fresh = [r for r in replica_actors("rayestate", deployment) if r != victim]
            if fresh and httpx.get(f"{serve_app_url}/ready", timeout=30).status_code == 200:
                break
            time.sleep(0.5)
        recovered_at = time.monotonic()
        load.wait_for_answers(30)  # traffic after recovery must be all good
    assert fresh, f"no replacement {deployment} replica within 180 s"

    statuses = Counter(status for _, _, status, _ in load.results)
    print(f"{deployment} replica killed under load: {dict(statuses)}")  # the figure the docs quote (-rP)
    # What the scenario allows, and nothing else: the ingress resends a call whose replica died
    # (serve_app.app._answer), and only when every resend is lost too does that request get a 503.
    # So: no 500 (a 500 means a model failed on a row, which a kill does not cause), no dropped
    # connection or hang (status 0), and at most one 503 per request in flight at the kill.
    assert set(statuses) <= {200, 503}, (statuses, load.errors[:3])
    assert statuses[503] <= CLIENTS, statuses
    after = [status for t, _, status, _ in load.results if t > recovered_at]
    assert after and set(after) == {200}, Counter(after)
    before = [status for t, _, status, _ in load.results if t < killed_at]
    assert before and set(before) == {200}


# --- MLflow goes away and comes back -----------------------------------------------------------


def wait_ready_field(url: str, field: str, value, timeout: float = 90.0) -> dict:
    """Poll the app's /ready until ``field`` is ``value`` (skipping the proxy's plain "not deployed yet")."""
    deadline, body = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/ready", timeout=30)
            if response.headers.get("content-type") == "application/json":
                body = response.json()
                if body.get(field) == value:
                    return body
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url}/ready never had {field}={value!r}: {body}")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_serving_rides_out_an_mlflow_outage_and_follows_the_registry_again_after(
    serve_app_url, serve_http_port, serve_state_dir, dashboard_url, champion, tmp_path
):
    mlflow = MlflowServer(tmp_path)  # stop() and start() keep its port and database
    mlflow.start()
    config_with = serve_test_config(
        champion, port=serve_http_port, state_dir=serve_state_dir, poll_s=1,
        extra_apps={"outage2": {"mlflow_tracking_uri": mlflow.uri, "model_name": "outage2-model"}},
    )  # fmt: skip
    splits = split_frame(sample_listings(3000, seed=12))  # ~290 test rows: enough for the rule to tell them apart
    try:
        weak = make_model(splits.train, rounds=3)  # a first model the second one clearly beats
        first = register_sample_model(mlflow.uri, "outage2-model", weak, splits.test, run_key="outage2-1").version
        deploy_serve(dashboard_url, config_with)
        url = f"{serve_app_url}/outage2"
        assert wait_ready(url)["model_version"] == first

        with LoadGenerator(url, clients=3) as load:
            mlflow.stop()
            wait_ready_field(url, "registry_reachable", False)
            load.wait_for_answers(30)  # answered while the registry is down (alias polls keep failing)
            mlflow.start()  # same port, same database: the registry comes back
            wait_ready_field(url, "registry_reachable", True)
            sound = train_sample_model(splits.train, rounds=60, seed=3)
            second = register_sample_model(mlflow.uri, "outage2-model", sound, splits.test, run_key="outage2-2")
            # promoted, so the alias moves: replicas must pick it up by polling, as before the outage
            assert second.decision == "promoted", second
            wait_for_version(url, second.version, timeout=120)
            load.wait_for_answers(10)
        statuses = Counter(status for _, _, status, _ in load.results)
        assert set(statuses) == {200} and not load.errors, (statuses, load.errors[:3])
        versions = Counter(version for _, _, _, version in load.results)
        assert versions[first] > 0 and versions[second.version] > 0
    finally:
        deploy_serve(dashboard_url, serve_test_config(champion, port=serve_http_port, state_dir=serve_state_dir))
        mlflow.stop()
    assert httpx.post(f"{serve_app_url}/predict", json=LISTING, timeout=60).status_code == 200


@pytest.mark.timeout(300)
def test_an_ingress_replica_without_a_model_hands_its_listings_to_the_predictors(
    serve_app_url, serve_http_port, serve_state_dir, dashboard_url, champion, tmp_path
):
    """The registry is down when the app starts: the ingress replicas come up without a model and,
    told to poll only hourly, stay so; the predictors load once it is back. Listings must be answered
    (through the predictors), and /reload brings the ingress its own model."""
    mlflow = MlflowServer(tmp_path)
    mlflow.start()
    splits = split_frame(sample_listings(1500, seed=13))
    config = serve_test_config(
        champion, port=serve_http_port, state_dir=serve_state_dir,
        extra_apps={"handoff": {"mlflow_tracking_uri": mlflow.uri, "model_name": "handoff-model",
                                "reload_poll_s": 3600, "model_load_timeout_s": 240}},
    )  # fmt: skip
    (ingress,) = [d for d in config["applications"][-1]["deployments"] if d["name"] == "Api"]
    ingress["user_config"]["reload_poll_s"] = 3600
    url = f"{serve_app_url}/handoff"
    try:
        version = register_sample_model(
            mlflow.uri, "handoff-model", make_model(splits.train, rounds=20), splits.test, run_key="handoff-1"
        ).version
        mlflow.stop()
        deploy_serve(dashboard_url, config)
        down = wait_ready_field(url, "ready", False, timeout=120)  # the ingress is up, nothing has a model
        assert "no model loaded" in down["detail"] and down["api"]["registry_reachable"] is False
        mlflow.start()  # the predictors' constructors load it; the ingress does not look for an hour

        body = wait_ready(url, timeout=200)
        assert body["api"]["loaded"] is False and body["predictor"]["model_version"] == version
        assert "predictors answer for it" in body["detail"] and body["model_version"] == version
        for path in ("/predict", "/explain"):
            answer = httpx.post(f"{url}{path}", json=LISTING, timeout=60)
            assert answer.status_code == 200, (path, answer.text)
            assert answer.json()["model_version"] == version and answer.json()["price"] > 0
        # A batch of three chunks: with no model of its own, the ingress hands every chunk over.
        batch = httpx.post(f"{url}/predict/batch", json={"listings": [LISTING] * 1_200}, timeout=60)
        assert batch.status_code == 200, batch.text
        prices = batch.json()["prices"]
        assert batch.json()["model_version"] == version and len(prices) == 1_200 and len(set(prices)) == 1

        deadline = time.monotonic() + 60
        while True:  # each POST /reload reaches one ingress replica: until every one has loaded it
            reloaded = httpx.post(f"{url}/reload", timeout=60).json()
            assert reloaded["api"]["loaded"] is True and reloaded["model_version"] == version
            details = {httpx.get(f"{url}/ready", timeout=30).json()["detail"] for _ in range(6)}
            if details == {"ready"}:
                break
            assert time.monotonic() < deadline, details
    finally:
        deploy_serve(dashboard_url, serve_test_config(champion, port=serve_http_port, state_dir=serve_state_dir))
        mlflow.stop()


# --- data API faults: transient retried, malformed quarantined, raw store untouched ---------------

OLD_COLUMNS = [c for c in RAW_COLUMNS if c not in ("brokered_by", "street")]  # the 10-column dataset
NO_STATE = [c for c in RAW_COLUMNS if c != "state"]  # a column pricing needs


def raw_store_files(settings) -> list[str]:
    root = Path(store.open_store(settings).root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "quarantine" not in p.parts)


def api_settings(settings, url: str):
    """A generous timeout (a normal answer never reaches it); a stall lasts exactly that long."""
    return settings.model_copy(
        update={"data_api_url": url, "http_backoff_s": 0.01, "http_timeout_s": 5, "http_retries": 3}
    )


MALFORMED = {
    "no state column": (api_body(api_rows(20, columns=NO_STATE)), "missing column.*state"),
    "wrong columns": (api_body([{**r, "sqft": r["house_size"]} for r in api_rows(5)]), "unexpected column.*sqft"),
    "truncated JSON": (api_body(api_rows(5))[:-40], "not one valid JSON object"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_batch_is_quarantined_and_never_reaches_the_raw_store(settings, case):
    payload, message = MALFORMED[case]
    before = raw_store_files(settings)
    with FaultProxy(None, [(200, payload)] * 2) as proxy:
        config = api_settings(settings, proxy.url)
        with pytest.raises(QuarantinedBatch, match=message) as first:
            fetch_batch_or_quarantine(config)
        with pytest.raises(QuarantinedBatch) as second:  # the same answer again: the same entry
            fetch_batch_or_quarantine(config)
    assert proxy.requests == 2  # not retried: the same request would get the same answer
    (entry,) = list_quarantine(settings)
    assert entry.entry_id == first.value.entry_id == second.value.entry_id
    assert read_payload(settings, entry.entry_id) == payload  # byte for byte what the API sent
    assert entry.status_code == 200 and "/data?group_number=1" in entry.source
    assert message.split(".*")[0] in entry.reason
    assert raw_store_files(settings) == before
    assert store.list_records(settings, "raw") == []


@pytest.mark.timeout(120)
def test_transient_faults_are_retried_and_quarantine_nothing(settings, data_api_factory):
    script = [500, STALL, "drop"]  # a 500, a stall past the client's timeout, a dropped connection
    with data_api_factory() as server, FaultProxy(server.url, script) as proxy:
        batch = fetch_batch_or_quarantine(api_settings(settings, proxy.url))
    assert batch is not None and batch.rows > 0 and batch.batch_number == 1
    assert proxy.arrivals == [*script, "pass"]
    assert list_quarantine(settings) == []


@pytest.mark.timeout(60)
def test_an_api_that_stays_down_is_unavailable_not_quarantined(settings):
    with FaultProxy(None, [500] * 10) as proxy, pytest.raises(DataAPIUnavailable, match="4 attempt"):
        fetch_batch_or_quarantine(api_settings(settings, proxy.url))
    assert list_quarantine(settings) == [] and store.list_records(settings, "raw") == []


@pytest.mark.timeout(120)
def test_the_pipeline_stops_on_a_malformed_batch_with_the_raw_store_unchanged(settings, data_api_factory):
    from ray_jobs.pipeline import ingest_new_batches

    with data_api_factory(batch_rows=500) as server:
        good = api_settings(settings, server.url)
        assert len(ingest_new_batches(good, 1)) == 1
        before = raw_store_files(settings)
        malformed = api_body(api_rows(20, columns=NO_STATE), batch_number=2)
        with FaultProxy(server.url, [(200, malformed)]) as proxy, pytest.raises(BatchError, match="state"):
            ingest_new_batches(api_settings(settings, proxy.url), 1)
        assert raw_store_files(settings) == before
        assert [r.batch_number for r in store.list_records(settings, "raw")] == [1]
        (entry,) = list_quarantine(settings)  # the pipeline kept what the API sent, and why
        assert read_payload(settings, entry.entry_id) == malformed and "state" in entry.reason
        with FaultProxy(server.url, []) as proxy:  # the API is fixed: the next batch flows again
            assert len(ingest_new_batches(api_settings(settings, proxy.url), 1)) == 1
        old_format = api_body(api_rows(20, columns=OLD_COLUMNS), batch_number=9)  # the dataset's older version
        with FaultProxy(server.url, [(200, old_format)]) as proxy:
            (record,) = ingest_new_batches(api_settings(settings, proxy.url), 1)
        assert record.rows == 20 and "brokered_by, street" in record.notes[0]  # ingested, IDs null, noted
        assert store.get_record(settings, "clean", record.batch_id).notes == record.notes


# --- the pipeline job killed mid-tuning and mid-registration ----------------------------------


def pipeline_env(settings, ray_cluster, source: Path) -> dict:
    """The pipeline's configuration, as a Ray job would get it, with tiny budgets."""
    return {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAYESTATE_RAY_ADDRESS": ray_cluster.address_info["gcs_address"],
        "RAYESTATE_STATE_DIR": str(settings.state_dir),
        "RAYESTATE_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "RAYESTATE_MLFLOW_EXPERIMENT": settings.mlflow_experiment,
        "RAYESTATE_MODEL_NAME": settings.model_name,
        "RAYESTATE_SOURCE_PATH": str(source),
        "RAYESTATE_FILE_BATCH_ROWS": "3000",
        "RAYESTATE_RETRAIN_MIN_NEW_ROWS": "1",
        "RAYESTATE_TUNE_NUM_SAMPLES": "2",
        "RAYESTATE_TUNE_TIME_BUDGET_S": "40",
        "RAYESTATE_TUNE_MAX_CONCURRENT": "1",
        "RAYESTATE_BOOTSTRAP_SAMPLES": "100",
    }


def run_pipeline_process(env: dict, log: Path, *, kill_when: Callable[[str], bool] | None = None):
    """Run `python -m ray_jobs.pipeline`; SIGKILL its process group as soon as ``kill_when`` holds.

    ``kill_when(output so far)`` is checked on every output line (evidence printed just before the
    step to interrupt) and twice a second between lines (evidence that lives elsewhere, e.g. in
    MLflow), so the kill follows the evidence, not a delay. Returns (exit code, output, killed).
    """
    command = [sys.executable, "-u", "-m", "ray_jobs.pipeline"]
    process = subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in process.stdout:
            lines.put(line)
        lines.put(None)  # the process closed its output: it is done

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    output, killed = [], False
    try:
        while True:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                line = ""
            if line is None:
                break
            output.append(line)
            if kill_when is not None and kill_when("".join(output)):
                os.killpg(process.pid, signal.SIGKILL)  # only the group this test started
                killed = True
                break
        process.wait(timeout=600)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    reader.join(timeout=30)
    text = "".join(output)
    log.write_text(text)
    return process.returncode, text, killed


def tuning_has_started(client: MlflowClient, experiment: str) -> Callable[[str], bool]:
    """True once a Tune trial's nested MLflow run has logged a round's validation error: mid-search."""

    def check(_output: str) -> bool:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return False
        runs = client.search_runs([found.experiment_id])
        return any("tune_trial_id" in run.data.tags and ROUND_METRIC in run.data.metrics for run in runs)

    return check


def printed(text: str) -> Callable[[str], bool]:
    return lambda output: text in output


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_pipeline_killed_mid_tuning_then_mid_registration_finishes_once(ray_cluster, mlflow_server, settings, tmp_path):
    settings = settings.model_copy(
        update={"mlflow_tracking_uri": mlflow_server, "model_name": f"kill-{tmp_path.name}"[:60]}
    )
    source = tmp_path / "listings.parquet"
    generate_listings(3000, seed=5).to_parquet(source)
    env = pipeline_env(settings, ray_cluster, source)
    client = MlflowClient(tracking_uri=mlflow_server)

    def versions() -> list:
        return client.search_model_versions(f"name = '{settings.model_name}'")

    mid_search = tuning_has_started(client, settings.mlflow_experiment)
    code, out, killed = run_pipeline_process(env, tmp_path / "run1.log", kill_when=mid_search)
    assert killed, f"run 1 finished before tuning could be interrupted (exit {code}):\n{out[-3000:]}"
    assert "[pipeline] retraining" in out and "[train] test MdAPE" not in out  # killed inside the search
    assert versions() == [] and history.pipeline_runs(settings) == []

    code, out, killed = run_pipeline_process(env, tmp_path / "run2.log", kill_when=printed("[train] test MdAPE"))
    assert killed, f"run 2 finished before registration could be interrupted (exit {code}):\n{out[-3000:]}"
    assert len(versions()) <= 1 and history.pipeline_runs(settings) == []  # at most one, possibly half-registered

    code, out, _ = run_pipeline_process(env, tmp_path / "run3.log")
    assert code == 0, out[-3000:]
    result = last_json_line(out)
    assert result["outcome"] == "first_model", result
    (version,) = versions()  # one version for the run key, however many attempts
    assert VersionRecord.of(version).complete and version.version == result["model_version"]
    aliases = client.get_registered_model(settings.model_name).aliases
    assert aliases.get("champion") == version.version
    assert [entry["run_key"] for entry in history.pipeline_runs(settings)] == [result["run_key"]]
    assert len(store.list_records(settings, "raw")) == 1  # the batch was fetched once, not per attempt

    code, out, _ = run_pipeline_process(env, tmp_path / "run4.log")  # nothing new: nothing changes
    assert code == 0 and last_json_line(out)["outcome"] == "no_new_data"
    assert len(versions()) == 1


# --- overload: shed with 503s, never hang ------------------------------------------------------


@pytest.mark.timeout(600)
def test_overload_is_shed_with_json_503s_and_nothing_hangs(
    serve_app_url, serve_http_port, serve_state_dir, dashboard_url, champion
):
    """A predictor that takes 1 request and queues 1 more: a burst of 24 batches must be answered, the
    excess with 503 + a JSON detail (Serve's backpressure, max_queued_requests), never a 500 or a timeout."""
    import concurrent.futures

    config = serve_test_config(champion, port=serve_http_port, state_dir=serve_state_dir, extra_apps={"tiny": {}})
    tiny = config["applications"][-1]
    for deployment in tiny["deployments"]:
        if deployment["name"] == "Predictor":
            deployment.update(max_ongoing_requests=1, max_queued_requests=1)
            deployment["autoscaling_config"].update(min_replicas=1, max_replicas=1, target_ongoing_requests=1)
            deployment["user_config"]["max_batch_size"] = 1
    try:
        deploy_serve(dashboard_url, config)
        url = f"{serve_app_url}/tiny"
        wait_ready(url)

        batch = {"listings": [LISTING] * 1000}  # one chunk: one predictor call of a few ms each

        def price(_):
            response = httpx.post(f"{url}/predict/batch", json=batch, timeout=120)
            return response.status_code, response.headers.get("content-type", ""), response.text

        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(price, range(24)))
    finally:
        deploy_serve(dashboard_url, serve_test_config(champion, port=serve_http_port, state_dir=serve_state_dir))
    statuses = Counter(status for status, _, _ in answers)
    assert set(statuses) <= {200, 503} and statuses[503] > 0 and statuses[200] >= 2, statuses
    for status, content_type, text in answers:
        if status == 503:
            assert content_type.startswith("application/json") and json.loads(text)["detail"], text[:300]

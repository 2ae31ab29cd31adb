"""The data-parallel training path on a real two-node Ray cluster, with small data.

A head and a second node joined with ``ray start --address`` (one CPU and a capped object store
each), the pipeline submitted with ``ray job submit`` and the data-parallel path forced on
(``RAYESTATE_DATA_PARALLEL_MIN_ROWS=1``): ingest over HTTP, Ray Data split and samples, the
transform fitted from Ray Data sums, the final fit by Ray Train's XGBoostTrainer on two workers,
one per node. The registered model is then checked against a one-process fit of the same rows
with the same parameters (ray_jobs.fit.refit).
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ray_jobs.evaluate import evaluate
from ray_jobs.fit import refit
from ray_jobs.split import split_frame
from rayestate import localstack, store
from rayestate.model_io import load_model_version
from rayestate.settings import Settings
from tests.support.jobs import last_json_line

ROWS = 16_000
#: Same rows, same parameters: what two processes' sketches and the masked copies per block may move.
MDAPE_TOLERANCE = 0.02


@pytest.fixture
def two_nodes(tmp_path):
    cluster = localstack.LocalCluster(
        tmp_path / "cluster", head_cpus=1, worker_cpus=(1,), object_store_bytes=300 * 2**20
    )
    with cluster:
        yield cluster


def _train_worker_nodes(cluster) -> set[str]:
    """The nodes Ray Train's worker actors ran on (the state API keeps finished actors)."""
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    listed = subprocess.run(
        [str(localstack.BIN / "ray"), "list", "actors", "--address", cluster.dashboard_url, "--format", "json",
         "--detail", "--limit", "1000"],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    return {a["node_id"] for a in json.loads(listed.stdout) if a.get("class_name") == "RayTrainWorker"}


def test_pipeline_trains_data_parallel_on_two_nodes(two_nodes, data_api_factory, mlflow_server, tmp_path):
    assert two_nodes.alive_nodes() == 2
    settings = Settings(
        state_dir=tmp_path / "state", mlflow_tracking_uri=mlflow_server, mlflow_experiment=f"dp-{tmp_path.name}",
        model_name=f"dp-{tmp_path.name}", data_parallel_min_rows=1, train_workers=2, tune_sample_rows=5_000,
        tune_num_samples=2, tune_time_budget_s=60, bootstrap_samples=200, comparables_rows=2_000, bag_size=1,
    )  # fmt: skip
    with data_api_factory(mode="random", synthetic_rows=ROWS, batch_rows=ROWS // 2, random_batches=2) as api:
        job_env = {**localstack.settings_env(settings), "RAYESTATE_DATA_API_URL": api.url}
        job = subprocess.run(
            [str(localstack.BIN / "ray"), "job", "submit", "--address", two_nodes.dashboard_url,
             "--working-dir", str(localstack.REPO), "--runtime-env-json", json.dumps({"env_vars": job_env}),
             "--", "python", "-m", "ray_jobs.pipeline", "--max-batches", "2"],
            capture_output=True, text=True, env={**os.environ, "RAY_AUTH_MODE": "token"}, cwd=localstack.REPO,
            timeout=1800,
        )  # fmt: skip
    assert job.returncode == 0, job.stdout[-5000:] + job.stderr[-3000:]
    summary = last_json_line(job.stdout)
    assert summary["outcome"] == "first_model", summary
    assert set(summary["stages"]) >= {"ingest", "clean", "split", "tune", "fit", "evaluate", "register"}

    assert len(_train_worker_nodes(two_nodes)) == 2, "the two Ray Train workers ran on the two nodes"
    model = load_model_version(MlflowClient(mlflow_server), settings.model_name, summary["model_version"]).model
    assert model.meta["data_parallel"]["workers"] == 2
    assert model.interval is not None and model.comparables is not None

    # The same rows and parameters fitted in one process: the same quality, within noise.
    rows = split_frame(store.read_frame(settings, "clean"))
    assert model.meta["training_rows"] == len(rows.train) + len(rows.valid)
    one_process = refit(
        pd.concat([rows.train, rows.valid]), model.meta["params"], model.boosters[0].num_boosted_rounds(),
        seed=settings.seed, bag_size=len(model.boosters), comparables_rows=0,
    )  # fmt: skip
    data_parallel_mdape = evaluate(model, rows.test)["mdape"]
    one_process_mdape = evaluate(one_process, rows.test)["mdape"]
    print(f"MdAPE on the test split: data-parallel {data_parallel_mdape:.4f}, one process {one_process_mdape:.4f}")
    assert np.isfinite(data_parallel_mdape)
    assert abs(data_parallel_mdape - one_process_mdape) <= MDAPE_TOLERANCE, (data_parallel_mdape, one_process_mdape)

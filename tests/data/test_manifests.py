"""The RayJob manifest's entrypoint, run for real on the local Ray cluster through `ray job submit`,
on the real API batch (the offline manifest checks are in unit/test_manifests.py)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rayestate.localstack import REPO

pytestmark = pytest.mark.integration  # ray job submit on the local cluster


@pytest.mark.timeout(900)
def test_rayjob_entrypoint_runs_through_ray_job_submit(dashboard_url, mlflow_server, api_batch, tmp_path):
    """`ray job submit` the exact entrypoint string of the RayJob manifest, with tiny budgets."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    from rayestate.pipeline_jobs import WORKING_DIR_EXCLUDES

    entrypoint = yaml.safe_load((REPO / "kuberay/ray-job.pipeline.yaml").read_text())["spec"]["entrypoint"]
    env = {
        # what the ConfigMap/Secrets provide in the cluster, pointed at the local stack
        "RAYESTATE_MLFLOW_TRACKING_URI": mlflow_server,
        "RAYESTATE_STATE_DIR": str(tmp_path / "state"),
        "RAYESTATE_STORE_URI": str(tmp_path / "store"),
        "RAYESTATE_SOURCE_PATH": str(api_batch),
        "RAYESTATE_MLFLOW_EXPERIMENT": f"k8s-entrypoint-{tmp_path.name}",
        # tiny budgets
        "RAYESTATE_MAX_BATCHES_PER_RUN": "1",
        "RAYESTATE_RETRAIN_MIN_NEW_ROWS": "1",
        "RAYESTATE_TUNE_NUM_SAMPLES": "1",
        "RAYESTATE_TUNE_TIME_BUDGET_S": "30",
        "RAYESTATE_TUNE_MAX_CONCURRENT": "1",
        "RAYESTATE_BOOTSTRAP_SAMPLES": "100",
        "RAY_AUTH_MODE": "token",
        # the job's shell must find this venv's python (in the image it is on PATH already)
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    runtime_env = {"working_dir": str(REPO), "excludes": WORKING_DIR_EXCLUDES, "env_vars": env}
    submission_id = f"k8s-entrypoint-{tmp_path.name}".replace("_", "-")
    command = [
        str(Path(sys.executable).parent / "ray"), "job", "submit",
        f"--address={dashboard_url}", f"--submission-id={submission_id}",
        f"--runtime-env-json={json.dumps(runtime_env)}",
        "--", *shlex.split(entrypoint),
    ]  # fmt: skip
    for _ in range(20):  # right after heavy Serve tests Ray's job agent may not take submissions yet
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=840, env={**os.environ, "RAY_AUTH_MODE": "token"}
        )
        if "No available agent to submit job" not in result.stderr:  # Ray's own advice: try again later
            break
        time.sleep(3)
    output = f"exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    jobs = {job.submission_id: job.status for job in JobSubmissionClient(dashboard_url).list_jobs()}
    assert jobs.get(submission_id) == JobStatus.SUCCEEDED, output
    assert result.returncode == 0

"""Submitting the training pipeline (``python -m ray_jobs.pipeline``) as Ray Jobs, once or on a schedule.

`rayestate up` submits one run; `rayestate schedule` submits one per tick and skips a
tick while a run is still going, so runs never overlap or queue up twice.
"""

from __future__ import annotations

import os
import shlex
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from tenacity import retry, retry_if_exception, stop_after_delay, wait_fixed

from rayestate.localstack import settings_env
from rayestate.settings import Settings

if TYPE_CHECKING:
    from ray.job_submission import JobStatus, JobSubmissionClient

PIPELINE_ENTRYPOINT = "python -m ray_jobs.pipeline"
JOB_KIND = "rayestate-pipeline"
#: What never goes up with the working dir: the venv, caches, local state.
WORKING_DIR_EXCLUDES = [
    ".venv", ".git", "**/__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis", ".state", "*.egg-info",
]  # fmt: skip


def job_client(settings: Settings) -> JobSubmissionClient:
    """Job API client; the Ray token is read from RAY_AUTH_TOKEN or ~/.ray/auth_token."""
    # Ray reads the mode when it is first imported, so set it before the import below.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(settings.ray_dashboard_url)


def running_pipeline_jobs(client: JobSubmissionClient) -> list[str]:
    return [
        job.submission_id
        for job in client.list_jobs()
        if (job.metadata or {}).get("kind") == JOB_KIND and not job.status.is_terminal()
    ]


def _agent_not_ready(exc: BaseException) -> bool:
    # Right after `ray start` the job agent may not be up yet; Ray says to try again later.
    return isinstance(exc, RuntimeError) and "No available agent" in str(exc)


@retry(retry=retry_if_exception(_agent_not_ready), wait=wait_fixed(3), stop=stop_after_delay(180), reraise=True)
def submit_pipeline(
    settings: Settings, client: JobSubmissionClient, *, extra_args: list[str] = (), working_dir: str = "."
) -> str:
    """Submit one pipeline run; the job sees the same RAYESTATE_* settings as this process."""
    entrypoint = " ".join([PIPELINE_ENTRYPOINT, *map(shlex.quote, extra_args)])
    return client.submit_job(
        entrypoint=entrypoint,
        runtime_env={
            "working_dir": working_dir,
            "excludes": WORKING_DIR_EXCLUDES,
            "env_vars": {"RAY_AUTH_MODE": "token", **settings_env(settings)},
        },
        metadata={"kind": JOB_KIND},
    )


def wait_for_job(
    client: JobSubmissionClient, submission_id: str, *, echo: bool = True, timeout: float = 3600
) -> JobStatus:
    """Wait for a job to finish, streaming its logs so long steps show progress."""
    deadline = time.monotonic() + timeout
    printed = 0
    while True:
        status = client.get_job_status(submission_id)
        if echo:
            logs = client.get_job_logs(submission_id)
            print(logs[printed:], end="", flush=True)
            printed = len(logs)
        if status.is_terminal():
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {submission_id} still {status} after {timeout:.0f}s")
        time.sleep(2)


def next_tick(now: datetime, every: timedelta | None, cron: str | None) -> datetime:
    """When the scheduler should next submit: a fixed interval or a cron expression."""
    if cron:
        from croniter import croniter

        return croniter(cron, now).get_next(datetime)
    assert every is not None
    return now + every


def parse_every(text: str) -> timedelta:
    """'90s', '10m', '2h', '1d' -> timedelta; a clear error otherwise."""
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    text = text.strip().lower()
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit() or int(text[:-1]) <= 0:
        raise ValueError(f"--every {text!r}: use a positive whole number with s, m, h or d (e.g. 10m)")
    return timedelta(**{units[text[-1]]: int(text[:-1])})


def schedule_loop(
    settings: Settings, *, every: timedelta | None, cron: str | None, extra_args: list[str] = (), max_ticks: int = 0
) -> list[str]:
    """Submit the pipeline on schedule; returns what each tick did ('submitted <id>' / 'skipped ...')."""
    client = job_client(settings)
    outcomes: list[str] = []
    tick = datetime.now()
    while not max_ticks or len(outcomes) < max_ticks:
        running = running_pipeline_jobs(client)
        if running:
            outcome = f"skipped: pipeline run {running[0]} still running"
        else:
            outcome = f"submitted {submit_pipeline(settings, client, extra_args=extra_args)}"
        outcomes.append(outcome)
        print(f"[{datetime.now():%Y-%m-%d %H:%M:%S}] {outcome}", flush=True)
        tick = next_tick(max(tick, datetime.now()), every, cron)
        if max_ticks and len(outcomes) >= max_ticks:
            break
        time.sleep(max(0.0, (tick - datetime.now()).total_seconds()))
    return outcomes

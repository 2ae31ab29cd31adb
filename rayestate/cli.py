"""`rayestate` command line: up, down, status, data-api, schedule.

Every subcommand builds one Settings object (env vars + flags) and passes it on.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import httpx
from croniter import croniter
from pydantic import ValidationError

from rayestate import localstack, pipeline_jobs, services
from rayestate.settings import Settings, load_settings

UP_PIPELINE_ARGS = ["--tune-samples", "6", "--tune-time-budget", "150"]


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(state_dir=getattr(args, "state_dir", None))


# --- up / down / status ---------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    settings = _settings(args)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    localstack.prometheus_binary()  # before anything starts: say which package is missing
    localstack.ensure_ray_token()
    env = localstack.ray_env(settings)
    record = services.load_record(settings)
    started = record.setdefault("started", {})

    for service in services.services(settings):
        pid = services.start_service(settings, service, env)
        if pid:
            started[service.name] = pid
            services.save_record(settings, record)

    champion = _champion_version(settings)
    if args.no_pipeline:
        services.say("pipeline: skipped (--no-pipeline)")
    elif champion:
        services.say(f"pipeline: a champion is already registered (version {champion}); not re-run")
    else:
        services.say("pipeline: submitting one run to the local cluster (ray job); this takes a few minutes")
        client = pipeline_jobs.job_client(settings)
        submission = pipeline_jobs.submit_pipeline(
            settings, client, extra_args=UP_PIPELINE_ARGS, working_dir=str(localstack.REPO)
        )
        status = pipeline_jobs.wait_for_job(client, submission)
        if status.value != "SUCCEEDED":
            services.say(f"pipeline: run {submission} ended {status.value}; see `ray job logs {submission}`")
            return 1

    if not args.no_serve:
        ready = services.deploy_serve(settings)
        services.say(f"serve: ready at {settings.api_url} (model {ready['model_version']} @ {ready['model_alias']})")
        started["serve"] = 0
        services.save_record(settings, record)
        ui = services.ui_service(settings)
        pid = services.start_service(settings, ui, env)
        if pid:
            started["ui"] = pid
            services.save_record(settings, record)
    _print_urls(settings, env)
    return 0


def _champion_version(settings: Settings) -> str | None:
    # Imported here: mlflow takes seconds to import and only `up` needs the registry.
    from rayestate import registry

    champion = registry.champion(registry.connect(settings), settings)
    return champion.version if champion else None


def _print_urls(settings: Settings, env: dict[str, str]) -> None:
    """The stack's URLs; ``env`` is Ray's (ray_env): HAProxy's stats port is whatever it set."""
    print(
        "\nRay Estate is up:\n"
        f"  Ray dashboard    {settings.ray_dashboard_url}   (token: ~/.ray/auth_token)\n"
        f"  Prometheus       http://{settings.bind_host}:{settings.prometheus_port}   (Ray's metrics: ray_rayestate_*)\n"
        f"  MLflow           {settings.mlflow_tracking_uri}\n"
        f"  Data API         {settings.data_api_url}/docs\n"
        f"  Predict API      {settings.api_url}/docs\n"
        f"  UI               http://{settings.bind_host}:{settings.ui_port}\n"
        + (
            f"  HAProxy stats    http://{settings.bind_host}:{env['RAY_SERVE_HAPROXY_STATS_PORT']}/stats\n"
            if settings.serve_ingress == "haproxy"
            else ""
        )
        + f"  state            {settings.state_dir}\n"
        "Stop it with `make down`.",
        flush=True,
    )


def cmd_down(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not services.stop_recorded(settings):
        services.say("nothing that `make up` started is running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    started = services.load_record(settings).get("started", {})
    rows = [*services.services(settings), services.ui_service(settings)]
    for service in rows:
        state = "running" if service.healthy() else "stopped"
        owner = " (started by make up)" if service.name in started else ""
        print(f"{service.name:9} {state:8} {service.url}{owner}")
    try:
        ready = httpx.get(f"{settings.api_url}/ready", timeout=2)
        print(
            f"{'serve':9} {'ready' if ready.status_code == 200 else 'not-ready':8} {settings.api_url} {ready.text[:120]}"
        )
    except httpx.HTTPError:
        print(f"{'serve':9} {'stopped':8} {settings.api_url}")
    return 0


# --- data API / schedule --------------------------------------------------------------


def cmd_data_api(args: argparse.Namespace) -> int:
    # Imported here: the stand-in data API (and its synthetic market) is only needed by this command.
    from rayestate.devstack.data_api import run_data_api

    settings = _settings(args)
    run_data_api(
        settings, dataset_path=args.dataset, port=args.port, host=args.host, mode=args.mode,
        random_batches=args.batches,
    )  # fmt: skip
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    settings = _settings(args)
    every = pipeline_jobs.parse_every(args.every) if args.every else None
    if args.cron and not croniter.is_valid(args.cron):
        raise ValueError(f"--cron {args.cron!r} is not a valid cron expression")
    pipeline_jobs.schedule_loop(
        settings, every=every, cron=args.cron, extra_args=args.pipeline_args, max_ticks=args.max_ticks
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rayestate", description="Ray Estate local stack and tools")
    parser.add_argument("--state-dir", type=Path, help="state directory (default ~/.rayestate)")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the local stack and print its URLs")
    up.add_argument("--no-pipeline", action="store_true", help="do not submit the first pipeline run")
    up.add_argument("--no-serve", action="store_true", help="do not deploy Serve and the UI")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop what `up` started").set_defaults(func=cmd_down)
    sub.add_parser("status", help="show what runs").set_defaults(func=cmd_status)

    data_api = sub.add_parser("data-api", help="serve the course-compatible data API")
    data_api.add_argument("--dataset", type=Path, help="CSV/Parquet with the realtor columns (default: synthetic)")
    data_api.add_argument("--host", default="127.0.0.1")
    data_api.add_argument("--port", type=int, default=8081)
    data_api.add_argument("--mode", choices=["course", "random"], default="course")
    data_api.add_argument(
        "--batches", type=int, default=8, help="random mode: how many batches to serve (8; the scale benchmark "
        "serves as many as a resampled dataset needs)",
    )  # fmt: skip
    data_api.set_defaults(func=cmd_data_api)

    schedule = sub.add_parser("schedule", help="submit the pipeline on a schedule, one run at a time")
    when = schedule.add_mutually_exclusive_group(required=True)
    when.add_argument("--every", help="interval such as 10m, 1h")
    when.add_argument("--cron", help="cron expression such as '*/10 * * * *'")
    schedule.add_argument("--max-ticks", type=int, default=0, help="stop after N ticks (0 = forever)")
    schedule.add_argument("pipeline_args", nargs=argparse.REMAINDER, help="arguments after -- go to the pipeline")
    schedule.set_defaults(func=cmd_schedule)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Token auth stays on: Ray reads this once, before anything imports it.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    args = build_parser().parse_args(argv)
    if getattr(args, "pipeline_args", None) and args.pipeline_args[0] == "--":
        args.pipeline_args = args.pipeline_args[1:]
    try:
        return args.func(args)
    except (ValidationError, ValueError, RuntimeError) as exc:
        print(f"rayestate {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

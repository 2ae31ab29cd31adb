"""Drift of live traffic (the inference log) against the champion's training data.

    python -m ray_jobs.live_drift --reference champion --current inference-log [--since 24h]

The reference is the clean batches the serving champion was trained on (recorded on its model
version); the current side is what the Serve app logged, optionally only the last ``--since``.
The report also carries the attribution drift (ray_jobs.attribution): what drives the champion's
prices on its held-out test rows against on the live rows, per explanation group.
The report is the same test as the pipeline's batch drift check and is saved with the others
(``<store>/drift/live-<UTC time>.json``), so the UI and /model show it. ``price`` in the log is
the predicted price, so the price check there measures prediction drift.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from ray_jobs.attribution import attribution_drift
from ray_jobs.drift import drift_report, save_drift_report
from ray_jobs.split import split_frame
from rayestate import registry, store
from rayestate.inference_log import read_inference_log
from rayestate.model_io import load_model_version
from rayestate.schema import RAW_COLUMNS
from rayestate.settings import Settings, load_settings

_DURATION = re.compile(r"^(\d+)([smhd])$")


def parse_since(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"--since {text!r}: expected a duration such as 30m, 24h or 7d")
    return timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match[2]]: int(match[1])})


def live_drift_report(settings: Settings, *, since: timedelta | None = None, attribution: bool = True):
    """(report, report id): the inference log (last ``since``) vs the champion's training batches.

    With ``attribution``, the report also compares what drives the champion's prices on its held-out
    test rows and on the live rows (ray_jobs.attribution).
    """
    client = registry.connect(settings)
    champion = registry.champion(client, settings)
    if champion is None:
        raise ValueError(f"model {settings.model_name!r} has no {settings.model_alias!r} version to compare with")
    if not champion.training_batches:
        raise ValueError(f"champion version {champion.version} records no training batches")
    reference = store.read_frame(settings, "clean", champion.training_batches)
    current = read_inference_log(settings, since=datetime.now(UTC) - since if since else None)
    if current.empty:
        window = f" in the last {since}" if since else ""
        raise ValueError(f"the inference log has no rows{window}: nothing to compare")
    report = drift_report(reference, current[list(RAW_COLUMNS)], settings)
    if attribution:
        model = load_model_version(client, settings.model_name, champion.version).model
        test_rows = split_frame(reference).test
        report = replace(
            report,
            attribution=attribution_drift(
                model, test_rows.drop(columns="price"), current[list(RAW_COLUMNS)].drop(columns="price"),
                alpha=settings.drift_alpha, seed=settings.seed,
            ),
        )  # fmt: skip
    report_id = f"live-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    save_drift_report(settings, report_id, report)
    return report, report_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.live_drift", description=__doc__.splitlines()[0])
    parser.add_argument("--reference", choices=["champion"], default="champion")
    parser.add_argument("--current", choices=["inference-log"], default="inference-log")
    parser.add_argument("--since", help="only traffic logged in this last period, e.g. 24h (default: all)")
    parser.add_argument(
        "--no-attribution", action="store_true", help="skip the attribution drift (TreeSHAP on samples)"
    )
    args = parser.parse_args(argv)
    try:
        since = parse_since(args.since) if args.since else None
        report, report_id = live_drift_report(load_settings(), since=since, attribution=not args.no_attribution)
    except Exception as exc:
        print(f"live drift: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    summary = {"report": report_id, "verdict": report.verdict, "reason": report.reason,
               "n_reference": report.n_reference, "n_current": report.n_current,
               "attribution_drift": report.attribution["significant"] if report.attribution else None}  # fmt: skip
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

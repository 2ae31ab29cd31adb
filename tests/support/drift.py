"""Drift-report helpers shared by the unit, integration and data drift tests."""

from __future__ import annotations

import pandas as pd

from ray_jobs.drift import DriftReport, drift_report, save_drift_report
from rayestate.devstack.synthetic import generate_listings
from rayestate.settings import Settings

#: The two batch ids save_two_reports publishes, oldest first.
REPORT_IDS = ("api.g1.Tuesday.b000001", "api.g1.Tuesday.b000002")


def two_samples(rows: int = 100_000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two independent samples of the same synthetic market (seeds 1 and 2)."""
    return generate_listings(rows, seed=1), generate_listings(rows, seed=2)


def flagged(report: DriftReport) -> set[tuple[str, str]]:
    """The (kind, feature) checks a report calls drifted."""
    return {(f.kind, f.feature) for f in report.drifted}


def save_two_reports(settings: Settings, market: tuple[pd.DataFrame, pd.DataFrame]) -> dict[str, DriftReport]:
    """Publish reports for REPORT_IDS (3,000 then 4,000 rows of each sample); returns them by id."""
    reports = {}
    for batch_id, rows in zip(REPORT_IDS, (3_000, 4_000), strict=True):
        reports[batch_id] = drift_report(market[0].iloc[:rows], market[1].iloc[:rows], settings)
        save_drift_report(settings, batch_id, reports[batch_id])
    return reports

"""UI pages that need no API: a drift report rendered from real reports, and a bad configuration
reported on the page (the pages against the running Serve app are in integration/test_ui_app.py)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.support.ui import APP, charts, metrics, no_exception, shifted_drift_report


def _drift_page(report: dict) -> None:
    from ui.components import render_drift_report

    render_drift_report(report)


@pytest.mark.parametrize("shift", [1.0, 1.4])
def test_drift_report_renders_real_reports(shift):
    """Both verdicts of real ray_jobs.drift reports: banner, table, the charts of drifted features."""
    report = shifted_drift_report(shift).to_dict()
    at = AppTest.from_function(_drift_page, args=(report,), default_timeout=60).run()
    no_exception(at)
    drifted = [c["feature"] for c in report["features"] if c["verdict"] == "drift"]
    assert ("house_size" in drifted) == (shift > 1)
    assert metrics(at)["Checks drifted"] == f"{len(drifted)} of {len(report['features'])}"
    assert len(at.dataframe[0].value) == len(report["features"])
    specs = [spec for spec, _ in charts(at)]
    titles = [s.get("title") for s in specs[1:]]
    if drifted:
        assert len(specs) == 1 + len(drifted) and any(str(t).startswith("house_size") for t in titles)
        assert at.error[0].value.startswith("**Drift detected.**")
    else:
        assert len(specs) == 2 and at.success[0].value.startswith("**No drift.**")


def test_invalid_configuration_is_reported_not_raised(monkeypatch):
    monkeypatch.setenv("RAYESTATE_HTTP_TIMEOUT_S", "-1")
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    no_exception(at)
    assert "http_timeout_s" in at.error[0].value and "RAYESTATE_" in at.error[0].value

"""Driving the Streamlit UI with streamlit's AppTest, and reading what it shows."""

from __future__ import annotations

import json

import httpx
import pandas as pd
import pyarrow as pa
from streamlit.testing.v1 import AppTest

from rayestate.localstack import REPO

APP = REPO / "ui" / "app.py"
PAGES = ("views/price.py", "views/compare.py", "views/batch.py", "views/models.py", "views/drift.py")


def api(serve_app_url: str, path: str, body=None) -> dict:
    """The API's own answer (GET, or POST with ``body``): what a page must show."""
    response = (
        httpx.post(f"{serve_app_url}{path}", json=body, timeout=60)
        if body is not None
        else httpx.get(f"{serve_app_url}{path}", timeout=60)
    )
    response.raise_for_status()
    return response.json()


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def charts(at: AppTest) -> list[tuple[dict, pd.DataFrame]]:
    """Each Altair chart's Vega-Lite spec and its data (Streamlit ships the data as Arrow)."""
    return [
        (json.loads(c.proto.spec), pa.ipc.open_stream(c.proto.datasets[0].data.data).read_all().to_pandas())
        for c in at.get("vega_lite_chart")
    ]


def click(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click()
    return at.run()


def shifted_drift_report(shift: float):
    """A real ray_jobs.drift report: two synthetic samples, the current one's house sizes times ``shift``."""
    from ray_jobs.drift import drift_report
    from rayestate.devstack.synthetic import generate_listings
    from rayestate.settings import Settings

    reference, current = generate_listings(5000, seed=1), generate_listings(5000, seed=2)
    return drift_report(reference, current.assign(house_size=current["house_size"] * shift), Settings())

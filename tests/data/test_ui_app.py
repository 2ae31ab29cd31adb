"""The UI's batch page pricing the real API batch file through the real Serve app."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.support.ui import metrics, no_exception

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]  # the UI calls the running Serve app


def test_batch_page_prices_the_real_api_batch(ui, api_batch):
    at = ui.run()
    at.switch_page("views/batch.py").run()
    at.file_uploader[0].set_value((api_batch.name, api_batch.read_bytes(), "text/csv"))
    at.run(timeout=300)
    no_exception(at)
    rows = len(pd.read_csv(api_batch))
    shown = metrics(at)
    assert shown["Rows"] == f"{rows:,}"
    assert int(shown["Priced"].replace(",", "")) + int(shown["Rejected"].replace(",", "")) == rows
    assert int(shown["Priced"].replace(",", "")) > rows // 2
    assert shown["Median gap to listed price"].endswith("%")

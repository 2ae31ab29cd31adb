"""The stand-in data API serving the real sample: its course sequence looks like the real API's batch."""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
import pytest

from rayestate.schema import RAW_COLUMNS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]  # a real server on loopback
G1 = {"group_number": 1, "day": "Tuesday"}


def test_real_sample_batch_three_is_like_the_real_api_batch(data_api_factory, realtor_sample, api_batch):
    real_batch = pd.read_csv(api_batch)
    with data_api_factory(pd.read_parquet(realtor_sample), batch_rows=50_000) as server:
        batches = [httpx.get(f"{server.url}/data", params=G1).json() for _ in range(3)]
    ours = pd.DataFrame(batches[2]["data"])
    assert batches[2]["batch_number"] == 3 == real_batch["batch_number"].iloc[0]
    assert set(ours["state"]) == set(real_batch["state"]) == {"Massachusetts"}
    assert ours["price"].max() <= 300_000 and real_batch["price"].max() <= 300_000
    assert not ours.isna().any().any() and not real_batch[list(RAW_COLUMNS)].isna().any().any()
    assert list(ours.columns) == [c for c in real_batch.columns if c in RAW_COLUMNS]
    # Same value types as the real response: zips as floats without leading zeros.
    assert np.isclose(ours["zip_code"] % 1, 0).all() and ours["zip_code"].max() < 3_000

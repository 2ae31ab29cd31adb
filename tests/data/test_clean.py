"""The Ray Data cleaning job on the real samples: the figures their READMEs document."""

from __future__ import annotations

import pandas as pd
import pytest

from ray_jobs.clean import DUPLICATE_RULE, clean_batch
from ray_jobs.ingest import ingest_batch
from ray_jobs.source import read_file_batches
from rayestate import store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]  # the cleaning job runs on Ray


def ingest_and_clean_file(settings, path):
    """The whole file as one batch through ingest and the Ray cleaning job."""
    (batch,) = read_file_batches(path, 100_000)
    return clean_batch(settings, ingest_batch(settings, batch).batch_id)


def test_cleaning_the_real_sample(ray_cluster, settings, realtor_sample):
    record = ingest_and_clean_file(settings, realtor_sample)
    # Figures from the sample's README: 0.073% missing price, 57 prices below $1,000, no duplicates,
    # and extreme maxima (bed 99, house_size 684,327) that must go.
    assert record.removed["missing_price"] == 73
    assert record.removed["price_below_floor"] == 57
    assert record.removed[DUPLICATE_RULE] == 0
    assert record.removed["bed_out_of_range"] >= 1 and record.removed["house_size_out_of_range"] >= 1
    assert record.rows == 100_000 - sum(record.removed.values())
    assert 0 < record.repaired["zip_state_mismatch"] < 100  # a few zips of another state
    frame = store.read_frame(settings, "clean")
    assert frame["price"].min() >= 1_000 and frame["bed"].max() <= 50
    assert frame["bed"].isna().mean() == pytest.approx(0.2155, abs=0.01)  # land listings kept


def test_cleaning_the_real_api_batch(ray_cluster, settings, api_batch):
    record = ingest_and_clean_file(settings, api_batch)
    assert record.rows_in == record.rows == 4_055  # the real API served complete, plausible rows
    assert not any(record.removed.values()) and not any(record.repaired.values())
    clean = store.read_frame(settings, "clean")
    assert pd.Series(clean["state"]).eq("Massachusetts").all()

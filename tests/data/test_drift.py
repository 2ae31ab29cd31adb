"""The drift decision on the real sample: random halves are not drift, the course's slices are."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ray_jobs.drift import drift_report
from tests.support.drift import flagged


@pytest.fixture(scope="module")
def realtor(realtor_sample) -> pd.DataFrame:
    return pd.read_parquet(realtor_sample)


def test_real_sample_random_halves_are_not_drift(realtor, settings):
    order = np.random.default_rng(0).permutation(len(realtor))
    half = len(realtor) // 2
    report = drift_report(realtor.iloc[order[:half]], realtor.iloc[order[half:]], settings)
    assert report.verdict == "no_drift", report.reason


def test_real_course_slices_are_drift(realtor, api_batch, settings):
    cheap = drift_report(realtor, realtor[realtor["price"] <= 300_000], settings)
    assert ("numeric", "price") in flagged(cheap), cheap.reason
    served = pd.read_csv(api_batch)  # the real API batch: Massachusetts, $10k-$300k
    report = drift_report(realtor, served, settings)
    assert {("categorical", "state"), ("numeric", "price")} <= flagged(report), report.reason

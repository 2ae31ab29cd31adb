"""Drift on the real stack: reports kept on S3 (moto's real S3 API), and the Ray Data aggregation
path, which must decide exactly as the pandas path does."""

from __future__ import annotations

import pandas as pd
import pytest

from ray_jobs.drift import drift_report, load_drift_history
from tests.support.drift import REPORT_IDS, flagged, save_two_reports, two_samples


@pytest.fixture(scope="module")
def market() -> tuple[pd.DataFrame, pd.DataFrame]:
    return two_samples()  # the rows the unit tests use, so both paths see the same data


@pytest.mark.timeout(120)
def test_drift_history_on_s3(market, s3_settings):
    """A real S3 API (moto's server on loopback) behind the store's pyarrow S3 filesystem."""
    save_two_reports(s3_settings, market)
    assert [r.batch_id for r in load_drift_history(s3_settings)] == list(reversed(REPORT_IDS))


@pytest.mark.timeout(300)
def test_ray_data_path_matches_pandas_path(ray_cluster, market, settings, tmp_path, monkeypatch):
    import ray.data

    from ray_jobs import drift

    reference = market[0].iloc[:20_000]
    current = market[1].iloc[:20_000].assign(house_size=lambda d: d["house_size"] * 1.1)
    current.to_parquet(tmp_path / "current.parquet")
    expected = drift_report(reference, current, settings)
    chunks = [reference.iloc[i : i + 7_000] for i in range(0, 20_000, 7_000)]  # several blocks to combine
    got = drift_report(ray.data.from_pandas(chunks), ray.data.read_parquet(tmp_path / "current.parquet"), settings)
    for ours, theirs in zip(got.features, expected.features, strict=True):
        assert (ours.kind, ours.feature, ours.verdict) == (theirs.kind, theirs.feature, theirs.verdict)
        assert (ours.n_reference, ours.n_current) == (theirs.n_reference, theirs.n_current)
        assert ours.statistic == pytest.approx(theirs.statistic) and ours.effect_size == pytest.approx(
            theirs.effect_size
        )
    # Bigger references place their bin edges from a random sample: same decision, near-same numbers.
    monkeypatch.setattr(drift, "EDGE_SAMPLE_ROWS", 5_000)
    sampled = drift_report(ray.data.from_pandas(chunks), current, settings)
    assert flagged(sampled) == flagged(expected) == {("numeric", "house_size")}

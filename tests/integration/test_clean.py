"""The Ray Data cleaning job on the session's Ray cluster, on a local store and on S3 (moto)."""

from __future__ import annotations

import pytest

from ray_jobs.clean import clean_batch, clean_table_pandas
from ray_jobs.ingest import ingest_batch
from ray_jobs.source import Batch
from rayestate import store
from rayestate.devstack.synthetic import generate_table
from tests.support.cleaning import EXPECTED_REMOVED, problem_table


@pytest.mark.timeout(300)
@pytest.mark.parametrize("where", ["local", "s3"])
def test_clean_batch_on_ray_matches_the_rules_and_keeps_raw(ray_cluster, settings, where, request):
    config = settings if where == "local" else request.getfixturevalue("s3_settings")
    raw = ingest_batch(config, Batch("api", 1, "Tuesday", 7, problem_table()))
    record = clean_batch(config, raw.batch_id)
    expected_clean, expected_removed, expected_repaired = clean_table_pandas(problem_table())
    assert record.removed == expected_removed == EXPECTED_REMOVED
    assert record.repaired == expected_repaired
    assert (record.rows_in, record.rows, record.raw_sha256) == (40, 30, raw.sha256)
    assert record.sha256 == store.content_sha256(expected_clean)  # Ray Data and pandas agree row for row
    assert record.files == ["clean/api/1/Tuesday/batch=7/part-0.parquet"]
    assert store.read_table(config, "clean", raw.batch_id).equals(expected_clean)
    assert store.read_table(config, "raw", raw.batch_id).num_rows == 40  # raw verified against its manifest
    assert clean_batch(config, raw.batch_id) == record  # idempotent: the published record, untouched
    assert [r.batch_id for r in store.list_records(config, "clean")] == [raw.batch_id]
    with pytest.raises(KeyError, match="ingest it first"):
        clean_batch(config, "api.g1.Tuesday.b999999")


@pytest.mark.timeout(300)
def test_clean_spreads_parts_over_ray_tasks(ray_cluster, settings, monkeypatch):
    monkeypatch.setattr(store, "ROWS_PER_PART", 2_000)  # raw parts are written by this process
    table = generate_table(7_000, seed=3)
    raw = ingest_batch(settings, Batch("api", 2, "Wednesday", 1, table))
    record = clean_batch(settings, raw.batch_id)
    expected, removed, _ = clean_table_pandas(table)
    assert len(raw.files) == 4 and record.removed == removed
    assert store.read_table(settings, "clean", raw.batch_id).equals(expected)  # order preserved across tasks

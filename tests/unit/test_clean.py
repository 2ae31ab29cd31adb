"""Cleaning rules (pure), the Ray Data cleaning job, and both on the real data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ray_jobs.clean import DUPLICATE_RULE, REMOVAL_RULES, clean_batch, clean_table_pandas
from ray_jobs.ingest import ingest_batch
from ray_jobs.source import Batch, read_file_batches
from rayestate import store
from rayestate.devstack.synthetic import generate_table
from rayestate.schema import RAW_SCHEMA

EXPECTED_REMOVED = dict.fromkeys((*REMOVAL_RULES, DUPLICATE_RULE), 1)
EXPECTED_REPAIRED = {"zip_invalid": 1, "zip_state_mismatch": 1, "prev_sold_date_invalid": 2}


def problem_table() -> pa.Table:
    """40 valid rows, then one row per rule (row 9 duplicates row 20; rows 14-16 only look odd)."""
    valid, removed, _ = clean_table_pandas(generate_table(400, seed=8))
    assert not any(removed.values())
    frame = valid.slice(0, 40).to_pandas()
    edits = {
        0: {"price": np.nan}, 1: {"price": 0.0}, 2: {"price": 5e8}, 3: {"status": "pending"},
        4: {"state": "Atlantis"}, 5: {"bed": 99.0}, 6: {"bath": 198.0}, 7: {"acre_lot": -1.0},
        8: {"house_size": 684_327.0}, 10: {"zip_code": 2101.5}, 12: {"prev_sold_date": "2020-13-45"},
        13: {"prev_sold_date": "2999-01-01"}, 14: {"status": " SOLD "}, 16: {"state": "texas", "zip_code": 75001.0},
        15: {"bed": np.nan, "bath": np.nan, "house_size": np.nan},
    }  # fmt: skip
    for row, values in edits.items():
        for column, value in values.items():
            frame.loc[row, column] = value
    frame.loc[11, ["state", "zip_code"]] = ["Florida", 2101.0]  # a Massachusetts zip in Florida
    frame.loc[9] = frame.loc[20]
    return pa.Table.from_pandas(frame, schema=RAW_SCHEMA, preserve_index=False)


def test_each_rule_removes_or_repairs_exactly_its_rows():
    table = problem_table()
    clean, removed, repaired = clean_table_pandas(table)
    assert removed == EXPECTED_REMOVED and repaired == EXPECTED_REPAIRED
    assert clean.num_rows == 40 - len(EXPECTED_REMOVED) and clean.schema.equals(RAW_SCHEMA)
    frame = clean.to_pandas()
    assert frame["price"].between(1_000, 1e8).all() and not frame.duplicated().any()
    assert frame["status"].isin(["for_sale", "sold", "ready_to_build"]).all()
    assert "Texas" in set(frame["state"]) and "texas" not in set(frame["state"])
    row = frame.set_index("street").loc  # streets are unique IDs in these rows
    street = table.column("street").to_pylist()
    assert row[street[15], ["bed", "bath", "house_size"]].isna().all()  # the land-like row stays
    assert np.isnan(row[street[10], "zip_code"]) and np.isnan(row[street[11], "zip_code"])
    assert pd.isna(row[street[12], "prev_sold_date"])
    assert pd.isna(row[street[13], "prev_sold_date"]) and row[street[16], "zip_code"] == 75001.0


def test_clean_output_is_deterministic_and_input_untouched():
    table = problem_table()
    before = store.content_sha256(table)
    first, second = clean_table_pandas(table)[0], clean_table_pandas(table)[0]
    assert store.content_sha256(first) == store.content_sha256(second)
    assert store.content_sha256(table) == before


@pytest.mark.integration
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


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_clean_spreads_parts_over_ray_tasks(ray_cluster, settings, monkeypatch):
    monkeypatch.setattr(store, "ROWS_PER_PART", 2_000)  # raw parts are written by this process
    table = generate_table(7_000, seed=3)
    raw = ingest_batch(settings, Batch("api", 2, "Wednesday", 1, table))
    record = clean_batch(settings, raw.batch_id)
    expected, removed, _ = clean_table_pandas(table)
    assert len(raw.files) == 4 and record.removed == removed
    assert store.read_table(settings, "clean", raw.batch_id).equals(expected)  # order preserved across tasks


def ingest_and_clean_file(settings, path):
    """The whole file as one batch through ingest and the Ray cleaning job."""
    (batch,) = read_file_batches(path, 100_000)
    return clean_batch(settings, ingest_batch(settings, batch).batch_id)


@pytest.mark.data
@pytest.mark.integration
@pytest.mark.timeout(300)
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


@pytest.mark.data
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_cleaning_the_real_api_batch(ray_cluster, settings, api_batch):
    record = ingest_and_clean_file(settings, api_batch)
    assert record.rows_in == record.rows == 4_055  # the real API served complete, plausible rows
    assert not any(record.removed.values()) and not any(record.repaired.values())
    clean = store.read_frame(settings, "clean")
    assert pd.Series(clean["state"]).eq("Massachusetts").all()

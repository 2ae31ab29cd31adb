"""Cleaning rules (pure pandas/Arrow): each rule removes or repairs exactly its rows.

The Ray Data cleaning job is tested in integration/test_clean.py, the real samples in data/test_clean.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ray_jobs.clean import clean_table_pandas
from rayestate import store
from rayestate.schema import RAW_SCHEMA
from tests.support.cleaning import EXPECTED_REMOVED, EXPECTED_REPAIRED, problem_table


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

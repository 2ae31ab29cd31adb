"""Listings priced as they come: missing sizes, missing ID columns, one feature path for any batch size."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pydantic import ValidationError

from ray_jobs import augment
from ray_jobs.ingest import ingest_batch
from ray_jobs.source import Batch, parse_batch, read_file_batches
from rayestate import store
from rayestate.features import FEATURES, FeatureTransform, listing_columns, without_fields
from rayestate.schema import RAW_COLUMNS, SIZE_FIELDS, Listing, SchemaError, conform_table
from serve_app.inference import MISSING_FIELD_WARNINGS, predict_rows
from tests.support.models import make_model, sample_listings


@pytest.fixture(scope="module")
def market() -> pd.DataFrame:
    return sample_listings(3000, seed=11)


@pytest.fixture(scope="module")
def model(market):
    return make_model(market, rounds=30)


def test_only_state_is_required_and_bounds_still_apply():
    bare = Listing.model_validate({"state": "Ohio"})
    assert all(getattr(bare, field) is None for field in SIZE_FIELDS)
    assert Listing.model_validate({"state": "Ohio", "bed": None, "house_size": None}).bed is None
    with pytest.raises(ValidationError, match="state"):
        Listing.model_validate({"bed": 3, "bath": 2, "acre_lot": 0.2, "house_size": 1500})
    with pytest.raises(ValidationError) as error:
        Listing.model_validate({"state": "Ohio", "house_size": 50})  # present, so bounded
    assert error.value.errors()[0]["loc"] == ("house_size",)


def test_a_listing_without_sizes_is_priced_and_told_so(model):
    rows = [
        Listing.model_validate({"state": "Ohio", "bed": 3, "bath": 2, "acre_lot": 0.2, "house_size": 1500}),
        Listing.model_validate({"state": "Ohio", "acre_lot": 2.0}),
    ]
    answer = predict_rows(model, [row.to_raw_row() for row in rows])
    prices, warnings = answer["prices"], answer["warnings"]
    assert all(np.isfinite(prices)) and all(p > 0 for p in prices)
    assert not set(warnings[0]) & set(MISSING_FIELD_WARNINGS.values())
    missing = [MISSING_FIELD_WARNINGS[f] for f in ("bed", "bath", "house_size")]
    assert [w for w in warnings[1] if w in MISSING_FIELD_WARNINGS.values()] == missing
    assert "house_size missing: the model prices without it; expect a wider error" in warnings[1]


def test_masking_features_equals_transforming_the_masked_listing(market):
    transform = FeatureTransform.fit(market)
    rng = np.random.default_rng(3)
    missing = pd.DataFrame({field: rng.random(len(market)) < 0.3 for field in SIZE_FIELDS})
    masked_raw = market.copy()
    for field in SIZE_FIELDS:
        masked_raw.loc[missing[field].to_numpy(), field] = np.nan
    pd.testing.assert_frame_equal(
        without_fields(transform.transform(market), missing), transform.transform(masked_raw), check_exact=True
    )


def test_masked_copies_only_when_training_rows_lack_missing_sizes(market):
    assert augment.copies_needed(market) == 0  # the synthetic market has real missing shares
    complete = market.dropna(subset=list(SIZE_FIELDS)).reset_index(drop=True)
    _, features = FeatureTransform.fit_transform(complete, seed=1)
    y = np.log(complete["price"].to_numpy())
    out, target, sources = augment.with_masked_copies(features, y, complete, seed=1)
    copies = len(sources)
    assert copies == augment.copies_needed(complete) > 0
    np.testing.assert_array_equal(target[len(complete) :], y[sources])  # a copy keeps its source row's price
    assert len(out) == len(complete) + copies and len(target) == len(out)
    copies_part = out.iloc[len(complete) :]
    share = (copies_part[["bed", "bath", "acre_lot", "house_size"]].isna().any(axis=1)).mean()
    assert share == 1.0  # every copy lacks a size, in one of the real patterns
    assert copies / len(out) == pytest.approx(augment.REAL_MISSING_SHARE, abs=0.01)  # the real share
    # a masked house_size empties every feature that reads it, and nothing else of that row
    row = copies_part[copies_part["house_size"].isna()].iloc[0]
    assert np.isnan(row["te_zip_ppsf_x_size"]) and np.isnan(row["sqft_per_bed"]) and not np.isnan(row["te_zip"])


def test_one_feature_path_for_one_row_and_for_many(market):
    """A listing's features do not depend on its batch: dict lookups (small) and factorize (big) agree."""
    transform = FeatureTransform.fit(market)
    rows = market.drop(columns="price").head(200).copy()
    rows.loc[rows.index[:5], "prev_sold_date"] = ["2015-02-30", "not a date", None, "1600-01-01", "2015-06-01"]
    rows.loc[rows.index[5], "zip_code"] = np.nan
    batch = transform.matrix(rows)
    assert batch.shape == (200, len(FEATURES))
    one_by_one = np.vstack([transform.matrix(rows.iloc[[i]].to_dict("records")) for i in range(len(rows))])
    np.testing.assert_array_equal(batch, one_by_one)
    assert np.isnan(batch[:4, FEATURES.index("prev_sold_year")]).all()  # impossible or unreadable sale dates
    assert batch[4, FEATURES.index("prev_sold_year")] == 2015.0
    columns = {name: list(values) for name, values in listing_columns(rows).items()}  # plain lists, as /predict/batch
    np.testing.assert_array_equal(transform.matrix(columns), batch)


def test_batches_without_the_id_columns_are_ingested_with_a_note(settings, tmp_path):
    rows = [{c: None for c in RAW_COLUMNS if c not in ("brokered_by", "street")} | {"state": "Ohio", "price": 2e5}]
    body = json.dumps({"group_number": 1, "day": "Tuesday", "batch_number": 1, "data": rows}).encode()
    _, table, notes = parse_batch(body, max_rows=10)
    assert table.column_names == list(RAW_COLUMNS) and table.column("street").null_count == 1
    assert notes and "brokered_by, street" in notes[0]
    record = ingest_batch(settings, Batch("api", 1, "Tuesday", 1, table, notes=notes))
    assert store.get_record(settings, "raw", record.batch_id).notes == list(notes)

    old = pd.DataFrame(rows * 3)
    path = tmp_path / "older-version.csv"
    old.to_csv(path, index=False)
    (batch,) = read_file_batches(path, 10)
    assert batch.notes == tuple(notes) and batch.table.num_rows == 3
    with pytest.raises(SchemaError, match="state"):  # a required column is still required
        conform_table(pa.Table.from_pylist([{"price": 1.0}]))

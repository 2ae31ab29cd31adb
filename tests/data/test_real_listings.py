"""Real listings as they come: priced by the live API, explained exactly, ranged honestly, matched when sold."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from benchmarks.real_data import held_out_rows, train_valid
from ray_jobs.fit import refit, xgb_params
from ray_jobs.live_quality import live_quality
from ray_jobs.outcomes import record_outcomes, relative_errors
from ray_jobs.split import Splits
from rayestate import dense_predict, store
from rayestate.features import log_price
from rayestate.inference_log import read_inference_log
from rayestate.schema import conform_table
from rayestate.settings import Settings
from serve_app.inference import explain_rows, predict_rows
from tests.support.models import with_sample_range

BATCH = 5_000


def as_sent(frame: pd.DataFrame) -> list[dict]:
    """Rows as a client sends them: every field as it appears, NaN as null (zip as the dataset's number)."""
    rows = frame.drop(columns="price").astype("object")
    return rows.where(frame.drop(columns="price").notna(), None).to_dict("records")


@pytest.fixture(scope="module")
def real(realtor_sample) -> pd.DataFrame:
    return pd.read_parquet(realtor_sample)


@pytest.fixture(scope="module")
def bagged_model(real):
    """A small bag of two boosters with a price range, on 30k real training rows."""
    train, valid, calibration = (
        part.head(n) for part, n in zip(train_valid(real), (30_000, 6_000, 6_000), strict=True)
    )
    params = xgb_params({"eta": 0.1, "max_depth": 6, "subsample": 0.8, "colsample_bytree": 0.7,
                         "objective": "reg:absoluteerror"}, log_price(train["price"]), nthread=2, seed=1)  # fmt: skip
    model = refit(pd.concat([train, valid]), params, 200, seed=1, nthread=2, bag_size=2)
    splits = Splits(train, valid, pd.DataFrame(), calibration)
    return with_sample_range(model, splits, rounds=200, seed=1)


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_the_api_prices_99_percent_of_held_out_real_listings_as_they_appear(real, serve_app_url):
    test, _ = held_out_rows(real)
    priced = errors = 0
    for start in range(0, len(test), BATCH):
        answer = httpx.post(
            f"{serve_app_url}/predict/batch", json={"listings": as_sent(test.iloc[start : start + BATCH])}, timeout=300
        ).json()
        priced += sum(price is not None for price in answer["prices"])
        errors += len(answer["errors"])
    assert priced + errors == len(test)
    assert priced / len(test) >= 0.99, f"only {priced / len(test):.2%} priced"


def test_field_groups_add_up_exactly_on_2000_real_rows_with_a_bag(real, bagged_model):
    assert len(bagged_model.boosters) == 2
    rows = as_sent(real.iloc[80_000:82_000])
    for answer in explain_rows(bagged_model, rows, comparables=0):
        total = answer["base_value"] + math.fsum(group["shap"] for group in answer["groups"])
        assert total == pytest.approx(answer["log_price"], abs=5e-5)


def test_one_real_listing_alone_gets_the_batchs_price_and_range_bit_for_bit(real, bagged_model):
    """One row takes the leaf sum (dense_predict), a batch XGBoost's block kernel: same bits, on real rows."""
    bagged_model.prepare_for_serving(1)
    boosters = [*bagged_model.boosters, bagged_model.interval.scale]
    assert all(dense_predict._leaf_sums[booster] is not None for booster in boosters)
    rows = as_sent(real.iloc[80_000:81_000])  # missing fields as they appear
    batch = predict_rows(bagged_model, rows)
    for index, row in enumerate(rows):
        alone = predict_rows(bagged_model, [row])
        for key in ("prices", "price_low", "price_high"):
            assert alone[key] == [batch[key][index]], (index, key)


def test_the_price_range_covers_about_its_nominal_share_of_held_out_real_rows(real, bagged_model):
    test, _ = held_out_rows(real)
    held_out = test.head(5_000)
    priced = bagged_model.price_range(held_out.drop(columns="price"), coverage=0.8)
    price = held_out["price"].to_numpy()
    covered = (priced.low <= price) & (price <= priced.high)
    assert 0.75 <= covered.mean() <= 0.85, covered.mean()  # the target (±2 points) is the benchmark's, on 20k rows
    width = (priced.high - priced.low) / priced.price
    missing = held_out[["bed", "bath", "acre_lot", "house_size"]].isna().any(axis=1).to_numpy()
    assert np.median(width[missing]) > np.median(width[~missing])  # wider where the model knows less


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_sold_prices_are_joined_to_what_was_served_for_every_real_pair(real, serve_app_url, serve_state_dir):
    keyed = real.dropna(subset=["street", "zip_code", "price"])
    statuses = keyed.groupby(["street", "zip_code"])["status"].transform("nunique")
    pairs = keyed[statuses > 1]
    for_sale, sold = pairs[pairs["status"] == "for_sale"], pairs[pairs["status"] == "sold"]
    assert for_sale[["street", "zip_code"]].drop_duplicates().shape[0] == 261  # the README's count
    answer = httpx.post(f"{serve_app_url}/predict/batch", json={"listings": as_sent(for_sale)}, timeout=300).json()
    served = {
        key: price for key, price in zip(zip(for_sale["street"], for_sale["zip_code"], strict=True), answer["prices"], strict=True)
        if price is not None
    }  # fmt: skip
    settings = Settings(state_dir=serve_state_dir)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the inference log is written every second in tests
        logged = read_inference_log(settings)
        keys = set(zip(logged["street"], logged["zip_code"], strict=True))
        if set(served) <= keys:
            break
        time.sleep(0.5)
    log_status = httpx.get(f"{serve_app_url}/ready", timeout=30).json()["inference_log"]
    assert set(served) <= keys, (
        f"the inference log never held the served listings: {len(set(served) - keys)} of {len(served)} missing "
        f"(e.g. {sorted(set(served) - keys)[:2]}, logged e.g. {sorted(keys)[:2]}); log status {log_status}"
    )

    record = store.CleanRecord(batch_id="file-real-sold.g0.file.b000001", source="file-real-sold", group_number=0,
                               day="file", batch_number=1, rows=len(sold), sha256="-",
                               fetched_at=datetime.now(UTC).isoformat(timespec="seconds"))  # fmt: skip
    table = conform_table(pa.Table.from_pandas(sold.reset_index(drop=True), preserve_index=False))
    record.sha256 = store.content_sha256(table)
    store.publish(settings, "clean", record, table)
    matched = record_outcomes(settings, record.batch_id)
    sold_keys = set(zip(sold["street"], sold["zip_code"], strict=True))
    assert matched == len(sold_keys & set(served))  # every pair whose for_sale row was priced

    report = live_quality(settings)
    outcomes = pd.read_parquet(store.open_store(settings).path(f"outcomes/{record.batch_id}.parquet"))
    first_sold = sold.drop_duplicates(["street", "zip_code"]).set_index(["street", "zip_code"])["price"]
    direct = np.array(
        [
            (served[k] - first_sold[k]) / first_sold[k]
            for k in zip(outcomes["street"], outcomes["zip_code"], strict=True)
        ]
    )
    np.testing.assert_allclose(relative_errors(outcomes), direct, rtol=1e-9)
    version = report["versions"][outcomes["model_version"].iloc[0]]
    assert version["matched_homes"] >= matched
    mine = outcomes["model_version"] == outcomes["model_version"].iloc[0]
    if version["matched_homes"] == matched:  # no other test's sold homes for this version
        assert version["mdape"] == pytest.approx(float(np.median(np.abs(direct[mine.to_numpy()]))))

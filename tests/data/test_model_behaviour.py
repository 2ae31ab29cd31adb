"""Behaviour a price model trained on the real sample must have, whatever its exact numbers."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from ray_jobs.clean import clean_table_pandas
from ray_jobs.split import split_frame
from ray_jobs.tune import fit_untuned

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def real(realtor_sample):
    clean, _, _ = clean_table_pandas(pq.read_table(realtor_sample))
    return split_frame(clean.to_pandas().head(40_000))


@pytest.fixture(scope="module")
def model(real):
    return fit_untuned(real.train, real.valid, nthread=2)[0]


def test_predictions_are_positive_and_finite(real, model):
    bare = real.test.head(50).copy()
    for column in ("bed", "bath", "acre_lot", "house_size", "city", "zip_code", "prev_sold_date", "brokered_by"):
        bare[column] = None  # bare land with nothing known but the state
    for frame in (real.test, bare):
        predicted = model.predict(frame)
        assert np.isfinite(predicted).all() and (predicted > 0).all()


def test_more_living_area_never_lowers_the_price(real, model):
    homes = real.test[real.test["house_size"].between(600, 5_000)].head(300)
    base = model.predict(homes)
    for factor in (1.1, 1.5, 2.0):
        bigger = model.predict(homes.assign(house_size=homes["house_size"] * factor))
        ratio = bigger / base
        assert np.median(ratio) > 1.02, factor  # typically worth more...
        assert ratio.min() > 0.999, factor  # ...and never less (monotone constraints)


def test_an_unknown_state_still_gets_a_price(real, model):
    row = real.test.head(1).assign(state="Atlantis", city="Nowhere", zip_code=99_999.0)
    assert not any(flags[0] for flags in model.transform.known(row).values())
    (predicted,) = model.predict(row)
    assert np.isfinite(predicted) and predicted > 0


def test_the_price_level_follows_the_location(real, model):
    """The same home is dearer in a dear ZIP than in a cheap one of the same state."""
    state = real.train[real.train["state"] == "California"]
    zips = state.groupby("zip_code")["price"].agg(["median", "count"])
    zips = zips[zips["count"] >= 10].sort_values("median")
    home = real.test[real.test["state"] == "California"].head(1).assign(city=None)
    cheap, dear = (model.predict(home.assign(zip_code=z))[0] for z in (zips.index[0], zips.index[-1]))
    assert dear > 1.5 * cheap

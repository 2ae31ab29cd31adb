"""Seeded synthetic listings with the realtor schema, shaped like the real data.

Used when no real dataset is given (the embedded data API, benchmarks, tests without
../shared). Marginals follow the figures in ../shared/data/realtor/README.md: status split,
state weights, per-column missing shares (bare land has no bed/bath/house_size, ready_to_build
has no bath/acre_lot/sale date), heavy tails and a few impossible outliers (price 0, bed 99).

Price is log-linear in house size, beds, baths and lot size, plus a state level, a zip3 and a
zip (city) location effect and heavy-tailed noise, with coefficients fitted on the real sample,
so a model trained on these rows learns something real. The "world" (which zips exist, their
city, their price effect, brokers) is fixed by GEOGRAPHY_SEED; ``seed`` only draws the rows,
so two seeds are two samples of the same market.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa

from rayestate.geography import residential_zip3
from rayestate.schema import RAW_SCHEMA, STATES, STATUSES

GEOGRAPHY_SEED = 20_240_101
N_BROKERS = 110_139
MAX_STREET = 2_001_347

#: Per state: listings per 100k rows, median price ($k), median acre_lot (real sample figures).
STATE_PROFILE: dict[str, tuple[int, int, float]] = {
    "Florida": (11270, 319, 0.23), "California": (10192, 675, 0.18), "Texas": (9399, 315, 0.21),
    "New York": (4632, 425, 0.25), "North Carolina": (3863, 240, 0.56), "Illinois": (3742, 249, 0.22),
    "Georgia": (3643, 299, 0.5), "Pennsylvania": (3524, 245, 0.23), "Arizona": (3272, 382, 0.19),
    "Virginia": (3027, 350, 0.39), "Washington": (2793, 500, 0.22), "Ohio": (2610, 180, 0.26),
    "New Jersey": (2160, 415, 0.2), "Maryland": (2146, 365, 0.23), "Missouri": (2030, 210, 0.28),
    "Michigan": (1934, 175, 0.46), "Minnesota": (1932, 300, 0.28), "Wisconsin": (1927, 200, 0.42),
    "South Carolina": (1890, 275, 0.43), "Tennessee": (1889, 235, 0.74), "Massachusetts": (1748, 522, 0.32),
    "Oklahoma": (1673, 200, 0.27), "Alabama": (1557, 200, 0.58), "Colorado": (1523, 525, 0.23),
    "Oregon": (1380, 473, 0.22), "Louisiana": (1130, 220, 0.34), "Kentucky": (1111, 200, 0.5),
    "Arkansas": (1025, 153, 0.49), "Iowa": (992, 193, 0.24), "New Mexico": (939, 235, 0.5),
    "Indiana": (861, 208, 0.33), "Mississippi": (743, 178, 0.76), "Idaho": (734, 465, 0.27),
    "Kansas": (676, 185, 0.24), "Utah": (664, 550, 0.26), "Nevada": (649, 445, 0.22),
    "Connecticut": (615, 330, 0.59), "West Virginia": (575, 150, 0.67), "Montana": (441, 400, 0.9),
    "Delaware": (389, 349, 0.23), "Rhode Island": (377, 370, 0.21), "Hawaii": (323, 695, 0.71),
    "District of Columbia": (309, 635, 0.06), "Nebraska": (301, 210, 0.22), "Maine": (198, 167, 1.86),
    "South Dakota": (192, 229, 0.38), "New Hampshire": (183, 329, 1.46), "North Dakota": (179, 198, 0.33),
    "Wyoming": (167, 285, 0.85), "Puerto Rico": (146, 163, 0.19), "Vermont": (134, 322, 2.0),
    "Alaska": (129, 150, 1.45), "Guam": (32, 469, 0.47), "Virgin Islands": (30, 170, 0.75),
}  # fmt: skip

#: Log-price slopes fitted on the real sample (OLS with state effects, houses only).
LOG_SQFT, PER_BED, PER_BATH, LOG1P_ACRE, SOLD_EFFECT = 0.75, -0.11, 0.24, 0.08, -0.08
STATUS_SHARE = {"for_sale": 0.6221, "sold": 0.3665, "ready_to_build": 0.0114}
#: Share of bare-land listings (no bed/bath/house_size) per status, so 20.5% overall.
LAND_SHARE = {"for_sale": 0.286, "sold": 0.075, "ready_to_build": 0.0}
#: Extra missing shares on rows that otherwise have the value (real sample, by row type).
MISSING = {"brokered_by": 0.0022, "street": 0.0046, "city": 0.0006, "zip_code": 0.0001, "price": 0.0007,
           "house_bed": 0.0126, "house_bath": 0.016, "house_size": 0.064, "house_acre": 0.168,
           "land_acre": 0.026, "for_sale_date": 0.512}  # fmt: skip
#: Impossible values per 100k rows, as in the real sample ("left in on purpose").
OUTLIERS_PER_100K = {"price_zero": 23, "price_tiny": 34, "bed": 35, "bath": 18, "acre": 20, "size": 6, "zip": 25}
#: City names are built from these parts (about 10k distinct names, like the real sample).
_CITY_PREFIXES = (
    "",
    "",
    "",
    "",
    "",
    "",
    "North ",
    "South ",
    "East ",
    "West ",
    "New ",
    "Lake ",
    "Mount ",
    "Port ",
    "Fort ",
)
_CITY_HEADS = ("Oak", "Maple", "River", "Lake", "Green", "Fair", "Spring", "Clear", "Mill", "Ash", "Elm", "Cedar",
               "Pine", "Glen", "Rock", "Bay", "Sun", "Silver", "Red", "Stone", "Bridge", "Brook", "Wood", "Hill",
               "Harbor", "Bright", "Cold", "Deer", "Eagle", "Fox", "Gold", "Hazel", "Iron", "King", "Laurel",
               "Marsh", "Mid", "Oxen", "Plain", "Quarry")  # fmt: skip
_CITY_TAILS = ("ville", "ton", " Falls", " Springs", "field", "wood", " City", "burg", "port", " Heights", "dale",
               "view", " Park", "ford", "mont", " Grove", "haven", " Creek", "land", "ridge", " Beach", "worth",
               "bury", " Point", " Valley")  # fmt: skip


@lru_cache(maxsize=1)
def _world() -> dict[str, np.ndarray]:
    """The fixed geography: zips per state with popularity, city and location effect; brokers."""
    rng = np.random.default_rng(GEOGRAPHY_SEED)
    zips, zip_state, zip_prob, zip_effect, zip_city = [], [], [], [], []
    city_names: list[str] = []
    broker_start = np.zeros(len(STATES), dtype=np.int64)
    broker_size = np.zeros(len(STATES), dtype=np.int64)
    total = sum(share for share, _, _ in STATE_PROFILE.values())
    next_broker = 1000  # a few low IDs are the national brokers
    for index, state in enumerate(STATES):
        share = STATE_PROFILE[state][0] / total
        codes = (residential_zip3(state)[:, None] * 100 + np.arange(100)).ravel()
        codes = codes[(codes > 500) & (rng.random(codes.size) < 0.4)]
        popularity = rng.lognormal(0.0, 1.7, codes.size)
        prefix_effect = rng.normal(0.0, 0.2, 1000)[codes // 100]
        # Neighbouring zips form a city (1-4 zips), sharing a name and part of the location effect.
        city_of_zip = np.cumsum(rng.random(codes.size) < 0.7) - 1
        city_effect = rng.normal(0.0, 0.2, city_of_zip.max() + 1)[city_of_zip]
        parts = [rng.integers(0, len(p), city_of_zip.max() + 1) for p in (_CITY_PREFIXES, _CITY_HEADS, _CITY_TAILS)]
        zips.append(codes)
        zip_state.append(np.full(codes.size, index))
        zip_prob.append(share * popularity / popularity.sum())
        zip_effect.append(prefix_effect + city_effect + rng.normal(0.0, 0.2, codes.size))
        zip_city.append(len(city_names) + city_of_zip)
        city_names.extend(_CITY_PREFIXES[p] + _CITY_HEADS[h] + _CITY_TAILS[t] for p, h, t in zip(*parts, strict=True))
        broker_size[index] = max(5, round(share * (N_BROKERS - 1000)))
        broker_start[index] = next_broker
        next_broker += broker_size[index]
    zip_prob = np.concatenate(zip_prob)
    return {
        "zip_code": np.concatenate(zips).astype("float64"),
        "zip_state": np.concatenate(zip_state),
        "zip_cdf": np.cumsum(zip_prob) / zip_prob.sum(),
        "zip_effect": np.concatenate(zip_effect),
        "zip_city": np.concatenate(zip_city),
        "city_names": np.array(city_names, dtype=object),
        "broker_start": broker_start,
        "broker_size": broker_size,
        "broker_effect": rng.normal(0.0, 0.15, next_broker),
        "state_log_price": np.log([STATE_PROFILE[s][1] * 1000.0 for s in STATES]),
        "state_acre": np.array([STATE_PROFILE[s][2] for s in STATES]),
    }


def generate_table(n_rows: int, seed: int = 0) -> pa.Table:
    """``n_rows`` synthetic listings as an Arrow table with exactly RAW_SCHEMA."""
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    world = _world()
    rng = np.random.default_rng(seed)
    n = n_rows

    zip_index = np.minimum(np.searchsorted(world["zip_cdf"], rng.random(n)), world["zip_cdf"].size - 1)
    state = world["zip_state"][zip_index]
    status = rng.choice(len(STATUSES), n, p=[STATUS_SHARE[s] for s in STATUSES])
    is_sold, is_rtb = status == STATUSES.index("sold"), status == STATUSES.index("ready_to_build")
    land = rng.random(n) < np.array([LAND_SHARE[s] for s in STATUSES])[status]
    house = ~land

    # Living area: log-normal with a heavier right tail; new builds are bigger.
    size_z = rng.normal(0.0, 1.0, n) + np.where(rng.random(n) < 0.03, rng.exponential(1.2, n), 0.0)
    log_size = np.log(1758.0) + 0.46 * size_z + 0.3 * is_rtb
    house_size = np.maximum(np.round(np.exp(log_size)), 100.0)
    bed = np.clip(np.round(3.2 + 0.75 * size_z + rng.normal(0.0, 0.6, n)), 1, 12)
    bath = np.clip(np.round(2.2 + 0.35 * (bed - 3) + 0.45 * size_z + rng.normal(0.0, 0.55, n)), 1, 12)

    # Lot size: skewed log-normal around the state's median; bare land has much bigger lots.
    lot_z = rng.normal(0.0, 1.0, n)
    lot_sd = np.where(lot_z < 0, np.where(land, 1.3, 0.8), np.where(land, 2.3, 1.7))
    lot_median = world["state_acre"][state] * np.where(land, 3.7, 0.72)
    acre_lot = np.round(lot_median * np.exp(lot_sd * lot_z), 2)

    # Price: state level + location effects + hedonic slopes + heavy-tailed noise.
    broker = world["broker_start"][state] + (world["broker_size"][state] * rng.random(n) ** 5).astype(np.int64)
    national = rng.random(n) < 0.06
    broker = np.where(national, rng.choice(5, n, p=[0.41, 0.24, 0.19, 0.08, 0.08]) * 100 + 100, broker)
    location = world["state_log_price"][state] + world["zip_effect"][zip_index] + world["broker_effect"][broker]
    hedonic = (
        LOG_SQFT * (log_size - np.log(1758.0))
        + PER_BED * (bed - 3)
        + PER_BATH * (bath - 2)
        + LOG1P_ACRE * np.log1p(acre_lot)
        + SOLD_EFFECT * is_sold
        + 0.25 * is_rtb
    )
    noise = rng.normal(0.0, 0.25, n) + np.where(rng.random(n) < 0.08, rng.normal(0.0, 1.1, n), 0.0)
    log_price = np.where(
        land,
        location - 1.6 + 0.35 * np.log(np.maximum(acre_lot, 0.01)) + rng.normal(0.0, 1.1, n),
        location + 0.12 + hedonic + noise,
    )
    price = _round_price(np.exp(np.minimum(log_price, np.log(2.5e8))), rng)  # the real maximum is $212.5M

    missing = {name: rng.random(n) < share for name, share in MISSING.items()}
    sold_days = -100 + 190 * rng.beta(1.3, 1.0, n)  # days from 2022-02-01: late 2021 .. April 2022
    age_z = rng.normal(0.0, 1.0, n)
    years_ago = np.exp(np.log(6.85) + age_z * np.where(age_z > 0, 0.8, 1.4))  # earlier sale of a listed home
    prev_sold = np.where(is_sold, 19024 + sold_days, 19144 - 365.25 * years_ago).astype(np.int32)

    columns = {
        "brokered_by": _masked(broker.astype("float64"), missing["brokered_by"]),
        "status": pa.DictionaryArray.from_arrays(status.astype(np.int32), pa.array(STATUSES)),
        "price": _masked(price, missing["price"] | (is_rtb & (rng.random(n) < 0.013))),
        "bed": _masked(bed, land | (house & ~is_rtb & missing["house_bed"])),
        "bath": _masked(bath, land | is_rtb | (house & missing["house_bath"])),
        "acre_lot": _masked(acre_lot, is_rtb | (land & missing["land_acre"]) | (house & missing["house_acre"])),
        "street": _masked(rng.integers(0, MAX_STREET, n).astype("float64"), missing["street"]),
        "city": pa.DictionaryArray.from_arrays(
            pa.array(world["zip_city"][zip_index].astype(np.int32), mask=missing["city"]),
            pa.array(world["city_names"], type=pa.string()),
        ),
        "state": pa.DictionaryArray.from_arrays(state.astype(np.int32), pa.array(STATES)),
        "zip_code": _masked(world["zip_code"][zip_index], missing["zip_code"]),
        "house_size": _masked(house_size, land | (house & ~is_rtb & missing["house_size"])),
        "prev_sold_date": pa.array(prev_sold, type=pa.date32(), mask=is_rtb | (~is_sold & missing["for_sale_date"])),
    }
    _inject_outliers(columns, rng, n, world["zip_code"])
    return pa.Table.from_arrays([columns[f.name].cast(f.type) for f in RAW_SCHEMA], schema=RAW_SCHEMA)


def generate_listings(n_rows: int, seed: int = 0) -> pd.DataFrame:
    """``n_rows`` synthetic listings as a DataFrame with the real file's columns and dtypes."""
    return generate_table(n_rows, seed).to_pandas()


def _masked(values: np.ndarray, mask: np.ndarray) -> pa.Array:
    return pa.array(values, type=pa.float64(), mask=mask)


def _round_price(price: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Asking prices are round numbers: most are multiples of $100, many of $1k or $5k."""
    step = np.select(
        [price < 50_000, rng.random(price.size) < 0.45, rng.random(price.size) < 0.4], [100, 5000, 1000], 100
    )
    return np.round(price / step) * step


def _inject_outliers(columns: dict[str, pa.Array], rng: np.random.Generator, n: int, zips: np.ndarray) -> None:
    """Overwrite a few random rows with the impossible values the real data also has (incl. a zip of another state)."""

    def rows(kind: str) -> np.ndarray:
        return rng.choice(n, size=min(n, rng.poisson(OUTLIERS_PER_100K[kind] * n / 100_000)), replace=False)

    replacements = {
        "price": [(rows("price_zero"), 0.0), (rows("price_tiny"), lambda k: rng.integers(1, 1000, k))],
        "bed": [(rows("bed"), lambda k: rng.choice([21.0, 28.0, 33.0, 42.0, 99.0], k))],
        "bath": [(rows("bath"), lambda k: rng.choice([24.0, 36.0, 64.0, 198.0], k))],
        "acre_lot": [(rows("acre"), lambda k: rng.choice([2500.0, 10_000.0, 100_000.0], k))],
        "house_size": [(rows("size"), lambda k: rng.integers(60_000, 700_000, k))],
        "zip_code": [(rows("zip"), lambda k: rng.choice(zips, k))],
    }
    for column, edits in replacements.items():
        values = columns[column].to_numpy(zero_copy_only=False).copy()
        for index, value in edits:
            values[index] = value(index.size) if callable(value) else value
        columns[column] = pa.array(values, type=pa.float64(), from_pandas=True)

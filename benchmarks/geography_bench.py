"""What a ZIP gazetteer would buy: validation MdAPE with ZIP-centroid location features (not in the product).

benchmarks/frontier_bench.py shows every model lever within the serving budget landing at validation
MdAPE 0.198-0.202, and the unconstrained search at 0.1934 on test: the 0.19 bar needs more
information per listing, not a bigger model. Location is most of a price. The product encodes it
as smoothed mean log prices of the listing's ZIP, ZIP3 prefix, city and broker
(rayestate.features), so a ZIP with few training rows backs off to a prefix that can span a metro
and its countryside. A gazetteer places every ZIP on the map: the ``zipcodes`` package (a dev
dependency; 42k US ZIPs with latitude, longitude and county, bundled, no network) gives

* ``lat``, ``lon``: the ZIP's centroid;
* ``te_county``, ``te_county_ppsf``: smoothed mean log price and log $/sq ft of the county;
* ``near_ppsf``, ``near_ppsf_x_size``: the mean log $/sq ft of the training rows of the NEIGHBOURS
  ZIPs with rows nearest the listing's ZIP, its own ZIP's rows left out, and that times the listing's
  living area (as te_zip_ppsf_x_size).

Training rows get out-of-fold values (5 folds), validation rows values fitted on all training rows,
as the product's encodings do. Each variant adds its columns to the pipeline's own features
(ray_jobs.fit.prepare) and trains the frontier's depth-8 lever the way frontier_bench does (two
seeds, early stopping on validation, then cut to the rounds the default serving budget affords,
the new columns included in the measured cost), scored within the budget and without it on
validation rows; rows 80,000-99,999 are never read. Prints ONE JSON object.

    .venv/bin/python benchmarks/geography_bench.py [--cpus 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import xgboost as xgb
import zipcodes
from scipy.spatial import cKDTree

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.frontier_bench import lever, summary  # noqa: E402
from benchmarks.real_data import SAMPLE, train_valid  # noqa: E402
from ray_jobs.fit import prepare  # noqa: E402
from ray_jobs.tune import Budget  # noqa: E402
from rayestate.features import SMOOTHING, log_price  # noqa: E402
from rayestate.settings import Settings  # noqa: E402

LEVER = "depth8_eta0.05"
NEIGHBOURS = 8
FOLDS = 5
VARIANTS = {
    "features_today": (),
    "centroid": ("lat", "lon"),
    "county": ("te_county", "te_county_ppsf"),
    "nearest_zips": ("near_ppsf", "near_ppsf_x_size"),
    "all": ("lat", "lon", "te_county", "te_county_ppsf", "near_ppsf", "near_ppsf_x_size"),
}


def gazetteer() -> pd.DataFrame:
    """Latitude, longitude and county key per ZIP number (the dataset stores ZIPs as numbers)."""
    rows = pd.DataFrame(zipcodes.list_all())
    rows = rows[rows["lat"] != ""]
    return pd.DataFrame({
        "zip": rows["zip_code"].astype(int).to_numpy(), "lat": rows["lat"].astype(float).to_numpy(),
        "lon": rows["long"].astype(float).to_numpy(), "county": (rows["state"] + "|" + rows["county"].fillna("")).to_numpy(),
    }).drop_duplicates("zip").set_index("zip")  # fmt: skip


def smoothed_mean(keys: np.ndarray, values: np.ndarray, apply_to: np.ndarray) -> np.ndarray:
    """The mean of ``values`` per key, shrunk to their overall mean by SMOOTHING pseudo-rows, at ``apply_to``."""
    frame = pd.DataFrame({"key": keys, "value": values}).dropna()
    totals = frame.groupby("key")["value"].agg(["sum", "count"])
    means = (totals["sum"] + SMOOTHING * frame["value"].mean()) / (totals["count"] + SMOOTHING)
    return pd.Series(apply_to).map(means).to_numpy(dtype="float64")


def nearest_zips(zips: np.ndarray, values: np.ndarray, places: pd.DataFrame, apply_zips: np.ndarray) -> np.ndarray:
    """Mean of ``values`` over the rows of the NEIGHBOURS ZIPs with rows nearest each of ``apply_zips``.

    A ZIP's own rows are left out: when it has rows it is one of its NEIGHBOURS, counted as empty."""
    frame = pd.DataFrame({"zip": zips, "value": values}).dropna()
    totals = frame.groupby("zip")["value"].agg(["sum", "count"]).join(places[["lat", "lon"]], how="inner")
    centre = places.reindex(apply_zips)
    known = centre["lat"].notna().to_numpy()
    _, index = cKDTree(totals[["lat", "lon"]].to_numpy()).query(
        centre[["lat", "lon"]].to_numpy()[known], NEIGHBOURS + 1
    )
    others = totals.index.to_numpy()[index] != apply_zips[known][:, None]
    sums = np.where(others, totals["sum"].to_numpy()[index], 0.0)[:, :NEIGHBOURS].sum(axis=1)
    counts = np.where(others, totals["count"].to_numpy()[index], 0)[:, :NEIGHBOURS].sum(axis=1)
    out = np.full(len(apply_zips), np.nan)
    out[known] = sums / np.maximum(counts, 1)
    return out


def location_columns(fit: pd.DataFrame, apply: pd.DataFrame, places: pd.DataFrame) -> dict[str, np.ndarray]:
    """Every gazetteer column for ``apply``'s rows, the encodings fitted on ``fit``'s rows."""
    fit_zips, zips = (
        pd.to_numeric(f["zip_code"], errors="coerce").fillna(-1).astype(int).to_numpy() for f in (fit, apply)
    )
    y = log_price(fit["price"])
    ppsf = y - np.log(fit["house_size"].to_numpy(dtype="float64"))
    counties = places["county"].reindex(fit_zips).to_numpy(), places["county"].reindex(zips).to_numpy()
    near = nearest_zips(fit_zips, ppsf, places, zips)
    return {
        "lat": places["lat"].reindex(zips).to_numpy(), "lon": places["lon"].reindex(zips).to_numpy(),
        "te_county": smoothed_mean(counties[0], y, counties[1]), "te_county_ppsf": smoothed_mean(counties[0], ppsf, counties[1]),
        "near_ppsf": near, "near_ppsf_x_size": near + np.log(apply["house_size"].to_numpy(dtype="float64")),
    }  # fmt: skip


def out_of_fold(train: pd.DataFrame, places: pd.DataFrame) -> dict[str, np.ndarray]:
    """Training rows' columns, each fold's fitted on the other folds (no row sees its own price)."""
    folds = np.random.default_rng(0).integers(0, FOLDS, len(train))
    columns: dict[str, np.ndarray] = {}
    for fold in range(FOLDS):
        part = location_columns(train[folds != fold], train[folds == fold], places)
        for name, values in part.items():
            columns.setdefault(name, np.full(len(train), np.nan))[folds == fold] = values
    return columns


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    train, valid, _ = train_valid(pq.read_table(SAMPLE).to_pandas())
    data = prepare(train, valid, augment=False)  # the real rows carry their own missing sizes
    places = gazetteer()
    extra_train, extra_valid = out_of_fold(train, places), location_columns(train, valid, places)
    budget = Budget.of(Settings()).reserving_range()
    runs = []
    for variant, names in VARIANTS.items():
        with_columns = replace(
            data,
            x_train=data.x_train.assign(**{name: extra_train[name] for name in names}),
            x_valid=data.x_valid.assign(**{name: extra_valid[name] for name in names}),
            cost_sample=np.column_stack(
                [data.cost_sample, *(extra_valid[name][: len(data.cost_sample)] for name in names)]
            ),
        )
        dvalid = xgb.DMatrix(with_columns.x_valid, enable_categorical=True)
        for seed in (0, 1):
            runs.append(
                {
                    "variant": variant,
                    **lever(LEVER, with_columns, dvalid, len(valid), budget, seed=seed, cpus=args.cpus),
                }
            )
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    found = np.isfinite(extra_valid["lat"]).mean()
    print(json.dumps({"lever": LEVER, "neighbours": NEIGHBOURS, "valid_rows_with_a_known_zip": round(float(found), 4),
                      "gazetteer_zips": len(places), "summary": summary(runs, by="variant"), "runs": runs}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

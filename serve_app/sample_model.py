"""A small champion built from synthetic listings, for tests, the benchmark and `serve run` demos.

The real pipeline trains and promotes champions with Ray jobs; serving only needs *a* model
behind the registry alias. This builds one in seconds with the same FeatureTransform, the
same booster type and the same MLflow logging code the pipeline uses, so what the Serve app
loads here is what it loads in production.
"""

from __future__ import annotations

from datetime import UTC, datetime

import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow.tracking import MlflowClient

from rayestate.features import FeatureTransform, log_price
from rayestate.mlflow_model import log_price_model
from rayestate.model import PriceModel
from rayestate.schema import RAW_COLUMNS

# state -> (price level, cities); each city gets a few zips and its own price level.
_MARKETS = {
    "California": (13.2, ("Los Angeles", "San Diego", "Fresno")),
    "Massachusetts": (12.9, ("Boston", "Worcester", "Springfield")),
    "Florida": (12.6, ("Tampa", "Miami", "Orlando")),
    "Texas": (12.4, ("Austin", "Houston", "El Paso")),
    "Ohio": (11.9, ("Columbus", "Dayton")),
    "Mississippi": (11.6, ("Jackson", "Biloxi")),
}


def synthetic_listings(n: int, *, seed: int = 0) -> pd.DataFrame:
    """Raw-schema listings (with price) whose price depends on size, rooms and location."""
    rng = np.random.default_rng(seed)
    cities = [(state, city, i) for i, (state, (_, names)) in enumerate(_MARKETS.items()) for city in names]
    pick = rng.integers(0, len(cities), n)
    state = np.array([cities[i][0] for i in pick], dtype=object)
    city = np.array([cities[i][1] for i in pick], dtype=object)
    state_level = np.array([_MARKETS[s][0] for s in state])
    city_level = (pick % 3 - 1) * 0.15
    zip_code = (10_000 + pick * 1_000 + rng.integers(0, 4, n) * 10).astype("float64")
    bed = rng.integers(1, 7, n).astype("float64")
    bath = np.clip(bed - rng.integers(0, 3, n), 1, None).astype("float64")
    house_size = np.round(bed * 450 + rng.normal(300, 200, n).clip(-200, None), 0)
    acre_lot = np.round(rng.lognormal(-1.5, 0.8, n), 3)
    sold_day = pd.Timestamp("1995-01-01") + pd.to_timedelta(rng.integers(0, 10_000, n), unit="D")
    prev_sold = np.where(rng.random(n) < 0.3, None, sold_day.strftime("%Y-%m-%d"))
    status = rng.choice(["for_sale", "sold", "ready_to_build"], n, p=[0.6, 0.37, 0.03])
    log_p = (
        state_level + city_level + 0.00035 * house_size + 0.04 * bath + 0.05 * np.log1p(acre_lot)
        + rng.normal(0, 0.15, n)
    )  # fmt: skip
    frame = pd.DataFrame(
        {
            "brokered_by": rng.integers(1, 60, n).astype("float64"),
            "status": status,
            "price": np.round(np.exp(log_p), -2),
            "bed": bed,
            "bath": bath,
            "acre_lot": acre_lot,
            "street": rng.integers(1, 1_000_000, n).astype("float64"),
            "city": city,
            "state": state,
            "zip_code": zip_code,
            "house_size": house_size,
            "prev_sold_date": prev_sold,
        }
    )
    return frame[list(RAW_COLUMNS)]


def train_price_model(frame: pd.DataFrame, *, rounds: int = 60, max_depth: int = 5, seed: int = 0) -> PriceModel:
    """Fit the feature transform and a small XGBoost booster on log price."""
    transform, features = FeatureTransform.fit_transform(frame, seed=seed)
    matrix = xgb.DMatrix(features, label=log_price(frame["price"]), enable_categorical=True)
    params = {"max_depth": max_depth, "eta": 0.15, "tree_method": "hist", "seed": seed, "nthread": 1}
    booster = xgb.train(params, matrix, num_boost_round=rounds)
    meta = {"trained_at": datetime.now(UTC).isoformat(), "rows": len(frame), "training_batches": ["sample"]}
    return PriceModel(boosters=[booster], transform=transform, meta=meta)


def register_champion(
    tracking_uri: str,
    model: PriceModel,
    example: pd.DataFrame,
    *,
    name: str,
    alias: str = "champion",
    experiment: str = "rayestate-serve-sample",
    tags: dict[str, str] | None = None,
) -> str:
    """Log the model in a run, register it under `name`, point `alias` at it; returns the version."""
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        mlflow.set_experiment(experiment)
        with mlflow.start_run(run_name=f"{name}-sample"):
            mlflow.log_params({"rows": model.meta.get("rows"), "source": "synthetic sample"})
            mlflow.log_metric("val_mdape", 0.12)
            info = log_price_model(model, example.drop(columns=["price"], errors="ignore"))
        version = mlflow.register_model(info.model_uri, name).version
    finally:
        mlflow.set_tracking_uri(previous_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    for key, value in (tags or {"decision": "promoted", "reason": "sample champion"}).items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, alias, version)
    return str(version)

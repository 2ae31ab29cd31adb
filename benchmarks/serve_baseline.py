"""The original design, measured as the baseline: one uvicorn process, the champion in-process.

Same champion (loaded by alias from the same MLflow), same pydantic validation of each
listing, one model call per request; explanations build a ``shap.TreeExplainer`` on demand,
as the original design did. XGBoost runs on one thread, like each Serve replica, which is the
baseline's best setting on a busy 2-core machine. Run by benchmarks/serve_bench.py:

    RAYESTATE_MLFLOW_TRACKING_URI=... RAYESTATE_MODEL_NAME=... uvicorn benchmarks.serve_baseline:app
"""

from __future__ import annotations

import numpy as np
import shap
import xgboost as xgb
from fastapi import FastAPI
from mlflow.tracking import MlflowClient

from rayestate.model import listings_frame
from rayestate.model_io import load_model_by_alias
from rayestate.schema import Listing
from rayestate.settings import load_settings
from serve_app.contract import BatchRequest, validate_listings

settings = load_settings()
champion = load_model_by_alias(
    MlflowClient(tracking_uri=settings.mlflow_tracking_uri), settings.model_name, settings.model_alias
)
model = champion.model
for booster in model.boosters:
    booster.set_param({"nthread": 1})
app = FastAPI(title="baseline: single-process FastAPI + uvicorn")


@app.post("/predict")
async def predict(listing: Listing) -> dict:
    with xgb.config_context(nthread=1):
        price = model.predict(listings_frame([listing.to_raw_row()]))[0]
    return {"price": float(price), "model_version": champion.version}


@app.post("/predict/batch")
async def predict_batch(body: BatchRequest) -> dict:
    good, errors = validate_listings(body.listings)
    prices: list[float | None] = [None] * len(body.listings)
    if good:
        with xgb.config_context(nthread=1):
            values = model.predict(listings_frame([listing.to_raw_row() for _, listing in good]))
        for (index, _), price in zip(good, values, strict=True):
            prices[index] = float(price)
    return {"prices": prices, "errors": errors, "model_version": champion.version}


@app.post("/explain")
async def explain(listing: Listing) -> dict:
    with xgb.config_context(nthread=1):
        features = model.features(listings_frame([listing.to_raw_row()]))
        matrix = xgb.DMatrix(features, enable_categorical=True)
        explainers = [shap.TreeExplainer(booster) for booster in model.boosters]  # a bag averages its members
        values = np.mean([explainer.shap_values(matrix)[0] for explainer in explainers], axis=0)
    base = float(np.mean([np.ravel(explainer.expected_value)[0] for explainer in explainers]))
    return {
        "price": float(np.exp(base + values.sum())),
        "base_value": base,
        "contributions": [
            {"feature": name, "shap": float(value)} for name, value in zip(features.columns, values, strict=True)
        ],
        "model_version": champion.version,
    }

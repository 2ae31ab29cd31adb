"""Which lever buys accuracy within the serving budget: the frontier, measured on validation rows only.

The serving budget (Settings.explain_budget_ms, predict_budget_us) limits how many trees a model may
keep. This trains one booster (or a bag) per lever the way a Tune trial does (ray_jobs.fit.prepare
and train_booster: the pipeline's features, masked copies, early stopping on validation), then cuts
it to the rounds the default budget affords (ray_jobs.serving_cost.trees_within, with the margin and
the price range's reserve of ray_jobs.tune.Budget) and scores its best prefix within them
(ray_jobs.tune.best_prefix), as the budgeted search would. Each lever is also scored without the
budget (all rounds up to early stopping), so the price of the budget shows per lever.

Levers: depth at its learning rate (the search's own region, depth 5-8, and depth 10), leaf limits
(``grow_policy=lossguide`` with ``max_leaves``), the learning rate at depth 8, and a bag of two. The
base config is the search's first point (ray_jobs.fit.DEFAULT_CONFIG). Data: rows 0-79,999 of the
real sample, cleaned and hash-split as every benchmark does (benchmarks/real_data.py); MdAPE and R²
(log) are on the real validation rows (masked copies left out). Rows 80,000-99,999 are not read.
Prints ONE JSON object.

    .venv/bin/python benchmarks/frontier_bench.py [--seeds 2] [--cpus 2] [--only dw8,lg64]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import xgboost as xgb

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.real_data import SAMPLE, train_valid  # noqa: E402
from ray_jobs.fit import DEFAULT_CONFIG, TrainingData, prepare, train_booster, xgb_params  # noqa: E402
from ray_jobs.serving_cost import measure, trees_within  # noqa: E402
from ray_jobs.tune import MAX_ROUNDS, Budget, best_prefix  # noqa: E402
from rayestate.settings import Settings  # noqa: E402

_LOSSGUIDE = {"grow_policy": "lossguide", "max_depth": 0}
#: name -> (config changes on DEFAULT_CONFIG, bag size).
LEVERS: dict[str, tuple[dict, int]] = {
    "depth5_eta0.1": ({"max_depth": 5, "eta": 0.1}, 1),
    "depth6_eta0.1": ({"max_depth": 6, "eta": 0.1}, 1),
    "depth7_eta0.08": ({"max_depth": 7, "eta": 0.08}, 1),
    "depth8_eta0.05": ({"max_depth": 8, "eta": 0.05}, 1),
    "depth8_eta0.1": ({"max_depth": 8, "eta": 0.1}, 1),
    "depth10_eta0.05": ({"max_depth": 10, "eta": 0.05}, 1),
    "leaves32_eta0.05": ({**_LOSSGUIDE, "max_leaves": 32, "eta": 0.05}, 1),
    "leaves64_eta0.05": ({**_LOSSGUIDE, "max_leaves": 64, "eta": 0.05}, 1),
    "leaves128_eta0.05": ({**_LOSSGUIDE, "max_leaves": 128, "eta": 0.05}, 1),
    "leaves256_depth10_eta0.05": ({**_LOSSGUIDE, "max_depth": 10, "max_leaves": 256, "eta": 0.05}, 1),
    "bag2_depth8_eta0.05": ({"max_depth": 8, "eta": 0.05}, 2),
}


def scored(bag: list[xgb.Booster], dvalid: xgb.DMatrix, y: np.ndarray, real: int, rounds: int) -> dict:
    """MdAPE and R² (log) of the bag's first ``rounds`` rounds on the first ``real`` validation rows."""
    predicted = np.mean([b.predict(dvalid, iteration_range=(0, rounds)) for b in bag], axis=0)[:real]
    truth = y[:real]
    return {
        "mdape": round(float(np.median(np.abs(np.expm1(predicted - truth)))), 4),
        "r2_log": round(float(1 - np.mean((truth - predicted) ** 2) / np.var(truth)), 4),
    }


def lever(
    name: str, data: TrainingData, dvalid: xgb.DMatrix, real: int, budget: Budget, *, seed: int, cpus: int
) -> dict:
    """Train lever ``name`` on ``data`` as a Tune trial would, and score it within ``budget`` and without it.

    ``dvalid`` is ``data.x_valid`` as a DMatrix; its first ``real`` rows are the real validation rows.
    """
    changes, size = LEVERS[name]
    params = xgb_params({**DEFAULT_CONFIG, **changes}, data.y_train, nthread=cpus, seed=seed)
    started = time.monotonic()
    bag = [
        train_booster({**params, "seed": seed + i}, data.x_train, data.y_train, rounds=MAX_ROUNDS,
                      valid=(data.x_valid, data.y_valid))
        for i in range(size)
    ]  # fmt: skip
    seconds = time.monotonic() - started
    trained = min(b.best_iteration + 1 for b in bag)
    affordable, _ = trees_within(
        bag, data.cost_sample, explain_budget_ms=budget.explain_ms, predict_budget_us=budget.predict_us
    )
    rounds, _ = best_prefix(bag, dvalid, data.y_valid, min(affordable, trained))
    cost = measure(bag, data.cost_sample, trees=rounds)
    return {
        "lever": name, "seed": seed, "bag_size": size, "train_seconds": round(seconds, 1),
        "budgeted": {"rounds": rounds, "affordable_rounds": affordable, **scored(bag, dvalid, data.y_valid, real, rounds),
                     "explain_ms_per_row": cost.explain_ms_per_row, "predict_us_per_row": cost.predict_us_per_row},
        "unbudgeted": {"rounds": trained, **scored(bag, dvalid, data.y_valid, real, trained)},
    }  # fmt: skip


def summary(runs: list[dict], by: str = "lever") -> list[dict]:
    """Per lever (or other ``by`` key of the runs), the mean over seeds, best budgeted MdAPE first."""
    rows = []
    for name in dict.fromkeys(run[by] for run in runs):
        mine = [run for run in runs if run[by] == name]

        def mean(part: str, key: str, runs=mine) -> float:
            return round(float(np.mean([run[part][key] for run in runs])), 4)

        rows.append({
            by: name, "mdape": mean("budgeted", "mdape"), "r2_log": mean("budgeted", "r2_log"),
            "rounds": mean("budgeted", "rounds"), "explain_ms_per_row": mean("budgeted", "explain_ms_per_row"),
            "predict_us_per_row": mean("budgeted", "predict_us_per_row"),
            "unbudgeted_mdape": mean("unbudgeted", "mdape"), "unbudgeted_rounds": mean("unbudgeted", "rounds"),
        })  # fmt: skip
    return sorted(rows, key=lambda row: row["mdape"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2, help="seeds per lever (Tune's spread is ~±0.003 MdAPE)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--only", default="", help="comma-separated lever names (default: all)")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(LEVERS)
    if unknown := set(names) - set(LEVERS):
        parser.error(f"unknown levers {sorted(unknown)}; choose from {sorted(LEVERS)}")
    train, valid, _ = train_valid(pq.read_table(SAMPLE).to_pandas())
    data = prepare(train, valid)
    dvalid = xgb.DMatrix(data.x_valid, enable_categorical=True)
    budget = Budget.of(Settings()).reserving_range()
    runs = []
    for name in names:
        for seed in range(args.seeds):
            runs.append(lever(name, data, dvalid, len(valid), budget, seed=seed, cpus=args.cpus))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    print(json.dumps({
        "budget": {"explain_ms_per_row": budget.explain_ms, "predict_us_per_row": budget.predict_us},
        "rows": {"train": len(data.x_train), "valid": len(data.x_valid), "valid_real": len(valid)},
        "base_config": DEFAULT_CONFIG, "seeds": args.seeds, "frontier": summary(runs), "runs": runs,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Listings without sizes: what masked copies (ray_jobs.augment) buy when training rows are complete.

The course API serves complete rows only, while 39% of real listings lack a size. This trains the
same model three ways on rows 0-79,999 of the real sample (cleaned by the pipeline's rules, hash
split 85/15 into train/validation, early stopping on validation):

* ``complete_rows``: only the complete rows, as the course API would deliver them, no copies;
* ``complete_rows_augmented``: the same rows plus masked copies (what the pipeline does);
* ``all_rows``: every row, missing sizes included (what training on the dataset itself sees).

and reports MdAPE and R² (log) on rows 80,000-99,999 (valid price), for rows with a missing size,
complete rows and all. Prints ONE JSON object.

    .venv/bin/python benchmarks/missing_bench.py [--cpus 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.real_data import SAMPLE, TRAIN_ROWS, held_out_rows, train_valid  # noqa: E402
from ray_jobs.evaluate import evaluate  # noqa: E402
from ray_jobs.fit import prepare, refit, train_booster, xgb_params  # noqa: E402
from rayestate.schema import SIZE_FIELDS  # noqa: E402

#: A mid-sized config of the search space (the point is the comparison, not the last 0.001 of MdAPE).
CONFIG = {"eta": 0.08, "max_depth": 8, "min_child_weight": 20.0, "subsample": 0.8, "colsample_bytree": 0.6,
          "objective": "reg:absoluteerror"}  # fmt: skip


def fit(train: pd.DataFrame, valid: pd.DataFrame, *, augment: bool, cpus: int) -> tuple:
    started = time.monotonic()
    data = prepare(train, valid, seed=42, augment=augment)
    params = xgb_params(CONFIG, data.y_train, nthread=cpus, seed=42)
    booster = train_booster(params, data.x_train, data.y_train, rounds=3000, valid=(data.x_valid, data.y_valid))
    rounds = booster.best_iteration + 1
    model = refit(pd.concat([train, valid]), params, rounds, seed=42, nthread=cpus, augment=augment)
    return model, {"rounds": rounds, "masked_copies": model.meta["masked_copies"],
                   "seconds": round(time.monotonic() - started, 1)}  # fmt: skip


def scores(model, test: pd.DataFrame) -> dict:
    missing = test[list(SIZE_FIELDS)].isna().any(axis=1).to_numpy()
    out = {}
    for name, rows in (("missing_fields", missing), ("complete", ~missing), ("all", np.ones(len(test), bool))):
        metrics = evaluate(model, test[rows])
        out[name] = {
            "rows": int(rows.sum()),
            "mdape": round(metrics["mdape"], 4),
            "r2_log": round(metrics["r2_log"], 4),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    raw = pq.read_table(SAMPLE).to_pandas()
    train, valid, _ = train_valid(raw)
    test, _ = held_out_rows(raw)

    def complete(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame[list(SIZE_FIELDS)].notna().all(axis=1)]

    report = {"train_rows_all": len(train), "train_rows_complete": len(complete(train)), "config": CONFIG}
    for name, (tr, va, augment) in {
        "complete_rows": (complete(train), complete(valid), False),
        "complete_rows_augmented": (complete(train), complete(valid), True),
        "all_rows": (train, valid, True),
    }.items():
        model, info = fit(tr, va, augment=augment, cpus=args.cpus)
        report[name] = {**info, **scores(model, test)}
        print(f"{name}: {report[name]}", file=sys.stderr, flush=True)
    report["train_rows"] = TRAIN_ROWS
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

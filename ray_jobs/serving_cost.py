"""What a model costs to serve, measured: exact TreeSHAP milliseconds and prediction microseconds per row.

Serving cost is part of choosing the model, as accuracy is (Settings.explain_budget_ms and
predict_budget_us). Both are XGBoost's own time on the boosters (the feature transform excluded,
it is the same for every model), at one thread, summed over a bag's members, on a fixed sample of
validation rows. Time is the calling thread's CPU time (XGBoost at one thread computes in the
calling thread), the minimum over a few repeats: the other Tune trial, Ray and anything else on
the machine then barely move it, where wall-clock time on a busy 2-core box doubles.

A booster's first k trees are a model of their own (``iteration_range``), and both costs grow with
the trees: :func:`trees_within` finds the longest prefix within the budget.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import xgboost as xgb

from rayestate.interval import scale_inputs
from rayestate.model import PriceModel

EXPLAIN_ROWS = 32
PREDICT_ROWS = 1_000
REPEATS = 3


@dataclass(frozen=True)
class ServingCost:
    explain_ms_per_row: float
    predict_us_per_row: float  # the price range's scale model included
    trees: int
    range_predict_us_per_row: float = 0.0  # the scale model's share of predict_us_per_row

    def within(self, explain_budget_ms: float, predict_budget_us: float) -> bool:
        return self.explain_ms_per_row <= explain_budget_ms and self.predict_us_per_row <= predict_budget_us

    def as_metrics(self, prefix: str = "serving_cost.") -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in asdict(self).items()}


def _cpu_seconds(call, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        started = time.thread_time()
        call()
        best = min(best, time.thread_time() - started)
    return best


def measure(boosters: list[xgb.Booster], sample: np.ndarray, *, trees: int | None = None) -> ServingCost:
    """The cost of the boosters' first ``trees`` rounds each (all of them by default) on ``sample`` rows.

    ``sample`` is a feature matrix in the boosters' column order (rows x FEATURES for the product's
    boosters, as rayestate.features.FeatureTransform.matrix gives it); its first EXPLAIN_ROWS rows
    are explained, its first PREDICT_ROWS rows predicted. The rows are typed as the boosters were
    trained, which for the product's is rayestate.model.feature_dmatrix, as serving types them: a
    benchmark's candidate columns (benchmarks/geography_bench.py) are then measured the same way.
    """
    explain_rows, predict_rows = sample[:EXPLAIN_ROWS], sample[:PREDICT_ROWS]
    first = boosters[0]
    dmatrix = xgb.DMatrix(
        explain_rows, feature_names=first.feature_names, feature_types=first.feature_types, enable_categorical=True
    )
    explain_s = predict_s = 0.0
    counted = 0
    with xgb.config_context(nthread=1):
        for booster in boosters:
            rounds = booster.num_boosted_rounds() if trees is None else min(trees, booster.num_boosted_rounds())
            window = (0, rounds)
            counted += rounds
            explain_s += _cpu_seconds(
                lambda b=booster, w=window: b.predict(dmatrix, pred_contribs=True, iteration_range=w), REPEATS
            )
            predict_s += _cpu_seconds(
                lambda b=booster, w=window: b.inplace_predict(predict_rows, iteration_range=w, validate_features=False),
                REPEATS,
            )
    return ServingCost(
        explain_ms_per_row=round(1000 * explain_s / len(explain_rows), 4),
        predict_us_per_row=round(1e6 * predict_s / len(predict_rows), 3),
        trees=counted,
    )


def trees_within(
    boosters: list[xgb.Booster], sample: np.ndarray, *, explain_budget_ms: float, predict_budget_us: float
) -> tuple[int, ServingCost]:
    """The most rounds per booster (a prefix of each) whose cost fits both budgets, and that cost.

    Costs grow about linearly with the rounds kept, so the first guess scales the full model's cost
    down to the budget; each further guess rescales from the last measurement, and a prefix is only
    accepted once measured within budget. Returns (0, cost of one round) when not even one fits.
    """
    rounds = min(b.num_boosted_rounds() for b in boosters)
    cost = measure(boosters, sample, trees=rounds)
    for _ in range(8):
        if cost.within(explain_budget_ms, predict_budget_us):
            return rounds, cost
        if rounds == 1:
            break
        scale = min(explain_budget_ms / cost.explain_ms_per_row, predict_budget_us / cost.predict_us_per_row)
        rounds = min(rounds - 1, max(1, math.floor(rounds * scale * 0.98)))
        cost = measure(boosters, sample, trees=rounds)
    return (rounds, cost) if cost.within(explain_budget_ms, predict_budget_us) else (0, cost)


def measure_model(model: PriceModel, sample: np.ndarray) -> ServingCost:
    """What a whole model costs per row: its boosters, and for prediction its price range's scale model too."""
    cost = measure(model.boosters, sample)
    if model.interval is None:
        return cost
    rows = sample[:PREDICT_ROWS]
    inputs = scale_inputs(rows, np.ones(len(rows), bool), np.ones(len(rows), bool), np.zeros(len(rows)))
    with xgb.config_context(nthread=1):
        seconds = _cpu_seconds(lambda: model.interval.scale.inplace_predict(inputs, validate_features=False), REPEATS)
    range_us = round(1e6 * seconds / len(rows), 3)
    return replace(
        cost, predict_us_per_row=round(cost.predict_us_per_row + range_us, 3), range_predict_us_per_row=range_us
    )


def within_budget(model: PriceModel, sample: np.ndarray, *, explain_budget_ms: float, predict_budget_us: float):
    """The model cut to the longest prefix of its boosters that fits the budget, and its measured cost.

    A refit on more rows grows slightly bigger trees than the trial that chose its rounds: this
    keeps the served model within budget anyway (usually by cutting nothing). The price range's
    scale model counts in the prediction budget; the boosters get what it leaves.
    """
    cost = measure_model(model, sample)
    if cost.within(explain_budget_ms, predict_budget_us):
        return model, cost
    rounds, boosters_cost = trees_within(
        model.boosters, sample, explain_budget_ms=explain_budget_ms,
        predict_budget_us=predict_budget_us - cost.range_predict_us_per_row,
    )  # fmt: skip
    if rounds == 0:
        raise ValueError(f"not even one round of this model fits the serving budget ({cost})")
    boosters = [booster[:rounds] for booster in model.boosters]
    meta = {**model.meta, "rounds": rounds, "cut_to_budget_from": model.boosters[0].num_boosted_rounds()}
    # The cut's cost as measured when it was accepted (within budget), plus the range model's share.
    total = round(boosters_cost.predict_us_per_row + cost.range_predict_us_per_row, 3)
    return replace(model, boosters=boosters, meta=meta), replace(
        boosters_cost, predict_us_per_row=total, range_predict_us_per_row=cost.range_predict_us_per_row
    )

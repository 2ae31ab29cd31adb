"""The price range's scale model stays a bounded share of the serving budget, whatever the rows."""

from __future__ import annotations

import itertools

import numpy as np

from ray_jobs.calibrate import SCALE_MAX_ROUNDS, fit_scale
from rayestate.features import FEATURES
from rayestate.interval import EXTRA_INPUTS
from rayestate.model import FEATURE_TYPES


def test_the_scale_model_stops_at_its_round_cap_on_a_signal_it_could_learn_for_longer():
    rng = np.random.default_rng(3)
    rows = 60_000
    inputs = rng.normal(size=(rows, len(FEATURES) + len(EXTRA_INPUTS)))
    for i, kind in enumerate(FEATURE_TYPES):
        if kind == "c":
            inputs[:, i] = rng.integers(0, 3, rows)  # category codes
    floats = [i for i, kind in enumerate(FEATURE_TYPES) if kind != "c"] + [inputs.shape[1] - 1]
    signal = sum(np.sin(2 * inputs[:, i]) * inputs[:, j] for i, j in itertools.pairwise(floats))  # many rounds' worth
    residuals = np.exp(signal) * rng.choice([-1.0, 1.0], rows) * rng.uniform(0.99, 1.01, rows)
    booster = fit_scale(inputs, residuals, seed=0, nthread=1)
    assert booster.num_boosted_rounds() == SCALE_MAX_ROUNDS <= 200  # ~5 µs/row: a fifth of the default budget

"""predict_dense is inplace_predict without the wrapper: the same C call, so the same bits."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import xgboost as xgb

from rayestate.dense_predict import predict_dense


@pytest.fixture(scope="module")
def booster_and_rows():
    """A booster with a native categorical column and NaN in every column, as the served models have."""
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(4000, 5))
    rows[:, 2] = rng.integers(0, 6, size=len(rows))  # a category code
    target = rows[:, 0] + np.where(rows[:, 2] % 2 == 0, 1.0, -1.0) + rng.normal(scale=0.1, size=len(rows))
    rows[rng.random(rows.shape) < 0.2] = np.nan
    train = xgb.DMatrix(rows, target, feature_types=["float", "float", "c", "float", "float"], enable_categorical=True)
    booster = xgb.train({"max_depth": 6, "eta": 0.3, "nthread": 1}, train, 40)
    return booster, rows


@pytest.mark.parametrize("count", [1, 7, 4000])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_predict_dense_gives_inplace_predicts_bits(booster_and_rows, count, dtype):
    booster, rows = booster_and_rows
    matrix = np.ascontiguousarray(rows[:count], dtype=dtype)
    ours = predict_dense(booster, matrix)
    theirs = booster.inplace_predict(matrix, validate_features=False)
    assert ours.dtype == theirs.dtype == np.float32
    assert ours.tobytes() == theirs.tobytes()
    assert np.isfinite(ours).all()  # NaN inputs are missing values, routed by the trees


def test_predict_dense_keeps_its_output_when_the_booster_predicts_again(booster_and_rows):
    """XGBoost reuses its output buffer on the next call: the result must be a copy."""
    booster, rows = booster_and_rows
    first = predict_dense(booster, rows[:3].copy())
    kept = first.copy()
    predict_dense(booster, rows[100:103].copy())
    assert first.tobytes() == kept.tobytes()


def test_predict_dense_is_right_from_many_threads_at_once(booster_and_rows):
    """Each thread has its own proxy DMatrix: concurrent calls never see each other's rows."""
    booster, rows = booster_and_rows
    chunks = [np.ascontiguousarray(rows[i : i + 1 + i % 9]) for i in range(0, 400)]
    expected = [booster.inplace_predict(chunk, validate_features=False).tobytes() for chunk in chunks]
    with ThreadPoolExecutor(max_workers=6) as pool:
        for _ in range(3):
            got = list(pool.map(lambda chunk: predict_dense(booster, chunk).tobytes(), chunks))
            assert got == expected


def test_predict_dense_names_what_is_wrong_with_its_input(booster_and_rows):
    booster, rows = booster_and_rows
    with pytest.raises(TypeError, match="C-contiguous 2-D float matrix"):
        predict_dense(booster, rows[:3, ::2])
    with pytest.raises(TypeError, match="C-contiguous 2-D float matrix"):
        predict_dense(booster, rows[:3].astype(object))
    with pytest.raises(xgb.core.XGBoostError):  # XGBoost's own message: the column count does not match
        predict_dense(booster, np.zeros((2, 9)))
    assert predict_dense(booster, rows[:0].copy()).shape == (0,)

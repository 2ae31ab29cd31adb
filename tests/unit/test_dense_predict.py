"""predict_dense is inplace_predict without the wrapper: the same bits, for a batch or one row.

A batch takes the same C call; one row takes the leaf sum (each tree's leaf from Treelite, summed in
tree order), which must give the block kernel's bits for every row, or not be used.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from rayestate import dense_predict
from rayestate.dense_predict import predict_dense, predict_each


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
    for rows_of_nine in (np.zeros((2, 9)), np.zeros((1, 9))):  # a batch, and one row (the leaf sum's road)
        with pytest.raises(xgb.core.XGBoostError):  # XGBoost's own message: the column count does not match
            predict_dense(booster, rows_of_nine)
    assert predict_dense(booster, rows[:0].copy()).shape == (0,)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_one_row_is_the_leaf_sum_with_the_block_kernels_bits_for_every_row(booster_and_rows, dtype):
    """Each row alone gives the bits the whole batch gives it, unseen category codes included."""
    booster, rows = booster_and_rows
    rows = rows.copy()
    rows[::50, 2] = 9  # a category code the trees never saw
    matrix = np.ascontiguousarray(rows, dtype=dtype)
    batch = booster.inplace_predict(matrix, validate_features=False)
    alone = np.concatenate([predict_dense(booster, matrix[i : i + 1]) for i in range(len(matrix))])
    assert dense_predict._leaf_sums[booster] is not None  # the leaf sum served them, not the block kernel
    assert alone.dtype == np.float32
    assert alone.tobytes() == batch.tobytes()


def test_a_booster_trained_on_a_frames_categories_takes_the_leaf_sum_with_the_same_bits(booster_and_rows):
    """Trained on a data frame, XGBoost keeps the categories' encoder in the model (Treelite refuses such a
    model as it is): the leaf sum converts it without the encoder, as it is given codes, and gets the bits."""
    _, rows = booster_and_rows
    frame = pd.DataFrame(rows, columns=list("abcde"))
    frame["c"] = pd.Categorical(np.nan_to_num(rows[:, 2], nan=-1).astype(int).astype(str))
    booster = xgb.train(
        {"max_depth": 5, "nthread": 1}, xgb.DMatrix(frame, np.nan_to_num(rows[:, 0]), enable_categorical=True), 20
    )
    assert json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]["model"]["cats"]["enc"]
    codes = frame.assign(c=frame["c"].cat.codes.astype(float)).to_numpy()
    alone = np.concatenate([predict_dense(booster, np.ascontiguousarray(codes[i : i + 1])) for i in range(300)])
    assert dense_predict._leaf_sums[booster] is not None
    assert alone.tobytes() == booster.inplace_predict(codes[:300], validate_features=False).tobytes()


def test_a_booster_whose_output_is_not_the_leaf_sum_keeps_the_block_kernel(booster_and_rows):
    """A logistic model's output is the sigmoid of the sum: its probe row tells, and one row stays right."""
    _, rows = booster_and_rows
    features = np.nan_to_num(rows[:, [0, 1, 3]])
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgb.DMatrix(features, (features[:, 0] > 0).astype(float)),
        10,
    )
    one = np.ascontiguousarray(features[:1])
    assert predict_dense(booster, one).tobytes() == booster.inplace_predict(one, validate_features=False).tobytes()
    assert dense_predict._leaf_sums[booster] is None


def test_a_bag_shares_one_row_and_each_booster_gives_its_own_bits(booster_and_rows):
    """predict_each: a bag of boosters on one matrix, leaf sums and the block kernel mixed, one row or many."""
    booster, rows = booster_and_rows
    train = xgb.DMatrix(
        rows,
        np.nan_to_num(rows[:, 1]),
        feature_types=["float", "float", "c", "float", "float"],
        enable_categorical=True,
    )
    other = xgb.train({"max_depth": 4, "eta": 0.3, "nthread": 1, "seed": 7}, train, 25)
    logistic = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgb.DMatrix(np.nan_to_num(rows), (np.nan_to_num(rows[:, 0]) > 0).astype(float)),
        10,
    )
    bag = [booster, other, logistic]
    for count in (1, 1, 5):  # the second one-row call finds the tables built
        for start in (0, 17, 3001):
            matrix = np.ascontiguousarray(rows[start : start + count])
            got = predict_each(bag, matrix)
            want = [b.inplace_predict(matrix, validate_features=False) for b in bag]
            assert [g.tobytes() for g in got] == [w.tobytes() for w in want]
    assert [dense_predict._leaf_sums[b] is not None for b in bag] == [True, True, False]
    assert [len(p) for p in predict_each(bag, rows[:0].copy())] == [0, 0, 0]

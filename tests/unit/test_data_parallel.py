"""The pure pieces of the data-parallel path: sums that add up, per-row folds, per-block features, stage timing.

What makes training data-parallel without changing the model: the transform fitted from sums of
any split of the rows is the transform fitted on all of them, and a block's out-of-fold features
are the rows' features in a one-process fit with the same folds.
"""

import time

import numpy as np
import pandas as pd
import pytest

from ray_jobs import stages
from ray_jobs.data_parallel import (
    DRAW_COLUMN,
    FOLD_COLUMN,
    LABEL,
    SPLIT_COLUMN,
    FittedTransform,
    _block_stats,
    _rows_of,
    feature_block,
    tag_rows,
)
from ray_jobs.split import assign_splits, draws, row_keys
from rayestate.devstack.synthetic import generate_listings
from rayestate.features import FEATURES, OOF_FOLDS, STATS_COLUMNS, FeatureTransform, frame_matrix


def _summed(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Block stats added up, as Ray Data's groupby-sum adds them."""
    keys = list(STATS_COLUMNS[:4])
    return pd.concat(frames).groupby(keys, as_index=False)[["sum", "count"]].sum()


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return tag_rows(generate_listings(6_000, seed=11))


def test_transform_from_summed_block_stats_is_the_transform_of_all_rows(rows):
    blocks = [rows.iloc[start : start + 1_000] for start in range(0, len(rows), 1_000)]
    summed = _summed([_block_stats(block) for block in blocks])
    from_blocks = FeatureTransform.from_stats(summed)
    whole = FeatureTransform.fit(rows)
    assert from_blocks.target_means == pytest.approx(whole.target_means)
    assert from_blocks.encodings.keys() == whole.encodings.keys()
    for name, mapping in whole.encodings.items():
        assert from_blocks.encodings[name].keys() == mapping.keys(), name
        np.testing.assert_allclose(
            [from_blocks.encodings[name][k] for k in mapping], list(mapping.values()), rtol=1e-12, err_msg=name
        )


def test_block_features_are_the_one_process_out_of_fold_features(rows):
    # fit_transform draws its folds by position; given the same folds, a block gets the same features.
    folds = np.random.default_rng(3).integers(0, OOF_FOLDS, len(rows))
    _, one_process = FeatureTransform.fit_transform(rows, seed=3)
    tagged_rows = rows.assign(**{FOLD_COLUMN: folds})
    fitted = FittedTransform.of(_summed([_block_stats(tagged_rows)]))
    block = feature_block(tagged_rows, fitted, augment=False, seed=0)
    matrix = np.column_stack([block[name] for name in FEATURES])
    expected = frame_matrix(one_process)
    expected[~np.isfinite(expected)] = np.nan
    np.testing.assert_allclose(matrix, expected.astype("float32"), rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(block[LABEL], np.log(rows["price"]).astype("float32"), rtol=1e-6)


def test_out_of_fold_encodings_never_see_the_rows_own_fold(rows):
    stats = _summed([_block_stats(rows)])
    partials = FeatureTransform.out_of_fold_partials(stats)
    assert len(partials) == OOF_FOLDS and all(p is not None for p in partials)
    # A ZIP whose rows all sit in one fold is unseen by that fold's partial: its rows fall back to the ZIP area.
    zips = rows["zip_code"].map(lambda z: f"{int(z):05d}" if z == z else None)
    single = rows.assign(zip=zips).groupby("zip")[FOLD_COLUMN].nunique()
    lonely = single[single == 1].index[0]
    fold = int(rows.loc[zips == lonely, FOLD_COLUMN].iloc[0])
    assert lonely in FeatureTransform.from_stats(stats).encodings["zip"]
    assert lonely not in partials[fold].encodings["zip"]


def test_masked_copies_are_added_per_block():
    complete = tag_rows(generate_listings(2_000, seed=5).dropna(subset=["bed", "bath", "acre_lot", "house_size"]))
    fitted = FittedTransform.of(_summed([_block_stats(complete)]))
    block = feature_block(complete, fitted, augment=True, seed=1)
    assert len(block[LABEL]) > len(complete)  # complete rows get masked copies, as in one process
    again = feature_block(complete, fitted, augment=True, seed=1)
    np.testing.assert_array_equal(block[LABEL], again[LABEL])  # the block's seed comes from its rows


def test_row_tags_are_pure_functions_of_the_row(rows):
    split, fold, draw = draws(row_keys(rows))
    np.testing.assert_array_equal(rows[SPLIT_COLUMN].to_numpy(), assign_splits(rows))
    assert set(np.unique(fold)) == set(range(OOF_FOLDS))
    assert draw.min() >= 0 and draw.max() < 1
    assert abs(np.corrcoef(split, draw)[0, 1]) < 0.05  # independent digits of the hash
    shuffled = tag_rows(rows.sample(frac=1.0, random_state=1)[rows.columns[:12]])
    pd.testing.assert_frame_equal(shuffled.sort_index(), rows.sort_index())


def test_samples_take_their_splits_below_the_draw(rows):
    picked = _rows_of(rows, ("train", "valid"), 0.25)
    assert set(picked[SPLIT_COLUMN]) == {"train", "valid"}
    assert (picked[DRAW_COLUMN] < 0.25).all()
    share = len(picked) / (rows[SPLIT_COLUMN].isin(["train", "valid"])).sum()
    assert 0.2 < share < 0.3


def test_stage_timings_add_up_in_pipeline_order():
    stages.reset()
    with stages.stage("fit"):
        time.sleep(0.05)
    with stages.stage("ingest"):
        pass
    with stages.stage("fit"):
        time.sleep(0.05)
    timings = stages.seconds()
    assert list(timings) == ["ingest", "fit"]
    assert timings["fit"] >= 0.1
    with pytest.raises(ValueError, match="unknown pipeline stage"), stages.stage("training"):
        pass
    stages.reset()
    assert stages.seconds() == {}

"""A booster's prediction on a float matrix through XGBoost's C API, without the Python wrapper's fixed cost.

``Booster.inplace_predict`` on a numpy matrix ends in one C call, ``XGBoosterPredictFromDense``. Around
it, xgboost 3.2's Python wrapper spends a fixed ~0.07 ms per call on a quiet machine (one row of a
one-tree model: 0.13 ms through the wrapper, 0.07 ms for the call alone), more under load: it rebuilds
the call's JSON config, type-checks the input against every frame library, and builds a new ctypes
array class for the output. Pricing one listing makes one call per booster of the bag and one for the
price range's scale model; taking the wrapper off cut a one-listing ``predict_rows`` on the real
champion (a bag of two) from ~2.2-2.5 to ~1.5 ms of CPU. This module makes the same C call with the
config encoded once: same function, same arguments, same float32 output (a test compares it bit for
bit with ``inplace_predict``), for one row or a million.

It also passes the C call a proxy DMatrix kept per thread, where the wrapper passes none and the
library builds one per call. Building one constructs an XGBoost ``Context``, which reads the cgroup
CPU quota files and parses the device string with a regex: ~55 µs per call here, a quarter of a
one-row prediction of the 249-tree champion (measured: 216 -> 157 µs; a one-tree model 112 -> 57 µs).
A proxy only holds the array of the call in progress, so one per thread keeps the calls thread-safe.

One row takes another road. xgboost 3.2's block kernel walks every node of every tree to learn the
trees' depths before it predicts anything (``PredictBatchByBlockKernel``'s ``tree_depth``, used only by
its array layout for blocks of more than one row; xgboost 3.4 skips it for one row, dmlc/xgboost#12307,
not on PyPI's 3.2 line): ~46% of pricing one listing on a 361-tree champion. For one row this module
asks the library for the leaf each tree sends the row to (a one-row DMatrix and a "leaf" prediction,
which computes no depths) and adds the leaves' values to the base score in tree order in float32, as
the kernel does: the same bits (unit tests compare every row with ``inplace_predict``; a data test
prices 1,000 real listings one by one and gets the batch's bits). A synthetic 361-tree booster:
470 -> 130 µs per one-row call. One listing through ``predict_rows`` on the real champion (a bag of
two boosters, which share one DMatrix, and the range's scale model), CPU per listing: 0.95 -> 0.64 ms.
A booster whose output is not that sum (an objective with a link, several outputs) is found when
its table is built, by comparing both roads on a probe row, and keeps the block kernel.

Only what the served models need: dense float64/float32 C-contiguous matrices, plain ("value")
predictions of every tree, missing values as NaN, one output per row.
"""

from __future__ import annotations

import ctypes
import functools
import json
import threading
import weakref
from collections.abc import Sequence

import numpy as np
import xgboost as xgb
from xgboost.libpath import find_lib_path


@functools.cache
def _library() -> ctypes.CDLL:
    """libxgboost as xgboost itself loaded it (the same shared object: dlopen hands back its handle)."""
    lib = ctypes.CDLL(find_lib_path()[0])
    lib.XGBGetLastError.restype = ctypes.c_char_p
    return lib


class _Proxy:
    """A proxy DMatrix owned by one thread, freed with it."""

    def __init__(self) -> None:
        self.handle = ctypes.c_void_p()
        self._free = _library().XGDMatrixFree  # kept: at interpreter exit the module may be gone first
        _check(_library().XGProxyDMatrixCreate(ctypes.byref(self.handle)))

    def __del__(self) -> None:
        if self.handle:
            self._free(self.handle)


_local = threading.local()


def _proxy() -> ctypes.c_void_p:
    """This thread's proxy DMatrix (made on first use)."""
    proxy = getattr(_local, "proxy", None)
    if proxy is None:
        proxy = _local.proxy = _Proxy()
    return proxy.handle


def _check(status: int) -> None:
    if status != 0:
        raise xgb.core.XGBoostError(_library().XGBGetLastError().decode())


#: inplace_predict's config for a "value" prediction of all trees, NaN as missing (its own defaults).
_CONFIG = json.dumps(
    {
        "type": 0,
        "training": False,
        "iteration_begin": 0,
        "iteration_end": 0,
        "missing": float("nan"),
        "strict_shape": False,
        "cache_id": 0,
    }
).encode()


#: XGBoosterPredictFromDMatrix's config for the leaf index of every tree ("type" 6: PredictionType::kLeaf).
_LEAF_CONFIG = json.dumps(
    {"type": 6, "training": False, "iteration_begin": 0, "iteration_end": 0, "strict_shape": False}
).encode()
_DMATRIX_CONFIG = json.dumps({"missing": float("nan"), "nthread": 1}).encode()


def predict_dense(booster: xgb.Booster, matrix: np.ndarray) -> np.ndarray:
    """``booster.inplace_predict(matrix, validate_features=False)`` for a float matrix, minus the wrapper."""
    return predict_each([booster], matrix)[0]


def predict_each(boosters: Sequence[xgb.Booster], matrix: np.ndarray) -> list[np.ndarray]:
    """:func:`predict_dense` of each booster (a bag) on one matrix; one row makes its DMatrix once for all."""
    if matrix.ndim != 2 or matrix.dtype not in (np.float64, np.float32) or not matrix.flags.c_contiguous:
        raise TypeError(f"a C-contiguous 2-D float matrix is required, got {matrix.dtype} of shape {matrix.shape}")
    rows = matrix.shape[0]
    if rows == 0:
        return [np.zeros(0, dtype=np.float32) for _ in boosters]
    if rows == 1:
        # A table for another column count leaves the block kernel to name the mismatch.
        sums = [_leaf_sum(booster) for booster in boosters]
        sums = [
            leaf_sum if leaf_sum is not None and leaf_sum.features == matrix.shape[1] else None for leaf_sum in sums
        ]
        if any(leaf_sum is not None for leaf_sum in sums):
            with _OneRow(matrix) as row:
                return [
                    _block_predict(booster, matrix) if leaf_sum is None else leaf_sum(booster, row)
                    for booster, leaf_sum in zip(boosters, sums, strict=True)
                ]
    return [_block_predict(booster, matrix) for booster in boosters]


def _interface(matrix: np.ndarray) -> bytes:
    """The matrix as an array-interface document (the C API's way to pass an array without a copy)."""
    return json.dumps(
        {
            "data": [matrix.ctypes.data, True],
            "shape": list(matrix.shape),
            "strides": None,
            "typestr": matrix.dtype.str,
            "version": 3,
        }
    ).encode()


def _output(shape, dims: ctypes.c_uint64, preds) -> np.ndarray:
    """A copy of the prediction buffer (it lives in the booster's per-thread buffer until its next call)."""
    size = 1
    for i in range(dims.value):
        size *= shape[i]
    return np.frombuffer(ctypes.string_at(preds, 4 * size), dtype=np.float32)


def _block_predict(booster: xgb.Booster, matrix: np.ndarray) -> np.ndarray:
    """XGBoosterPredictFromDense: the library's block kernel, any number of rows."""
    rows = matrix.shape[0]
    interface = _interface(matrix)
    shape = ctypes.POINTER(ctypes.c_uint64)()
    dims = ctypes.c_uint64()
    preds = ctypes.POINTER(ctypes.c_float)()
    _check(
        _library().XGBoosterPredictFromDense(
            booster.handle, interface, _CONFIG, _proxy(), ctypes.byref(shape), ctypes.byref(dims),
            ctypes.byref(preds),
        )
    )  # fmt: skip
    if dims.value != 1 or shape[0] != rows:
        raise ValueError(f"expected one output per row, got shape {[shape[i] for i in range(dims.value)]}")
    return _output(shape, dims, preds)


class _OneRow:
    """A one-row DMatrix for the leaf predictions of one call, freed when the call ends.

    Made per call: the library has no way to refill a DMatrix, and a DMatrix (~65 µs to make and
    free, most of it the library's Context) is what a leaf prediction takes.
    """

    def __init__(self, matrix: np.ndarray) -> None:
        self.handle = ctypes.c_void_p()
        _check(_library().XGDMatrixCreateFromDense(_interface(matrix), _DMATRIX_CONFIG, ctypes.byref(self.handle)))

    def __enter__(self) -> _OneRow:
        return self

    def __exit__(self, *exc) -> None:
        _library().XGDMatrixFree(self.handle)

    def leaves(self, booster: xgb.Booster) -> np.ndarray:
        """The leaf each tree of ``booster`` sends the row to (float32, as the library returns them)."""
        shape = ctypes.POINTER(ctypes.c_uint64)()
        dims = ctypes.c_uint64()
        preds = ctypes.POINTER(ctypes.c_float)()
        _check(
            _library().XGBoosterPredictFromDMatrix(
                booster.handle, self.handle, _LEAF_CONFIG, ctypes.byref(shape), ctypes.byref(dims), ctypes.byref(preds)
            )
        )
        return _output(shape, dims, preds)


class _LeafSum:
    """One row's prediction as the block kernel makes it: base score plus each tree's leaf, in order, in float32."""

    def __init__(self, booster: xgb.Booster) -> None:
        document = json.loads(booster.save_raw("json"))
        learner = document["learner"]
        trees = learner["gradient_booster"]["model"]["trees"]
        # A leaf's value is its split_conditions entry (the JSON model's layout); other entries are unused.
        width = max(len(tree["split_conditions"]) for tree in trees)
        self.values = np.zeros((len(trees), width), dtype=np.float32)
        for index, tree in enumerate(trees):
            self.values[index, : len(tree["split_conditions"])] = tree["split_conditions"]
        self.base = np.float32(json.loads(learner["learner_model_param"]["base_score"])[0])
        self.features = booster.num_features()
        self._trees = np.arange(len(trees))

    def __call__(self, booster: xgb.Booster, row: _OneRow) -> np.ndarray:
        leaves = row.leaves(booster).astype(np.intp)
        if leaves.shape != self._trees.shape:
            raise ValueError(f"the booster has {leaves.size} trees, its leaf table {self._trees.size}: it changed")
        summed = np.cumsum(np.concatenate(([self.base], self.values[self._trees, leaves])), dtype=np.float32)
        return summed[-1:]


#: Per booster, its leaf table, or None where the leaf sum is not the booster's output. Built on the
#: booster's first one-row prediction; a booster changed in place after that (load_model into it)
#: would need a new one, which served boosters never are.
_leaf_sums: weakref.WeakKeyDictionary[xgb.Booster, _LeafSum | None] = weakref.WeakKeyDictionary()
_NOT_BUILT = object()


def prepare_one_row(booster: xgb.Booster) -> bool:
    """Build the booster's leaf table now (not on its first one-row call); True if one row will use it.

    The table costs a JSON dump of the model: tens of milliseconds for the champion, which a serving
    replica pays when it loads a model rather than on the request that follows.
    """
    return _leaf_sum(booster) is not None


def _leaf_sum(booster: xgb.Booster) -> _LeafSum | None:
    known = _leaf_sums.get(booster, _NOT_BUILT)  # one lookup: this runs on every one-row call
    if known is not _NOT_BUILT:
        return known
    try:
        leaf_sum = _LeafSum(booster)
        probe = np.zeros((1, leaf_sum.features))
        with _OneRow(probe) as row:
            if leaf_sum(booster, row).tobytes() != _block_predict(booster, probe).tobytes():
                leaf_sum = None
    except (KeyError, IndexError, ValueError, TypeError, xgb.core.XGBoostError):
        leaf_sum = None  # not a model of scalar trees with one output: the block kernel serves it
    _leaf_sums[booster] = leaf_sum
    return leaf_sum

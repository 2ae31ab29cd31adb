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
has Treelite's GTIL (the dmlc tree-inference library, the booster converted once when it is prepared)
give each tree's leaf value for the row, and adds them to the base score in tree order in float32, as
the kernel does: the same bits (unit tests compare every row with ``inplace_predict``; a data test
prices 1,000 real listings one by one and gets the batch's bits). Asking XGBoost itself for the leaves
(a one-row DMatrix and a "leaf" prediction) skips the walk too, but making that DMatrix costs a
``Context`` per call: on the real champion's bag of two, 200-270 µs per one-row call that way,
60-85 µs through GTIL (2,000 real listings, the same bits). A booster whose output is not that sum
(an objective with a link, several outputs) or that Treelite cannot convert is found when its leaf
sum is built, by comparing both roads on probe rows (all zeros, all missing), and keeps the block kernel.

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
import treelite
import xgboost as xgb
from treelite import TreeliteError
from treelite.libpath import find_lib_path as treelite_lib_path
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


@functools.cache
def _treelite() -> tuple[ctypes.CDLL, ctypes.c_void_p]:
    """libtreelite as treelite loaded it, and one GTIL config for every call: each tree's output, one thread."""
    lib = ctypes.CDLL(str(treelite_lib_path()[0]))
    lib.TreeliteGetLastError.restype = ctypes.c_char_p
    pointer, count = ctypes.c_void_p, ctypes.c_uint64
    lib.TreeliteGTILPredict.argtypes = [pointer, pointer, ctypes.c_char_p, count, pointer, pointer]
    lib.TreeliteGTILGetOutputShape.argtypes = [
        pointer,
        count,
        pointer,
        ctypes.POINTER(ctypes.POINTER(count)),
        ctypes.POINTER(count),
    ]
    config = ctypes.c_void_p()  # read-only once parsed: shared by every thread, kept for the process
    config_json = json.dumps({"predict_type": "score_per_tree", "nthread": 1}).encode()
    _check_treelite(lib, lib.TreeliteGTILParseConfig(config_json, ctypes.byref(config)))
    return lib, config


def _check_treelite(lib: ctypes.CDLL, status: int) -> None:
    if status != 0:
        raise TreeliteError(lib.TreeliteGetLastError().decode())


def predict_dense(booster: xgb.Booster, matrix: np.ndarray) -> np.ndarray:
    """``booster.inplace_predict(matrix, validate_features=False)`` for a float matrix, minus the wrapper."""
    return predict_each([booster], matrix)[0]


def predict_each(boosters: Sequence[xgb.Booster], matrix: np.ndarray) -> list[np.ndarray]:
    """:func:`predict_dense` of each booster (a bag) on one matrix; one row goes through the leaf sums."""
    if matrix.ndim != 2 or matrix.dtype not in (np.float64, np.float32) or not matrix.flags.c_contiguous:
        raise TypeError(f"a C-contiguous 2-D float matrix is required, got {matrix.dtype} of shape {matrix.shape}")
    rows = matrix.shape[0]
    if rows == 0:
        return [np.zeros(0, dtype=np.float32) for _ in boosters]
    if rows == 1:
        row = matrix.astype(np.float32)  # what XGBoost compares with its float32 split conditions
        predictions = []
        for booster in boosters:
            leaf_sum = _leaf_sum(booster)
            # A leaf sum for another column count leaves the block kernel to name the mismatch.
            if leaf_sum is None or leaf_sum.features != matrix.shape[1]:
                predictions.append(_block_predict(booster, matrix))
            else:
                predictions.append(leaf_sum(row))
        return predictions
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


class _LeafSum:
    """One row's prediction as the block kernel makes it: base score plus each tree's leaf, in order, in float32.

    Treelite finds the leaves (its GTIL walks the booster's trees, converted once, with XGBoost's float32
    split conditions, default directions and category sets) and returns each tree's leaf value; the sum
    is made here, in the kernel's order.
    """

    def __init__(self, booster: xgb.Booster) -> None:
        self._model = _treelite_model(booster)  # held: GTIL calls use its handle
        if self._model.input_type != "float32" or self._model.output_type != "float32":
            raise TypeError(f"expected a float32 model, got {self._model.input_type} -> {self._model.output_type}")
        self._lib, self._config = lib, config = _treelite()  # kept: every one-row call uses both
        shape = ctypes.POINTER(ctypes.c_uint64)()
        dims = ctypes.c_uint64()
        _check_treelite(
            lib, lib.TreeliteGTILGetOutputShape(self._model.handle, 1, config, ctypes.byref(shape), ctypes.byref(dims))
        )
        self.trees = self._model.num_tree
        if [shape[i] for i in range(dims.value)] != [1, self.trees, 1]:
            raise ValueError("not one output per tree: the leaf sum is not this booster's prediction")
        learner = json.loads(booster.save_config())["learner"]
        self.base = np.float32(json.loads(learner["learner_model_param"]["base_score"])[0])
        self.features = booster.num_features()

    def __call__(self, row: np.ndarray) -> np.ndarray:
        """The prediction for ``row``: one C-contiguous float32 row of ``features`` values."""
        lib = self._lib
        terms = np.empty(self.trees + 1, dtype=np.float32)
        terms[0] = self.base
        output = terms.ctypes.data + terms.itemsize  # the trees' leaf values fill terms[1:]
        _check_treelite(
            lib, lib.TreeliteGTILPredict(self._model.handle, row.ctypes.data, b"float32", 1, output, self._config)
        )
        return np.cumsum(terms, dtype=np.float32)[-1:]


def _treelite_model(booster: xgb.Booster) -> treelite.Model:
    """The booster as a Treelite model, without the category encoder XGBoost keeps when trained on a frame.

    The encoder maps a data frame's category names to the codes the trees split on; this module is
    given the codes, and Treelite refuses a model that carries one.
    """
    document = json.loads(booster.save_raw("json"))
    document["learner"]["gradient_booster"]["model"].pop("cats", None)
    return treelite.frontend.from_xgboost_json(json.dumps(document))


#: Per booster, its leaf sum, or None where the leaf sum is not the booster's output. Built on the
#: booster's first one-row prediction; a booster changed in place after that (load_model into it)
#: would need a new one, which served boosters never are.
_leaf_sums: weakref.WeakKeyDictionary[xgb.Booster, _LeafSum | None] = weakref.WeakKeyDictionary()
_NOT_BUILT = object()


def prepare_one_row(booster: xgb.Booster) -> bool:
    """Build the booster's leaf sum now (not on its first one-row call); True if one row will use it.

    It costs converting the model to Treelite's: ~30 ms per booster of the champion, which a serving
    replica pays when it loads a model rather than on the request that follows.
    """
    return _leaf_sum(booster) is not None


def _leaf_sum(booster: xgb.Booster) -> _LeafSum | None:
    known = _leaf_sums.get(booster, _NOT_BUILT)  # one lookup: this runs on every one-row call
    if known is not _NOT_BUILT:
        return known
    try:
        leaf_sum = _LeafSum(booster)
        for fill in (0.0, np.nan):  # a row of values, then one of missing values (default directions)
            probe = np.full((1, leaf_sum.features), fill, dtype=np.float32)
            if leaf_sum(probe).tobytes() != _block_predict(booster, probe).tobytes():
                leaf_sum = None
                break
    except (KeyError, IndexError, ValueError, TypeError, TreeliteError, xgb.core.XGBoostError):
        leaf_sum = None  # not a model of scalar trees with one output: the block kernel serves it
    _leaf_sums[booster] = leaf_sum
    return leaf_sum

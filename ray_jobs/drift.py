"""Drift stage: is a new batch distributed like the data the champion model was trained on?

Why it is built this way:

* On 100k-row batches a raw test calls every feature "significant", so a check only counts as
  drift when it is both statistically real (Holm-corrected p < ``drift_alpha`` over every test
  in the report) and large enough to matter (PSI >= ``drift_effect_threshold`` for distributions,
  a change of >= ``drift_missing_threshold`` in a column's missing share).
* Everything is computed from counts. Bin edges come once from (a sample of) the reference's
  quantiles; then every block of both sides is reduced to per-bin, per-category and missing counts
  by one function run with Ray Data ``map_batches``, so the scan scales with the cluster and only
  O(bins) numbers per block reach the driver, which sums them. A pandas frame goes through the very
  same function as a single block, and all statistics below are computed from the summed counts.
* KS is read off 1,000 reference-quantile bins. The binned D is the sup of |F_ref - F_cur| over a
  subset of points, so it never exceeds the exact two-sample statistic (the gap is at most about one
  fine bin, ~0.1% of the reference); its asymptotic p-value (``scipy.stats.kstwo``, as
  ``ks_2samp(method="asymp")``) is therefore conservative. Wasserstein is integrated over the same
  bins (between the reference's 0.1% and 99.9% quantiles) and divided by the reference IQR.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats

from rayestate import history
from rayestate.schema import RAW_COLUMNS, SchemaError
from rayestate.settings import Settings

if TYPE_CHECKING:
    import ray.data

    Listings = pd.DataFrame | ray.data.Dataset

REPORT_VERSION = 1
NUMERIC = ("price", "bed", "bath", "acre_lot", "house_size", "prev_sold_year")
CATEGORICAL = ("state", "status", "zip3")
#: Raw columns the features above are derived from; every input must carry them.
SOURCE_COLUMNS = ("price", "bed", "bath", "acre_lot", "house_size", "prev_sold_date", "state", "status", "zip_code")
FINE_BINS = 1000  # KS / Wasserstein resolution (reference quantiles)
PSI_BINS = 10  # reference deciles: the usual PSI binning, and what the UI charts
MAX_CATEGORIES = 50  # commonest categories kept; the rest pool into OTHER (bounds PSI's small-sample bias)
PSI_EPSILON = 1e-4  # share floor so an empty bin gives a large, finite PSI
EDGE_SAMPLE_ROWS = 100_000  # reference rows used to place bin edges
OTHER = "(other)"
_ROWS, _MISSING = "__rows__", "__missing__"


# --- per-batch counting (the only code that touches rows) ------------------------------------


def _numeric_frame(batch: pd.DataFrame) -> pd.DataFrame:
    """The numeric drift features of listing rows as float (NaN = missing or unreadable)."""
    out = pd.DataFrame(index=batch.index)
    for column in NUMERIC[:-1]:
        out[column] = pd.to_numeric(batch[column], errors="coerce").astype("float64")
    sold = pd.to_datetime(batch["prev_sold_date"], errors="coerce", format="%Y-%m-%d")
    out["prev_sold_year"] = sold.dt.year.astype("float64")
    return out.replace([np.inf, -np.inf], np.nan)


def _feature_frame(batch: pd.DataFrame) -> pd.DataFrame:
    """All drift features: the numeric ones plus state, status and 3-digit ZIP prefix as text."""
    out = _numeric_frame(batch)
    out["state"] = batch["state"].astype("object")
    out["status"] = batch["status"].astype("object")
    out["zip3"] = _zip3(batch["zip_code"])
    return out


def _zip3(zip_code: pd.Series) -> pd.Series:
    """3-digit ZIP prefix as text ("006" for 601.0), vectorised: same values as features._zip5(...).str[:3]."""
    number = pd.to_numeric(zip_code, errors="coerce")
    valid = (number >= 0) & (number < 100_000)
    prefix = (number.where(valid) // 100).astype("Int64").astype("string").str.zfill(3)
    return prefix.astype("object").where(valid, None)


def _count_batch(batch: pd.DataFrame, *, edges: dict[str, list[float]], side: str) -> pd.DataFrame:
    """Long-form (side, feature, key, count) of one batch: fine-bin, category and missing counts."""
    features = _feature_frame(batch)
    parts = [pd.DataFrame({"feature": [_ROWS], "key": [""], "count": [len(batch)]})]
    for name in NUMERIC:
        values = features[name].to_numpy()
        bins = np.searchsorted(np.asarray(edges[name]), values[~np.isnan(values)], side="right")
        counts = np.bincount(bins, minlength=len(edges[name]) + 1)
        used = np.flatnonzero(counts)
        parts.append(pd.DataFrame({"feature": name, "key": used.astype(str), "count": counts[used]}))
    for name in CATEGORICAL:
        counts = features[name].value_counts(dropna=True)
        parts.append(pd.DataFrame({"feature": name, "key": counts.index.astype(str), "count": counts.to_numpy()}))
    present = [c for c in RAW_COLUMNS if c in batch.columns]
    missing = batch[present].isna().sum()
    parts.append(pd.DataFrame({"feature": _MISSING, "key": present, "count": missing.to_numpy()}))
    out = pd.concat(parts, ignore_index=True)
    out["count"] = out["count"].astype("int64")
    out["side"] = side
    return out[["side", "feature", "key", "count"]]


# --- reference bin edges ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Edges:
    fine: dict[str, list[float]]
    coarse: dict[str, list[float]]
    iqr: dict[str, float]


def _edges(sample: pd.DataFrame) -> _Edges:
    """Fine (KS) and decile (PSI) edges per numeric feature; deciles are a subset of the fine edges."""
    features = _numeric_frame(sample)
    levels = np.arange(1, FINE_BINS) / FINE_BINS
    decile_at = np.arange(1, PSI_BINS) * (FINE_BINS // PSI_BINS) - 1
    fine, coarse, iqr = {}, {}, {}
    for name in NUMERIC:
        values = features[name].dropna().to_numpy()
        if len(values) == 0:
            fine[name], coarse[name], iqr[name] = [], [], math.nan
            continue
        quantiles = np.quantile(values, levels)
        fine[name] = np.unique(quantiles).tolist()
        coarse[name] = np.unique(quantiles[decile_at]).tolist()
        q25, q75 = np.quantile(values, [0.25, 0.75])
        iqr[name] = float(q75 - q25) if q75 > q25 else math.nan
    return _Edges(fine, coarse, iqr)


def _reference_sample(reference: Listings, seed: int) -> pd.DataFrame:
    """Up to EDGE_SAMPLE_ROWS random reference rows. Any edges give a valid (conservative) KS."""
    columns = ["price", "bed", "bath", "acre_lot", "house_size", "prev_sold_date"]
    if isinstance(reference, pd.DataFrame):
        if len(reference) <= EDGE_SAMPLE_ROWS:
            return reference[columns]
        return reference[columns].sample(EDGE_SAMPLE_ROWS, random_state=seed)
    rows = reference.count()
    fraction = min(1.0, EDGE_SAMPLE_ROWS / max(rows, 1))
    sampled = reference.random_sample(fraction, seed=seed) if fraction < 1.0 else reference
    return sampled.select_columns(columns).to_pandas()


# --- aggregation: pandas (one batch) or Ray Data ---------------------------------------------


def _columns_of(data: Listings) -> list[str]:
    return list(data.columns) if isinstance(data, pd.DataFrame) else list(data.schema().names)


def _tally(reference: Listings, current: Listings, edges: _Edges) -> pd.DataFrame:
    """Summed (side, feature, key, count) of both inputs; Ray Data unless both are pandas frames.

    Each block is reduced to O(bins) partial counts inside the cluster; the partials stream to the
    driver and are summed there. A Ray Data groupby would shuffle those few thousand rows through
    aggregator actors, which cost seconds here and can wait for CPUs a running Tune job holds.
    """
    sides = {"reference": reference, "current": current}
    if all(isinstance(data, pd.DataFrame) for data in sides.values()):
        return _sum_counts(_count_batch(data, edges=edges.fine, side=side) for side, data in sides.items())
    import ray.data

    counted = [
        (ray.data.from_pandas(data) if isinstance(data, pd.DataFrame) else data).map_batches(
            _count_batch, batch_format="pandas", batch_size=None, fn_kwargs={"edges": edges.fine, "side": side}
        )
        for side, data in sides.items()
    ]
    both = counted[0].union(counted[1])
    return _sum_counts(both.iter_batches(batch_format="pandas", batch_size=None))


def _sum_counts(partials) -> pd.DataFrame:
    summed = pd.concat(list(partials), ignore_index=True).groupby(["side", "feature", "key"], as_index=False)["count"]
    return summed.sum().astype({"count": "int64"})


# --- statistics --------------------------------------------------------------------------------


def holm(p_values) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error control without independence)."""
    p = np.asarray(p_values, dtype="float64")
    order = np.argsort(p, kind="stable")
    scaled = (len(p) - np.arange(len(p))) * p[order]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted


def psi(reference_counts, current_counts) -> float:
    """Population stability index sum((q - p) * ln(q / p)) on shares floored at PSI_EPSILON."""
    p = np.maximum(np.asarray(reference_counts, float) / max(np.sum(reference_counts), 1), PSI_EPSILON)
    q = np.maximum(np.asarray(current_counts, float) / max(np.sum(current_counts), 1), PSI_EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"


def _dense(counts: pd.Series, size: int) -> np.ndarray:
    """Fine-bin counts keyed by bin index (as text) -> a dense count vector."""
    return np.bincount(counts.index.astype(int), weights=counts.to_numpy(), minlength=size)


def _shares(counts: np.ndarray) -> list[float]:
    return (counts / max(counts.sum(), 1)).tolist()


@dataclass
class FeatureDrift:
    """One check: a feature's distribution (numeric / categorical) or a column's missing share."""

    feature: str
    kind: str  # "numeric" | "categorical" | "missing"
    test: str
    statistic: float
    p_value: float
    effect_size: float
    effect_metric: str
    threshold: float
    n_reference: int
    n_current: int
    detail: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    chart: dict[str, Any] | None = None
    p_adjusted: float = math.nan
    verdict: str = "no_drift"  # "drift" | "no_drift" | "insufficient_data"


def _numeric_check(name: str, ref: np.ndarray, cur: np.ndarray, edges: _Edges) -> FeatureDrift:
    fine = np.asarray(edges.fine[name])
    n_ref, n_cur = int(ref.sum()), int(cur.sum())
    cdf_ref, cdf_cur = np.cumsum(ref) / max(n_ref, 1), np.cumsum(cur) / max(n_cur, 1)
    gap = np.abs(cdf_ref - cdf_cur)[:-1]  # P(x < edge) per edge; the last entry is 1 on both sides
    ks = float(gap.max()) if len(gap) else 0.0
    n_eff = round(n_ref * n_cur / (n_ref + n_cur)) if n_ref and n_cur else 0
    p_value = float(stats.kstwo.sf(ks, n_eff)) if n_eff else 1.0
    # Decile counts from fine counts: fine bin b starts at fine[b-1], which is in no decile's interior.
    to_decile = np.concatenate([[0], np.searchsorted(edges.coarse[name], fine, side="right")])
    ref10 = np.bincount(to_decile, weights=ref, minlength=len(edges.coarse[name]) + 1)
    cur10 = np.bincount(to_decile, weights=cur, minlength=len(edges.coarse[name]) + 1)
    wasserstein = float(np.sum(gap[1:] * np.diff(fine))) if len(fine) > 1 else 0.0
    # The median lies in the first fine bin whose upper edge has P(x < edge) >= 0.5; report its lower edge.
    medians = [
        _number(fine[np.clip(np.searchsorted(cdf, 0.5) - 1, 0, len(fine) - 1)]) if len(fine) and cdf[-1] else "n/a"
        for cdf in (cdf_ref, cdf_cur)
    ]
    return FeatureDrift(
        feature=name,
        kind="numeric",
        test="ks_2samp_binned",
        statistic=ks,
        p_value=p_value,
        effect_size=psi(ref10, cur10),
        effect_metric="psi",
        threshold=math.nan,
        n_reference=n_ref,
        n_current=n_cur,
        detail=f"median ≈ {medians[0]} → {medians[1]}",
        metrics={"ks": ks, "wasserstein_iqr": wasserstein / edges.iqr[name], "psi": psi(ref10, cur10)},
        chart={
            "type": "histogram",
            "edges": edges.coarse[name],  # bins: (-inf, e0), [e0, e1), ..., [e_last, inf)
            "reference": _shares(ref10),
            "current": _shares(cur10),
        },
    )


def _categorical_check(name: str, ref: pd.Series, cur: pd.Series) -> FeatureDrift:
    # Cells are chosen from pooled counts (the table's margin), which keeps the test valid under no drift:
    # the MAX_CATEGORIES commonest categories whose expected count is >= 5 on both sides (Cochran's rule).
    both = pd.DataFrame({"reference": ref, "current": cur}).fillna(0)
    pooled = both.sum(axis=1).sort_values(ascending=False, kind="stable")
    expected = pooled / max(pooled.sum(), 1) * min(both.sum())
    kept = pooled.index[expected.to_numpy() >= 5][:MAX_CATEGORIES]
    both.index = both.index.where(both.index.isin(kept), OTHER)
    table = both.groupby(level=0).sum().reindex([*kept, OTHER], fill_value=0)
    table = table[table.sum(axis=1) > 0]
    n_ref, n_cur = int(table["reference"].sum()), int(table["current"].sum())
    if len(table) >= 2 and n_ref and n_cur:
        statistic, p_value, _, _ = stats.chi2_contingency(table.to_numpy().T, correction=False)
    else:
        statistic, p_value = 0.0, 1.0
    shares = table / table.sum()
    moved = (shares["current"] - shares["reference"]).abs().idxmax() if len(table) else ""
    detail = (
        f"{moved}: {shares['reference'].get(moved, 0):.1%} → {shares['current'].get(moved, 0):.1%}" if moved else ""
    )
    return FeatureDrift(
        feature=name,
        kind="categorical",
        test="chi2_homogeneity",
        statistic=float(statistic),
        p_value=float(p_value),
        effect_size=psi(table["reference"], table["current"]),
        effect_metric="psi",
        threshold=math.nan,
        n_reference=n_ref,
        n_current=n_cur,
        detail=detail,
        metrics={"psi": psi(table["reference"], table["current"])},
        chart={
            "type": "shares",
            "categories": [str(c) for c in table.index],
            "reference": shares["reference"].tolist(),
            "current": shares["current"].tolist(),
        },
    )


def _missing_check(column: str, missing: tuple[int, int], rows: tuple[int, int]) -> FeatureDrift:
    """Two-proportion z-test on a column's missing share; effect = absolute change in share."""
    (m_ref, m_cur), (n_ref, n_cur) = missing, rows
    share_ref, share_cur = m_ref / n_ref, m_cur / n_cur
    pooled = (m_ref + m_cur) / (n_ref + n_cur)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_ref + 1 / n_cur))
    z = (share_cur - share_ref) / se if se > 0 else 0.0
    return FeatureDrift(
        feature=column,
        kind="missing",
        test="two_proportion_z",
        statistic=z,
        p_value=float(2 * stats.norm.sf(abs(z))),
        effect_size=abs(share_cur - share_ref),
        effect_metric="abs_share_change",
        threshold=math.nan,
        n_reference=n_ref,
        n_current=n_cur,
        detail=f"missing {share_ref:.1%} → {share_cur:.1%}",
        metrics={"reference_share": share_ref, "current_share": share_cur},
    )


def _decide(checks: list[FeatureDrift], settings: Settings) -> None:
    """Holm over every testable check; drift needs significance AND an effect above its threshold."""
    testable = []
    for check in checks:
        check.threshold = (
            settings.drift_missing_threshold if check.kind == "missing" else settings.drift_effect_threshold
        )
        if min(check.n_reference, check.n_current) < settings.drift_min_rows:
            check.verdict = "insufficient_data"
        else:
            testable.append(check)
    for check, adjusted in zip(testable, holm([c.p_value for c in testable]), strict=True):
        check.p_adjusted = float(adjusted)
        drifted = adjusted < settings.drift_alpha and check.effect_size >= check.threshold
        check.verdict = "drift" if drifted else "no_drift"


# --- the report --------------------------------------------------------------------------------


@dataclass
class DriftReport:
    """Per-check results plus the overall decision; JSON round-trips through to_dict/from_dict."""

    verdict: str  # "drift" | "no_drift"
    reason: str
    features: list[FeatureDrift]
    n_reference: int
    n_current: int
    alpha: float
    effect_threshold: float
    missing_threshold: float
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    batch_id: str | None = None
    version: int = REPORT_VERSION
    #: Live drift only: the champion's attribution drift (ray_jobs.attribution), per explanation group.
    attribution: dict | None = None

    @property
    def drift(self) -> bool:
        return self.verdict == "drift"

    @property
    def drifted(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.verdict == "drift"]

    def to_dict(self) -> dict:
        return _json_safe(asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> DriftReport:
        if data.get("version") != REPORT_VERSION:
            raise ValueError(f"drift report version {data.get('version')} is not supported (expected {REPORT_VERSION})")
        top = {k: v for k, v in data.items() if k != "features"}
        features = [
            FeatureDrift(**{k: math.nan if v is None and k in _FLOATS else v for k, v in f.items()})
            for f in data["features"]
        ]
        return cls(features=features, **top)

    def metrics(self) -> dict[str, float]:
        """Flat numbers for mlflow.log_metrics (NaN-free; p-values as adjusted by Holm)."""
        out = {"drift.detected": float(self.drift), "drift.n_drifted": float(len(self.drifted))}
        for check in self.features:
            prefix = f"drift.{check.kind}.{check.feature}"
            values = {"effect": check.effect_size, "p_adjusted": check.p_adjusted, **check.metrics}
            out.update({f"{prefix}.{k}": float(v) for k, v in values.items() if _finite(v)})
        return out


_FLOATS = {"statistic", "p_value", "p_adjusted", "effect_size", "threshold"}


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _json_safe(value):
    """NaN/inf become None (strict JSON); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _summary(report_checks: list[FeatureDrift], settings: Settings) -> tuple[str, str]:
    rule = (
        f"Holm α={settings.drift_alpha:g}, PSI ≥ {settings.drift_effect_threshold:g}, "
        f"missing-share change ≥ {settings.drift_missing_threshold:g}"
    )
    drifted = [c for c in report_checks if c.verdict == "drift"]
    if drifted:
        items = "; ".join(
            f"{c.feature}{' missing share' if c.kind == 'missing' else ''} ({c.effect_metric} {c.effect_size:.3g}, {c.detail})"
            for c in sorted(drifted, key=lambda c: -c.effect_size)
        )
        return "drift", f"drift in {len(drifted)} of {len(report_checks)} checks ({rule}): {items}"
    tested = [c for c in report_checks if c.verdict != "insufficient_data"]
    if not tested:
        return "no_drift", f"not tested: fewer than {settings.drift_min_rows} rows on a side for every check"
    small = sum(c.p_adjusted < settings.drift_alpha for c in tested)
    top = max((c for c in tested if c.effect_metric == "psi"), key=lambda c: c.effect_size, default=None)
    largest = f"; largest PSI {top.effect_size:.3g} ({top.feature})" if top else ""
    return (
        "no_drift",
        f"no drift: no check is both significant and large ({rule}); {small} significant but small{largest}",
    )


def drift_report(reference: Listings, current: Listings, settings: Settings) -> DriftReport:
    """Compare clean listing data (pandas frames or Ray Datasets) of a reference and a new batch."""
    for label, data in (("reference", reference), ("current", current)):
        missing = [c for c in SOURCE_COLUMNS if c not in _columns_of(data)]
        if missing:
            raise SchemaError(f"drift {label} data is missing column(s) {', '.join(missing)}")
    edges = _edges(_reference_sample(reference, settings.seed))
    tally = _tally(reference, current, edges)
    counts = {
        side: {f: g.set_index("key")["count"] for f, g in frame.groupby("feature")}
        for side, frame in tally.groupby("side")
    }
    ref, cur = counts.get("reference", {}), counts.get("current", {})
    rows = (int(ref.get(_ROWS, pd.Series([0])).sum()), int(cur.get(_ROWS, pd.Series([0])).sum()))
    for label, n in zip(("reference", "current"), rows, strict=True):
        if n == 0:
            raise ValueError(f"drift {label} data has no rows")
    empty = pd.Series(dtype="int64")
    checks = []
    for name in NUMERIC:
        dense = [_dense(side.get(name, empty), len(edges.fine[name]) + 1) for side in (ref, cur)]
        checks.append(_numeric_check(name, *dense, edges))
    for name in CATEGORICAL:
        checks.append(_categorical_check(name, ref.get(name, empty), cur.get(name, empty)))
    missing_ref, missing_cur = ref.get(_MISSING, empty), cur.get(_MISSING, empty)
    for column in [c for c in RAW_COLUMNS if c in missing_ref.index and c in missing_cur.index]:
        checks.append(_missing_check(column, (int(missing_ref[column]), int(missing_cur[column])), rows))
    _decide(checks, settings)
    verdict, reason = _summary(checks, settings)
    return DriftReport(
        verdict=verdict,
        reason=reason,
        features=checks,
        n_reference=rows[0],
        n_current=rows[1],
        alpha=settings.drift_alpha,
        effect_threshold=settings.drift_effect_threshold,
        missing_threshold=settings.drift_missing_threshold,
    )


# --- persistence (rayestate.history keeps the documents) ----------------------------------------


def save_drift_report(settings: Settings, report_id: str, report: DriftReport) -> str:
    """Publish the report as <store>/drift/<report_id>.json (atomically; a re-run replaces it)."""
    return history.save_drift_report(settings, report_id, report.to_dict())


def load_drift_history(settings: Settings, limit: int = 20) -> list[DriftReport]:
    """The newest ``limit`` saved reports, newest first (an empty list before the first save)."""
    return [DriftReport.from_dict(document) for document in history.drift_reports(settings, limit)]

"""A model card per registered version: what it was trained on, how good it is, what it costs, why it serves.

Markdown, generated from what the registry and the model itself record, logged to the version's
MLflow run as ``model_card.md`` when the pipeline decides on the version, and again when its live
accuracy on sold homes becomes known. ``GET /model`` returns the champion's card and the UI's
Models page shows it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from rayestate.features import FEATURE_LABELS, FEATURES
from rayestate.model_io import download
from rayestate.registry import VersionRecord

CARD_FILE = "model_card.md"
META_FILE = "price_model/meta.json"


def _number(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:,.{digits}g}" if isinstance(value, float) else f"{value:,}"


def render(record: VersionRecord, meta: dict, *, model_name: str, live: dict | None = None) -> str:
    """The card of one version (``meta``: the model's meta.json; ``live``: its live quality, if known)."""
    metrics, cost = record.metrics, record.serving_cost or meta.get("serving_cost", {})
    states = {k.removeprefix("mdape_state_").replace("_", " ").title(): v for k, v in metrics.items()
              if k.startswith("mdape_state_")}  # fmt: skip
    params = meta.get("params", {})
    lines = [
        f"# {model_name} v{record.version}",
        "",
        f"**Decision:** {record.decision or 'undecided'} — {record.reason or ''}",
        f"**Aliases:** {', '.join(record.aliases) or '—'} · registered {record.created_at or '—'} · "
        f"trained {meta.get('trained_at', '—')}",
        "",
        "## Training data",
        f"- Batches: {', '.join(record.training_batches) or '—'}",
        f"- Rows fitted: {_number(meta.get('training_rows'))} (plus {_number(meta.get('masked_copies', 0))} "
        "copies with sizes masked)",
        f"- Features ({len(FEATURES)}): {', '.join(FEATURE_LABELS.get(f, f) for f in FEATURES)}",
        "",
        "## Settings",
        f"- XGBoost: {json.dumps({k: v for k, v in params.items() if k != 'monotone_constraints'}, default=str)}",
        f"- Rounds {meta.get('rounds', '—')} × bag of {meta.get('bag_size', 1)}; "
        f"validation MAE (log) {_number(meta.get('valid_mae_log'))}",
        "",
        "## Offline quality (held-out test rows)",
        f"- MdAPE {_number(metrics.get('mdape'))} · R² (log) {_number(metrics.get('r2_log'))} · "
        f"RMSE ${_number(metrics.get('rmse'), 6)} · rows {_number(metrics.get('rows'), 6)}",
        f"- Price range: coverage {_number(metrics.get('interval_coverage'))} "
        f"(median width {_number(metrics.get('interval_median_rel_width'))} of the price)",
        *(f"- MdAPE in {state}: {_number(value)}" for state, value in states.items()),
        "",
        "## Serving cost (one thread, per row)",
        f"- Exact TreeSHAP {_number(cost.get('explain_ms_per_row'))} ms (budget {_number(cost.get('explain_budget_ms'))}) · "
        f"prediction {_number(cost.get('predict_us_per_row'))} µs (budget {_number(cost.get('predict_budget_us'))}) · "
        f"{_number(cost.get('trees'))} trees",
        "",
        "## Live quality (homes that sold after being priced)",
    ]
    if not live:
        lines.append("- Not known yet: no home priced by this version has sold.")
    else:
        lines.append(
            f"- {live['matched_homes']} homes · MdAPE {_number(live.get('mdape'))} "
            f"(95% CI {_number(live['mdape_ci'][0])}–{_number(live['mdape_ci'][1])}) · bias {_number(live.get('bias'))} · "
            f"range coverage {_number(live.get('range_coverage'))}"
        )
    return "\n".join(lines) + "\n"


def version_meta(client: MlflowClient, model_name: str, version: str) -> dict:
    """The model's meta.json, read from the registered version (empty if it cannot be read)."""
    try:
        return json.loads(download(client, model_name, version, META_FILE).read_text())
    except Exception:
        return {}


def publish(client: MlflowClient, record: VersionRecord, *, model_name: str, live: dict | None = None) -> str:
    """Render the version's card and log it to its run (replacing an earlier card); returns the Markdown."""
    card = render(record, version_meta(client, model_name, record.version), model_name=model_name, live=live)
    if record.run_id:
        client.log_text(record.run_id, card, CARD_FILE)
    return card


def read(client: MlflowClient, record: VersionRecord) -> str | None:
    """The card logged for a version, or None."""
    if not record.run_id:
        return None
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=record.run_id, artifact_path=CARD_FILE, tracking_uri=client.tracking_uri
        )
    except Exception:
        return None
    return Path(local).read_text()

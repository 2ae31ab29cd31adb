"""Sold prices joined to what was served: the price a listing sold for, beside the price we gave it.

Listings are priced while ``for_sale`` and many later arrive ``sold`` with the price paid. A sold
row of a new batch matches what the Serve app answered earlier (the inference log) by its key,
``(street, zip_code)``: the dataset's encoded street address and the ZIP. On the real 100k-row
sample, 261 keys appear under both statuses, and 256 of them describe the same home (bed, bath and
living area equal); the other 5 are either a home whose sizes were updated or two homes sharing a
street ID (units of one building). A key is only as good as the street ID, so a row without one
never matches.

When a key was priced several times before the batch arrived, the latest answer counts (what the
model said most recently). Each outcome keeps the realised price, the served price and range, the
model version that served it, when it was served and when the sale came in (``days_to_outcome``),
and the sale date the row reports. One file per batch (``<store>/outcomes/<batch_id>.parquet``,
published atomically): re-running a batch replaces its file, so the join is idempotent.
"""

from __future__ import annotations

import io
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rayestate import store
from rayestate.inference_log import read_inference_log
from rayestate.settings import Settings

PREFIX = "outcomes"
KEY = ("street", "zip_code")
COLUMNS = ("street", "zip_code", "state", "city", "sold_price", "served_price", "served_low", "served_high",
           "model_version", "endpoint", "served_at", "learned_at", "days_to_outcome", "sale_date", "batch_id")  # fmt: skip


def join_outcomes(sold: pd.DataFrame, served: pd.DataFrame, *, batch_id: str, learned_at: datetime) -> pd.DataFrame:
    """One outcome per sold row whose key was served before ``learned_at`` (the latest such answer)."""
    sold = sold[(sold["status"] == "sold") & sold["street"].notna() & sold["zip_code"].notna()]
    served = served[served["street"].notna() & served["zip_code"].notna()]
    # A batch's arrival time is recorded to the second (CleanRecord.fetched_at), answers to the
    # microsecond: an answer logged within the second the sale arrived was served before it.
    served = served[served["logged_at"].dt.floor("s") <= pd.Timestamp(learned_at)]
    if sold.empty or served.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    latest = served.sort_values("logged_at").drop_duplicates(list(KEY), keep="last")
    joined = sold.drop_duplicates(list(KEY)).merge(latest, on=list(KEY), suffixes=("", "_served"))
    learned = pd.Timestamp(learned_at)
    out = pd.DataFrame(
        {
            "street": joined["street"],
            "zip_code": joined["zip_code"],
            "state": joined["state"],
            "city": joined["city"],
            "sold_price": joined["price"].astype("float64"),
            "served_price": joined["price_served"].astype("float64"),
            "served_low": joined["price_low"].astype("float64"),
            "served_high": joined["price_high"].astype("float64"),
            "model_version": joined["model_version"].astype("object"),
            "endpoint": joined["endpoint"].astype("object"),
            "served_at": joined["logged_at"],
            "learned_at": learned,
            "days_to_outcome": (learned - joined["logged_at"]).dt.total_seconds() / 86_400,
            "sale_date": joined["prev_sold_date"].astype("object"),
            "batch_id": batch_id,
        }
    )
    return out.reset_index(drop=True)


def record_outcomes(settings: Settings, batch_id: str) -> int:
    """Join a clean batch's sold rows to the inference log and publish them; returns how many matched."""
    record = store.get_record(settings, "clean", batch_id)
    if record is None:
        raise KeyError(f"no published clean batch {batch_id}")
    batch = store.read_frame(settings, "clean", [batch_id])
    learned_at = datetime.fromisoformat(record.fetched_at)
    outcomes = join_outcomes(batch, read_inference_log(settings), batch_id=batch_id, learned_at=learned_at)
    target = store.open_store(settings)
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(outcomes, preserve_index=False), buffer, compression="zstd")
    store.write_atomic(target, target.path(f"{PREFIX}/{batch_id}.parquet"), buffer.getvalue())
    return len(outcomes)


def read_outcomes(settings: Settings) -> pd.DataFrame:
    """Every published outcome (one row per sold home matched to what was served)."""
    target = store.open_store(settings)
    selector = pafs.FileSelector(target.path(PREFIX), allow_not_found=True)
    files = sorted(
        info.path for info in target.fs.get_file_info(selector)
        if info.is_file and info.base_name.endswith(".parquet") and not info.base_name.startswith(".")
    )  # fmt: skip
    frames = [pq.read_table(path, filesystem=target.fs).to_pandas() for path in files]
    frames = [frame for frame in frames if len(frame)]
    if not frames:
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.concat(frames, ignore_index=True)


def relative_errors(outcomes: pd.DataFrame) -> np.ndarray:
    """(served - sold) / sold per outcome: positive when the model priced above the sale."""
    return (outcomes["served_price"].to_numpy("float64") - outcomes["sold_price"].to_numpy("float64")) / outcomes[
        "sold_price"
    ].to_numpy("float64")

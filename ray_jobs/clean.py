"""Cleaning: raw batch -> clean batch, as Ray Data transforms, with a count per rule.

Rows are REMOVED by the first rule they fail, in this order:
  missing_price            no price: nothing to learn from
  price_below_floor        price < $1,000 (the real data has price 0 and $1 "listings")
  price_above_cap          price > $100M (beyond any plausible home; the sample's max is $212.5M)
  unknown_status           status not for_sale / sold / ready_to_build (after trimming, lower-casing)
  unknown_state            state not one of the 54 in the dataset (case-insensitive)
  bed_out_of_range         bed outside 0..50          } the serving API's own bounds
  bath_out_of_range        bath outside 0..50         } (rayestate.schema), so the model is trained
  acre_lot_out_of_range    acre_lot outside 0..100,000} on exactly what it can be asked about;
  house_size_out_of_range  house_size outside 100..100,000 sq ft  } bed 99 / bath 198 go here
  duplicate                an exact copy (after normalising) of an earlier row in the batch

Values are REPAIRED (set to null, row kept):
  zip_invalid              zip_code not a whole number in 0..99999
  zip_state_mismatch       zip's 3-digit prefix does not belong to the row's state (USPS ranges)
  prev_sold_date_invalid   prev_sold_date not YYYY-MM-DD or in the future

Kept on purpose: rows with missing bed / bath / house_size / acre_lot. A fifth of the real
listings are bare land or ready-to-build homes with those fields empty; XGBoost routes missing
values natively, and dropping them would bias the training data towards finished houses.
ZIPs stay floats like the raw data (01001 is 1001.0); the feature code reads them as 5-digit text.

The raw batch is never modified: the result is a separate clean batch with its own manifest.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rayestate import store
from rayestate.geography import zip_matches_state
from rayestate.schema import (
    MAX_ACRE_LOT,
    MAX_BATH,
    MAX_BED,
    MAX_HOUSE_SIZE,
    MIN_HOUSE_SIZE,
    NUMERIC_COLUMNS,
    RAW_COLUMNS,
    STATES,
    STATUSES,
    conform_table,
)
from rayestate.settings import Settings

CLEAN_VERSION = 1
PRICE_FLOOR = 1_000.0
PRICE_CAP = 100_000_000.0
REMOVAL_RULES = (
    "missing_price", "price_below_floor", "price_above_cap", "unknown_status", "unknown_state",
    "bed_out_of_range", "bath_out_of_range", "acre_lot_out_of_range", "house_size_out_of_range",
)  # fmt: skip
DUPLICATE_RULE = "duplicate"
REPAIR_RULES = ("zip_invalid", "zip_state_mismatch", "prev_sold_date_invalid")
RULE_COLUMN, REPAIR_COLUMN, HASH_COLUMN = "_rule", "_repairs", "_row_hash"
_STATE_BY_LOWER = {s.lower(): s for s in STATES}


def _outside(values: pd.Series, low: float, high: float) -> pd.Series:
    return values.notna() & ((values < low) | (values > high))


def flag_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Normalise one chunk of raw rows and flag them (pure pandas; runs inside Ray Data tasks).

    Adds _rule (0 = keep, else 1 + index of the first failed REMOVAL_RULES entry), _repairs
    (bit i set = REPAIR_RULES[i] applied) and _row_hash (of the normalised row, for duplicates).
    """
    out = frame[list(RAW_COLUMNS)].copy()
    for column in NUMERIC_COLUMNS:  # Ray hands over Arrow-backed columns; NaN semantics are simpler
        out[column] = out[column].astype("float64")
    for column in ("status", "state", "city", "prev_sold_date"):
        out[column] = out[column].astype("str").str.strip()  # Arrow-backed: vectorised string ops
    out["status"] = out["status"].str.lower()
    out["state"] = out["state"].str.lower().map(_STATE_BY_LOWER).fillna(out["state"]).astype("str")

    zips = out["zip_code"]
    whole = zips.notna() & (zips >= 0) & (zips < 100_000) & (np.floor(zips) == zips)
    zip_invalid = zips.notna() & ~whole
    zip_mismatch = whole & ~zip_matches_state(zips, out["state"]) & out["state"].isin(STATES)
    out["zip_code"] = zips.where(~(zip_invalid | zip_mismatch))

    dates = out["prev_sold_date"]
    sold = pd.to_datetime(dates.where(dates.str.fullmatch(r"\d{4}-\d{2}-\d{2}")), format="%Y-%m-%d", errors="coerce")
    date_invalid = dates.notna() & (sold.isna() | (sold > pd.Timestamp.now())).to_numpy()
    out["prev_sold_date"] = dates.where(~date_invalid)

    price = out["price"]
    failed = [
        price.isna(),
        price < PRICE_FLOOR,
        price > PRICE_CAP,
        ~out["status"].isin(STATUSES),
        ~out["state"].isin(STATES),
        _outside(out["bed"], 0, MAX_BED),
        _outside(out["bath"], 0, MAX_BATH),
        _outside(out["acre_lot"], 0, MAX_ACRE_LOT),
        _outside(out["house_size"], MIN_HOUSE_SIZE, MAX_HOUSE_SIZE),
    ]
    rule = np.zeros(len(out), dtype=np.int8)
    for code, mask in reversed(list(enumerate(failed, start=1))):  # the first failed rule wins
        rule[mask.to_numpy(dtype=bool)] = code
    repairs = sum(
        m.to_numpy(dtype=bool).astype(np.int8) << i for i, m in enumerate([zip_invalid, zip_mismatch, date_invalid])
    )
    out[HASH_COLUMN] = pd.util.hash_pandas_object(out[list(RAW_COLUMNS)], index=False).to_numpy()
    out[RULE_COLUMN] = rule
    out[REPAIR_COLUMN] = np.asarray(repairs, dtype=np.int8)
    return out


def decide(rule: np.ndarray, repairs: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, dict, dict]:
    """From a whole batch's flags: the positions of the rows kept (in order), and the counts per rule.

    Only the flags are needed (a byte, a byte and 8 bytes a row), never the rows themselves: the
    Ray path gathers just these to the driver, whatever the batch's size.
    """
    counts = np.bincount(rule, minlength=len(REMOVAL_RULES) + 1)
    removed = {name: int(counts[i + 1]) for i, name in enumerate(REMOVAL_RULES)}
    repaired = {name: int(((repairs >> i) & 1)[rule == 0].sum()) for i, name in enumerate(REPAIR_RULES)}
    kept = np.flatnonzero(rule == 0)
    _, first = np.unique(hashes[kept], return_index=True)
    unique_rows = kept[np.sort(first)]
    removed[DUPLICATE_RULE] = int(kept.size - unique_rows.size)
    return unique_rows, removed, repaired


def finish(flagged: pa.Table) -> tuple[pa.Table, dict[str, int], dict[str, int]]:
    """Drop flagged rows and duplicates from the collected flags; returns (clean, removed, repaired)."""
    unique_rows, removed, repaired = decide(*(flagged.column(c).to_numpy() for c in FLAG_COLUMNS))
    clean = conform_table(flagged.take(pa.array(unique_rows)), where="clean batch")
    return clean, removed, repaired


FLAG_COLUMNS = (RULE_COLUMN, REPAIR_COLUMN, HASH_COLUMN)


def _read_and_flag(parts: dict[str, np.ndarray], filesystem) -> pa.Table:
    """Ray Data UDF: read raw Parquet part(s) and flag their rows."""
    tables = [pq.read_table(path, filesystem=filesystem, partitioning=None) for path in parts["path"]]
    return pa.Table.from_pandas(flag_rows(pa.concat_tables(tables).to_pandas()), preserve_index=False)


def _flags_of(block: pa.Table) -> pa.Table:
    """Ray task: a flagged block's flags, without its rows."""
    return block.select(list(FLAG_COLUMNS))


def _write_clean_part(block: pa.Table, positions: np.ndarray, target: store.Store, relative: str):
    """Ray task: write a block's kept rows as one clean part; (rows, path, schema, row hashes for the sha256)."""
    clean = conform_table(block.take(pa.array(positions, type=pa.int64())), where="clean batch")
    buffer = io.BytesIO()
    pq.write_table(clean, buffer, compression="zstd")
    store.write_atomic(target, target.path(relative), buffer.getvalue())
    return clean.num_rows, relative, clean.schema, store.row_hashes(clean)


def clean_table_pandas(table: pa.Table) -> tuple[pa.Table, dict[str, int], dict[str, int]]:
    """The same cleaning in one process without Ray (tests, the benchmark's baseline)."""
    return finish(pa.Table.from_pandas(flag_rows(table.to_pandas()), preserve_index=False))


def clean_batch(settings: Settings, batch_id: str) -> store.CleanRecord:
    """Clean one published raw batch into clean/ (a no-op if already cleaned from the same raw rows)."""
    import ray
    import ray.data

    raw = store.get_record(settings, "raw", batch_id)
    if raw is None:
        raise KeyError(f"no published raw batch {batch_id}; ingest it first")
    existing = store.get_record(settings, "clean", batch_id)
    if existing is not None and existing.raw_sha256 == raw.sha256 and existing.clean_version == CLEAN_VERSION:
        return existing
    raw_store = store.open_store(settings)
    # One Ray Data task per Parquet part (read_parquet may pack small files into one task).
    parts = ray.data.from_items([{"path": raw_store.path(f)} for f in raw.files], override_num_blocks=len(raw.files))
    parts.context.execution_options.preserve_order = True  # same rows, same order, same sha256
    flagged = parts.map_batches(_read_and_flag, batch_size=1, fn_kwargs={"filesystem": raw_store.fs})
    blocks = flagged.to_arrow_refs()  # the flagged rows stay in the object store
    # The driver decides on the flags alone (10 bytes a row); each block's kept rows are written by a task.
    block_flags = ray.get([ray.remote(_flags_of).remote(block) for block in blocks])
    flags = pa.concat_tables(block_flags)
    kept, removed, repaired = decide(*(flags.column(c).to_numpy() for c in FLAG_COLUMNS))
    bounds = np.cumsum([0, *(f.num_rows for f in block_flags)])
    directory = store.data_dir("clean", raw)
    write = ray.remote(_write_clean_part)
    written = []
    for i, block in enumerate(blocks):
        positions = kept[(kept >= bounds[i]) & (kept < bounds[i + 1])] - bounds[i]
        written.append(write.remote(block, positions, raw_store, f"{directory}/part-{i}.parquet"))
    written = ray.get(written)
    schema = written[0][2]
    record = store.CleanRecord(
        batch_id=batch_id,
        source=raw.source,
        group_number=raw.group_number,
        day=raw.day,
        batch_number=raw.batch_number,
        rows=sum(rows for rows, _, _, _ in written),
        sha256=store.content_sha256_of(schema, [hashes for _, _, _, hashes in written]),
        fetched_at=raw.fetched_at,
        notes=raw.notes,
        rows_in=raw.rows,
        raw_sha256=raw.sha256,
        removed=removed,
        repaired=repaired,
        clean_version=CLEAN_VERSION,
        files=[relative for _, relative, _, _ in written],
    )
    record.published_at = store.now()
    store.publish_manifest(settings, "clean", record)
    return record

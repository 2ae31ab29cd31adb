"""Where raw batches come from: the course-compatible data API, or a CSV/Parquet file.

The API is an outside service we do not control, so the client retries what is plausibly
transient (timeouts, refused connections, 5xx) with exponential backoff, and rejects anything
malformed with a :class:`BatchError` naming the field instead of passing it downstream.
Responses are parsed with Arrow's JSON reader (C++, columnar) rather than into a million
Python dicts. Note the API advances its sequence when it answers, so a response lost in
transit is a batch the server will not send again (until a restart_data_generation).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from rayestate.schema import (
    NUMERIC_COLUMNS,
    RAW_COLUMNS,
    RAW_SCHEMA,
    REQUIRED_COLUMNS,
    absent_columns_note,
    conform_table,
    load_listings_file,
)
from rayestate.settings import Settings

API_SOURCE = "api"
#: What the course API answers (HTTP 400) once it has served every batch of a group and day.
EXHAUSTED_DETAIL = "Ya se recolectó toda la información mínima necesaria"


class BatchError(ValueError):
    """The source answered, but not with a usable batch."""


class DataAPIUnavailable(ConnectionError):
    """The data API did not answer usefully after every retry."""


class _ServerError(Exception):
    """A 5xx answer: worth retrying."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Batch:
    """One batch of raw listings, conformed to RAW_SCHEMA, and where it came from."""

    source: str
    group_number: int
    day: str
    batch_number: int
    table: pa.Table
    fetched_at: str = field(default_factory=_now)
    #: What ingestion should record about the batch (e.g. columns the source did not have).
    notes: tuple[str, ...] = ()

    @property
    def batch_id(self) -> str:
        """Stable id: the same batch from the same source always gets the same id."""
        return f"{self.source}.g{self.group_number}.{self.day}.b{self.batch_number:06d}"

    @property
    def rows(self) -> int:
        return self.table.num_rows


# --- the data API ------------------------------------------------------------------------


def fetch_batch(settings: Settings, client: httpx.Client | None = None) -> Batch | None:
    """The next batch for settings.group_number / day; None when the API says it has no more."""
    url = f"{settings.data_api_url.rstrip('/')}/data"
    params = {"group_number": settings.group_number, "day": settings.day}
    retrying = Retrying(
        stop=stop_after_attempt(settings.http_retries + 1),
        wait=wait_exponential(multiplier=settings.http_backoff_s, max=30),
        retry=retry_if_exception_type((httpx.TransportError, _ServerError)),
        reraise=True,
    )
    owned = client is None
    client = client or httpx.Client(timeout=settings.http_timeout_s)
    try:
        response = retrying(_get, client, url, params)
    except (httpx.TransportError, _ServerError) as exc:
        raise DataAPIUnavailable(
            f"data API {url} failed after {settings.http_retries + 1} attempt(s): {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        if owned:
            client.close()
    if response.status_code == 400 and _detail(response) == EXHAUSTED_DETAIL:
        return None
    if response.status_code != 200:
        raise BatchError(f"data API {url} answered HTTP {response.status_code}: {_detail(response)}")
    header, table, notes = parse_batch(response.content, max_rows=settings.max_batch_rows, where=f"data API {url}")
    if (header["group_number"], header["day"]) != (settings.group_number, settings.day):
        raise BatchError(
            f"data API {url} sent group {header['group_number']} / {header['day']}, "
            f"but group {settings.group_number} / {settings.day} was asked for"
        )
    return Batch(API_SOURCE, header["group_number"], header["day"], header["batch_number"], table, notes=notes)


def _get(client: httpx.Client, url: str, params: dict) -> httpx.Response:
    response = client.get(url, params=params)
    if response.status_code >= 500:
        raise _ServerError(f"HTTP {response.status_code}: {response.text[:200]}")
    return response


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text[:300]))
    except (ValueError, AttributeError):
        return response.text[:300]


def parse_batch(body: bytes, *, max_rows: int, where: str = "batch") -> tuple[dict, pa.Table, tuple[str, ...]]:
    """Validate a /data response body; returns its header fields, the rows as RAW_SCHEMA and notes."""
    if not body.strip():
        raise BatchError(f"{where}: empty response body")
    try:
        parsed = pa_json.read_json(
            io.BytesIO(body),
            read_options=pa_json.ReadOptions(block_size=len(body) + 1),
            parse_options=pa_json.ParseOptions(newlines_in_values=True),
        )
    except pa.ArrowInvalid as exc:
        mixed = re.search(r"Column\((/[^)]*)\) changed from (\w+) to (\w+)", str(exc))
        if mixed:
            raise BatchError(f"{where}: field {mixed[1]} mixes {mixed[2]} and {mixed[3]} values") from None
        raise BatchError(f"{where}: response is not one valid JSON object (truncated?): {exc}") from None
    if parsed.num_rows != 1:
        raise BatchError(f"{where}: expected one JSON object, got {parsed.num_rows}")
    header = {
        "group_number": _header_field(parsed, "group_number", pa.types.is_integer, "an integer", where),
        "day": _header_field(parsed, "day", pa.types.is_string, "a string", where),
        "batch_number": _header_field(parsed, "batch_number", pa.types.is_integer, "an integer", where),
    }
    if "data" not in parsed.column_names:
        raise BatchError(f"{where}: field 'data' is missing")
    data = parsed.column("data").combine_chunks()
    if not pa.types.is_list(data.type) or data.null_count:
        raise BatchError(f"{where}: field 'data' must be a list of row objects, got {data.type}")
    rows = data.flatten()
    if len(rows) == 0:
        raise BatchError(f"{where}: field 'data' is an empty batch")
    if not pa.types.is_struct(rows.type):
        raise BatchError(f"{where}: field 'data' must hold row objects, got {rows.type}")
    if rows.null_count:
        raise BatchError(f"{where}: data holds {rows.null_count} null row(s) instead of objects")
    if len(rows) > max_rows:
        raise BatchError(f"{where}: batch has {len(rows):,} rows, more than max_batch_rows={max_rows:,}")
    return header, _rows_table(rows, where), tuple(absent_columns_note([f.name for f in rows.type]))


def _header_field(parsed: pa.Table, name: str, type_ok, expected: str, where: str):
    if name not in parsed.column_names:
        raise BatchError(f"{where}: field {name!r} is missing")
    column = parsed.column(name)
    if not type_ok(column.type) or column.null_count:
        raise BatchError(f"{where}: field {name!r} must be {expected}, got {column.type}")
    return column[0].as_py()


def _rows_table(rows: pa.StructArray, where: str) -> pa.Table:
    names = [f.name for f in rows.type]
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    unexpected = [c for c in names if c not in RAW_COLUMNS]
    if missing or unexpected:
        problems = [f"missing column(s) {', '.join(missing)}"] * bool(missing)
        problems += [f"unexpected column(s) {', '.join(unexpected)}"] * bool(unexpected)
        raise BatchError(f"{where}: rows have {'; '.join(problems)}")
    arrays, present = [], []
    for target in RAW_SCHEMA:
        if target.name not in names:  # an optional ID column; conform_table adds it as null
            continue
        present.append(target.name)
        column = rows.field(target.name)
        kind = column.type
        if target.name in NUMERIC_COLUMNS:
            if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind)):
                raise BatchError(f"{where}: column {target.name!r} must hold numbers or null, got {kind}")
            column = column.cast(pa.float64())
            column = pc.if_else(pc.is_nan(column), pa.scalar(None, pa.float64()), column)  # NaN means missing
        elif pa.types.is_timestamp(kind) and target.name == "prev_sold_date":
            # Arrow's JSON reader turns ISO date strings into timestamps; back to YYYY-MM-DD text.
            column = column.cast(pa.date32(), safe=False).cast(pa.string())
        elif not (pa.types.is_string(kind) or pa.types.is_null(kind)):
            raise BatchError(f"{where}: column {target.name!r} must hold strings or null, got {kind}")
        arrays.append(column)
    return conform_table(pa.Table.from_arrays(arrays, names=present), where=where)


# --- files ---------------------------------------------------------------------------------


def file_source_id(path: Path) -> str:
    """A store-safe source id for a file ('file-realtor' for .../realtor.parquet)."""
    stem = Path(path).name.split(".")[0]
    return "file-" + (re.sub(r"[^A-Za-z0-9_-]+", "_", stem) or "data")


def read_file_batches(path: Path, batch_rows: int, *, group_number: int = 0, day: str = "file") -> Iterator[Batch]:
    """Split a CSV/Parquet file into batches 1..N of ``batch_rows`` rows, in file order.

    The numbering depends only on the file and batch_rows, so a re-run yields the same batch
    ids and ingestion skips the batches it already has.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    raw = load_listings_file(path)
    notes = tuple(absent_columns_note(raw.column_names))
    table = conform_table(raw, where=str(path))
    source = file_source_id(path)
    for number, start in enumerate(range(0, table.num_rows, batch_rows), start=1):
        yield Batch(source, group_number, day, number, table.slice(start, batch_rows), notes=notes)

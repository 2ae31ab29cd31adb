"""The one definition of a listing: raw batch columns (Arrow) and the API's request model.

Jobs, the data API, serving and the UI all import from here, so a column is added or
bounded in exactly one place.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = 1

#: Columns of the Kaggle "USA Real Estate Dataset" (12-column version), in file order.
RAW_SCHEMA = pa.schema(
    [
        ("brokered_by", pa.float64()),
        ("status", pa.string()),
        ("price", pa.float64()),
        ("bed", pa.float64()),
        ("bath", pa.float64()),
        ("acre_lot", pa.float64()),
        ("street", pa.float64()),
        ("city", pa.string()),
        ("state", pa.string()),
        ("zip_code", pa.float64()),
        ("house_size", pa.float64()),
        ("prev_sold_date", pa.string()),
    ]
)
RAW_COLUMNS: tuple[str, ...] = tuple(RAW_SCHEMA.names)
NUMERIC_COLUMNS = tuple(f.name for f in RAW_SCHEMA if pa.types.is_floating(f.type))
STRING_COLUMNS = tuple(f.name for f in RAW_SCHEMA if pa.types.is_string(f.type))
#: The agency and street IDs: absent from the dataset's older 10-column version, and not needed to
#: price a home, so a batch without them is ingested with them null (and a note in its manifest).
OPTIONAL_COLUMNS = ("brokered_by", "street")
#: Columns every batch must carry.
REQUIRED_COLUMNS = tuple(c for c in RAW_COLUMNS if c not in OPTIONAL_COLUMNS)
#: The size fields a fifth to a quarter of real listings lack; the model prices without them.
SIZE_FIELDS = ("bed", "bath", "acre_lot", "house_size")
TARGET = "price"

STATUSES = ("for_sale", "sold", "ready_to_build")

#: The 54 states/territories of the dataset (50 states, DC, Puerto Rico, Virgin Islands, Guam).
STATES = (
    "Alabama", "Alaska", "Arizona", "Arkansas", "California", "Colorado", "Connecticut",
    "Delaware", "District of Columbia", "Florida", "Georgia", "Guam", "Hawaii", "Idaho",
    "Illinois", "Indiana", "Iowa", "Kansas", "Kentucky", "Louisiana", "Maine", "Maryland",
    "Massachusetts", "Michigan", "Minnesota", "Mississippi", "Missouri", "Montana", "Nebraska",
    "Nevada", "New Hampshire", "New Jersey", "New Mexico", "New York", "North Carolina",
    "North Dakota", "Ohio", "Oklahoma", "Oregon", "Pennsylvania", "Puerto Rico",
    "Rhode Island", "South Carolina", "South Dakota", "Tennessee", "Texas", "Utah", "Vermont",
    "Virgin Islands", "Virginia", "Washington", "West Virginia", "Wisconsin", "Wyoming",
)  # fmt: skip


class SchemaError(ValueError):
    """A batch or file does not have the realtor listing schema."""


def check_columns(columns, *, where: str = "batch") -> None:
    """Raise SchemaError naming every missing column (extra columns are allowed and ignored)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in set(columns)]
    if missing:
        raise SchemaError(f"{where} is missing column(s) {', '.join(missing)}")


def absent_optional_columns(columns) -> list[str]:
    """The OPTIONAL_COLUMNS a batch or file does not carry."""
    return [c for c in OPTIONAL_COLUMNS if c not in set(columns)]


def absent_columns_note(columns) -> list[str]:
    """The manifest note for a batch without the ID columns (empty when it has them)."""
    absent = absent_optional_columns(columns)
    if not absent:
        return []
    return [f"the source has no {', '.join(absent)} column(s) (the dataset's older version): ingested as null"]


def conform_table(table: pa.Table, *, where: str = "batch") -> pa.Table:
    """Select the realtor columns in order and cast them to RAW_SCHEMA, naming any bad column.

    Absent OPTIONAL_COLUMNS become all-null columns; any other absent column is a SchemaError.
    """
    check_columns(table.column_names, where=where)
    arrays = []
    for field in RAW_SCHEMA:
        if field.name not in table.column_names:  # an optional ID column (check_columns passed)
            arrays.append(pa.nulls(table.num_rows, field.type))
            continue
        column = table.column(field.name)
        try:
            arrays.append(column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SchemaError(f"{where}: column {field.name!r} cannot be read as {field.type} ({exc})") from None
    return pa.Table.from_arrays(arrays, schema=RAW_SCHEMA)


def load_listings_file(path, *, where: str | None = None) -> pa.Table:
    """A CSV or Parquet file as it is (columns not yet conformed); CSV cells read with RAW_SCHEMA's types.

    CSV columns are read with the schema's types (so zip 01001 stays a number, as in the
    dataset) and empty cells become nulls.
    """
    path = Path(path)
    where = where or str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pq.read_table(path)
    if suffix in (".csv", ".gz") and ".csv" in path.name.lower():
        options = pa_csv.ConvertOptions(column_types=RAW_SCHEMA, strings_can_be_null=True)
        try:
            return pa_csv.read_csv(path, convert_options=options)
        except pa.ArrowInvalid as exc:
            raise SchemaError(f"{where}: {exc}") from None
    raise SchemaError(f"{where}: expected a .csv or .parquet file, got {path.suffix or 'no extension'!r}")


def read_listings_file(path, *, where: str | None = None) -> pa.Table:
    """A CSV or Parquet file with the realtor columns, conformed to RAW_SCHEMA.

    Extra columns (e.g. the API's batch_number) are dropped; absent ID columns become null.
    """
    return conform_table(load_listings_file(path, where=where), where=where or str(path))


# --- the API's listing --------------------------------------------------------------
# Bounds are wide enough for every real listing in the sample yet reject impossible ones.
MAX_BED = 50
MAX_BATH = 50
MAX_ACRE_LOT = 100_000.0
MIN_HOUSE_SIZE = 100.0
MAX_HOUSE_SIZE = 100_000.0


class Listing(BaseModel):
    """A home to price: the dataset's columns minus price.

    Only ``state`` is required: real listings often lack sizes (bare land has no bedrooms), and the
    model prices them as they come. Values that are given must be possible (bounds below).
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    bed: float | None = Field(
        None, allow_inf_nan=False, ge=0, le=MAX_BED, description="Bedrooms (leave out if unknown)", examples=[3]
    )
    bath: float | None = Field(
        None, allow_inf_nan=False, ge=0, le=MAX_BATH, description="Bathrooms (leave out if unknown)", examples=[2]
    )
    acre_lot: float | None = Field(
        None, allow_inf_nan=False, ge=0, le=MAX_ACRE_LOT, description="Lot size in acres (leave out if unknown)",
        examples=[0.25],
    )  # fmt: skip
    house_size: float | None = Field(
        None,
        allow_inf_nan=False,
        ge=MIN_HOUSE_SIZE,
        le=MAX_HOUSE_SIZE,
        description="Living area, sq ft (leave out if unknown)",
        examples=[1800],
    )
    state: str = Field(..., min_length=2, max_length=40, examples=["Florida"])
    status: Literal["for_sale", "sold", "ready_to_build"] = "for_sale"
    city: str | None = Field(None, max_length=80, examples=["Tampa"])
    zip_code: str | None = Field(
        None, pattern=r"^\d{3,5}$", description="ZIP code; leading zeros optional", examples=["33602"]
    )
    prev_sold_date: str | None = Field(
        None, pattern=r"^\d{4}-\d{2}-\d{2}$", description="YYYY-MM-DD", examples=["2015-06-01"]
    )
    brokered_by: float | None = Field(None, allow_inf_nan=False, ge=0, le=1e9)
    street: float | None = Field(None, allow_inf_nan=False, ge=0, le=1e9)

    @field_validator("zip_code", mode="before")
    @classmethod
    def _zip_as_text(cls, value):
        # Accept 2101, 2101.0 and "02101" alike: the dataset stores zips as floats.
        if isinstance(value, bool):
            raise ValueError("must be a ZIP code")
        if isinstance(value, int | float):
            if not math.isfinite(value) or value < 0 or value != int(value):
                raise ValueError("must be a whole, non-negative ZIP code")
            return f"{int(value):05d}"
        return value

    def to_raw_row(self) -> dict:
        """The listing as a raw-schema row (zip as float, like the dataset)."""
        row = self.model_dump()
        row["zip_code"] = float(row["zip_code"]) if row["zip_code"] is not None else None
        row["price"] = None
        return {c: row.get(c) for c in RAW_COLUMNS}

"""Reading batches without a server: parsing a data-API answer, and listing files cut into batches
(the HTTP client, its retries and bad answers are in integration/test_source.py)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.source import file_source_id, parse_batch, read_file_batches
from rayestate.devstack.synthetic import generate_listings, generate_table
from rayestate.schema import RAW_COLUMNS, RAW_SCHEMA, SchemaError
from tests.support.listings import API_HEADER, api_body, api_rows

OLD_COLUMNS = [c for c in RAW_COLUMNS if c not in ("brokered_by", "street")]  # the 10-column dataset


def test_parse_keeps_values_and_nulls():
    rows = api_rows(50)
    rows[0]["bed"], rows[1]["prev_sold_date"], rows[2]["bath"] = None, None, 3  # an int where floats are
    header, table, notes = parse_batch(api_body(rows), max_rows=100)
    assert notes == ()
    assert header == API_HEADER and table.schema.equals(RAW_SCHEMA) and table.num_rows == 50
    assert table.column("bed")[0].as_py() is None and table.column("bath")[2].as_py() == 3.0
    assert table.column("prev_sold_date").to_pylist()[3:] == [r["prev_sold_date"] for r in rows[3:]]
    assert table.column("zip_code").to_pylist() == [r["zip_code"] for r in rows]


def test_file_batches_are_deterministic(tmp_path):
    table = generate_table(2_500, seed=4)
    parquet, csv = tmp_path / "listings.parquet", tmp_path / "listings.csv"
    pq.write_table(table, parquet)
    generate_listings(2_500, seed=4).to_csv(csv, index=False)
    for path in (parquet, csv):
        batches = list(read_file_batches(path, 1_000))
        assert [(b.batch_number, b.rows) for b in batches] == [(1, 1_000), (2, 1_000), (3, 500)]
        assert batches[0].batch_id == "file-listings.g0.file.b000001" == next(read_file_batches(path, 1_000)).batch_id
        assert pa.concat_tables([b.table for b in batches]).equals(table)
    with pytest.raises(ValueError, match="batch_rows"):
        next(read_file_batches(parquet, 0))


def test_file_source_id_is_store_safe(tmp_path):
    assert file_source_id(tmp_path / "my data (v2).csv.gz") == "file-my_data_v2_"


def test_the_old_10_column_file_is_ingested_with_its_ids_null_and_a_note(tmp_path):
    """The dataset's older version lacks brokered_by and street: optional for pricing, so null, noted."""
    path = tmp_path / "realtor-old.csv"
    generate_listings(50, seed=2)[OLD_COLUMNS].to_csv(path, index=False)
    (batch,) = read_file_batches(path, 100)
    assert batch.table.num_rows == 50 and batch.table.column("brokered_by").null_count == 50
    assert "brokered_by, street" in batch.notes[0]
    without_state = tmp_path / "no-state.csv"
    generate_listings(50, seed=2)[[c for c in OLD_COLUMNS if c != "state"]].to_csv(without_state, index=False)
    with pytest.raises(SchemaError, match="state"):  # a column pricing needs is still required
        next(read_file_batches(without_state, 10))

"""The raw store on a local directory: tamper detection, parts, store URIs (no Ray, no S3; those are
in integration/test_store_ingest.py)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from ray_jobs.ingest import ingest_batch
from ray_jobs.source import Batch
from rayestate import store
from rayestate.devstack.synthetic import generate_table


def make_batch(rows: int = 2_000, seed: int = 1, number: int = 1) -> Batch:
    return Batch("api", 1, "Tuesday", number, generate_table(rows, seed=seed))


def test_tampered_files_are_detected(settings):
    record = ingest_batch(settings, make_batch())
    target = store.open_store(settings)
    pq.write_table(generate_table(2_000, seed=5), target.path(record.files[0]))
    with pytest.raises(store.StoreError, match="do not match the manifest"):
        store.read_table(settings, "raw", record.batch_id)
    with pytest.raises(KeyError, match="no published raw batch nope"):
        store.read_table(settings, "raw", "nope")


def test_big_batches_are_split_into_parts(settings, monkeypatch):
    monkeypatch.setattr(store, "ROWS_PER_PART", 1_000)
    batch = make_batch(rows=2_500)
    record = ingest_batch(settings, batch)
    assert [f.rsplit("/", 1)[1] for f in record.files] == ["part-0.parquet", "part-1.parquet", "part-2.parquet"]
    assert store.read_table(settings, "raw", record.batch_id).equals(batch.table)
    leftovers = [p for p in (settings.state_dir / "store").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_store_uri_forms(tmp_path, settings):
    local = settings.model_copy(update={"store_uri": f"file://{tmp_path}/elsewhere"})
    assert store.open_store(local).root == f"{tmp_path}/elsewhere" and (tmp_path / "elsewhere").is_dir()
    assert store.open_store(settings).root == str(settings.state_dir / "store")


def test_content_sha256_adds_up_part_by_part():
    # The Ray cleaning job writes a batch part by part and never holds it whole: its sha256 is still the table's.
    import pyarrow as pa

    from rayestate.schema import conform_table

    table = conform_table(generate_table(3_000, seed=2), where="test")
    parts = [table.slice(0, 1_000), table.slice(1_000, 0), table.slice(1_000, 2_000)]
    assert store.content_sha256_of(table.schema, [store.row_hashes(p) for p in parts]) == store.content_sha256(table)
    assert store.content_sha256(pa.concat_tables(parts)) == store.content_sha256(table)

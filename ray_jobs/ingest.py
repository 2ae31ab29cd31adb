"""Ingestion: store a fetched batch, unmodified, as a raw batch.

Idempotent by batch id: ingesting a batch that is already published returns the existing
record and writes nothing, so a pipeline re-run (or a re-served file batch) is harmless. A batch
id that comes back with different rows is refused, because raw data is never rewritten. Crash
safety comes from the store: data first, manifest last (see rayestate.store).
"""

from __future__ import annotations

from ray_jobs.source import Batch
from rayestate import store
from rayestate.schema import conform_table
from rayestate.settings import Settings


class BatchConflictError(ValueError):
    """The same batch id was published before with different rows."""


def ingest_batch(settings: Settings, batch: Batch) -> store.RawRecord:
    """Publish ``batch`` under raw/ and return its manifest record (the existing one on a re-run)."""
    table = conform_table(batch.table, where=f"batch {batch.batch_id}")
    sha256 = store.content_sha256(table)
    existing = store.get_record(settings, "raw", batch.batch_id)
    if existing is not None:
        if existing.sha256 != sha256:
            raise BatchConflictError(
                f"raw batch {batch.batch_id} is already stored with different rows "
                f"({existing.rows} rows, sha256 {existing.sha256[:12]} vs {table.num_rows} rows, {sha256[:12]}); "
                "raw data is never overwritten: did the data API's dataset change? Use another store_uri or group."
            )
        return existing
    record = store.RawRecord(
        batch_id=batch.batch_id,
        source=batch.source,
        group_number=batch.group_number,
        day=batch.day,
        batch_number=batch.batch_number,
        rows=table.num_rows,
        sha256=sha256,
        fetched_at=batch.fetched_at,
        notes=list(batch.notes),
    )
    return store.publish(settings, "raw", record, table)

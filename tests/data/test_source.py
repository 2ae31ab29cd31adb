"""The real API batch file read as the pipeline's file source."""

from __future__ import annotations

from ray_jobs.source import read_file_batches
from rayestate.schema import RAW_COLUMNS


def test_reads_the_real_api_batch_file(api_batch):
    (batch,) = read_file_batches(api_batch, 10_000)
    assert batch.rows == 4_055 and batch.table.column_names == list(RAW_COLUMNS)
    assert set(batch.table.column("state").to_pylist()) == {"Massachusetts"}

"""Ingestion into the raw store on the real local Ray cluster: a local dir and a real S3 server (moto).

Store checks that need neither Ray nor S3 are in unit/test_store.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from ray_jobs.ingest import BatchConflictError, ingest_batch
from ray_jobs.source import Batch
from rayestate import store
from rayestate.devstack.synthetic import generate_table
from rayestate.localstack import settings_env

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(params=["local", "s3"])
def store_settings(request, settings):
    return settings if request.param == "local" else request.getfixturevalue("s3_settings")


def make_batch(rows: int = 2_000, seed: int = 1, number: int = 1) -> Batch:
    return Batch("api", 1, "Tuesday", number, generate_table(rows, seed=seed))


def test_ingest_as_a_ray_task_publishes_a_readable_batch(ray_cluster, store_settings):
    import ray

    batches = [make_batch(number=1), make_batch(seed=2, number=2)]
    records = ray.get([ray.remote(ingest_batch).remote(store_settings, b) for b in batches])
    assert [r.batch_id for r in records] == ["api.g1.Tuesday.b000001", "api.g1.Tuesday.b000002"]
    assert {r.batch_id for r in store.list_records(store_settings, "raw")} == {r.batch_id for r in records}
    first = store.get_record(store_settings, "raw", records[0].batch_id)
    assert first == records[0] and first.rows == 2_000 and first.files == ["raw/api/1/Tuesday/batch=1/part-0.parquet"]
    assert (first.group_number, first.day, first.batch_number, first.schema_version) == (1, "Tuesday", 1, 1)
    assert store.read_table(store_settings, "raw", first.batch_id).equals(batches[0].table)
    frame = store.read_frame(store_settings, "raw")
    assert len(frame) == 4_000 and list(frame.columns) == batches[0].table.column_names
    dataset = store.read_dataset(store_settings, "raw", [first.batch_id])
    assert dataset.count() == 2_000
    assert pa.concat_tables(ray.get(dataset.to_arrow_refs())).equals(batches[0].table)


def test_s3_layout(ray_cluster, s3_settings):
    import boto3

    from tests.support.servers import MOTO_KEY, MOTO_SECRET

    record = ingest_batch(s3_settings, make_batch())
    bucket = s3_settings.store_uri.removeprefix("s3://").split("/")[0]
    client = boto3.client(
        "s3", endpoint_url=s3_settings.s3_endpoint_url, aws_access_key_id=MOTO_KEY, aws_secret_access_key=MOTO_SECRET,
        region_name="us-east-1",
    )  # fmt: skip
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {"store/raw/api/1/Tuesday/batch=1/part-0.parquet", f"store/manifests/raw/{record.batch_id}.json"}


def test_reingesting_is_a_no_op_and_a_changed_batch_is_refused(store_settings):
    batch = make_batch()
    first = ingest_batch(store_settings, batch)
    again = ingest_batch(store_settings, make_batch())  # same id and rows, fetched again later
    assert again == first  # the existing record, including its original publication time
    with pytest.raises(BatchConflictError, match="already stored with different rows"):
        ingest_batch(store_settings, make_batch(seed=99))
    assert store.read_table(store_settings, "raw", first.batch_id).equals(batch.table)  # raw untouched


CRASHING_INGEST = textwrap.dedent(
    """
    import os
    from rayestate.settings import Settings
    from rayestate.devstack.synthetic import generate_table
    from ray_jobs import ingest
    from ray_jobs.source import Batch
    from rayestate import store

    def crash(*args, **kwargs):
        os._exit(9)  # the process dies between writing the data and publishing the manifest

    store.publish_manifest = crash
    ingest.ingest_batch(Settings(), Batch("api", 1, "Tuesday", 1, generate_table(2_000, seed=1)))
    """
)


def test_a_crash_between_write_and_publish_leaves_no_visible_batch(store_settings):
    env = {**os.environ, **settings_env(store_settings)}
    crashed = subprocess.run([sys.executable, "-c", CRASHING_INGEST], env=env, capture_output=True, timeout=120)
    assert crashed.returncode == 9, crashed.stderr.decode()[-2000:]
    target = store.open_store(store_settings)
    orphan = target.path("raw/api/1/Tuesday/batch=1/part-0.parquet")
    assert target.fs.get_file_info(orphan).is_file  # the data was written...
    assert store.get_record(store_settings, "raw", "api.g1.Tuesday.b000001") is None  # ...but never published
    assert store.list_records(store_settings, "raw") == []
    assert store.read_frame(store_settings, "raw").empty
    record = ingest_batch(store_settings, make_batch())  # the retry completes the batch
    assert store.read_table(store_settings, "raw", record.batch_id).equals(make_batch().table)

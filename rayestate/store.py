"""The raw/clean batch store on a pyarrow filesystem: a local directory or S3 (s3://bucket/prefix).

Layout under the store root::

    raw/<source>/<group>/<day>/batch=<n>/part-<k>.parquet     as fetched, never modified
    clean/<source>/<group>/<day>/batch=<n>/part-<k>.parquet   cleaned copy (a separate dataset)
    manifests/raw/<batch_id>.json, manifests/clean/<batch_id>.json

Publication rule: a batch exists if and only if its manifest exists. Data files go first, each
written atomically (local: temp file + rename; S3: a single PUT or multipart upload only appears
when complete), and the manifest last, the same way. A crash in between leaves only files no
reader looks at (readers follow the manifest's file list), and the next attempt overwrites them.
The manifest's sha256 is a value-based content hash, so it survives re-encoding and a reader can
check that the files still hold what was published.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlparse

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rayestate.schema import RAW_SCHEMA, SCHEMA_VERSION, conform_table
from rayestate.settings import Settings

Kind = Literal["raw", "clean"]
ROWS_PER_PART = 250_000  # several parts per big batch, so Ray Data reads them in parallel


class StoreError(RuntimeError):
    """The store holds something other than what its manifest promises."""


@dataclass
class RawRecord:
    """Manifest of one published raw batch."""

    batch_id: str
    source: str
    group_number: int
    day: str
    batch_number: int
    rows: int
    sha256: str
    fetched_at: str
    published_at: str = ""
    schema_version: int = SCHEMA_VERSION
    files: list[str] = field(default_factory=list)
    #: What ingestion noticed about the batch (e.g. ID columns the source did not have).
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict):
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass
class CleanRecord(RawRecord):
    """Manifest of one published clean batch, with what each cleaning rule did."""

    rows_in: int = 0
    raw_sha256: str = ""
    removed: dict[str, int] = field(default_factory=dict)
    repaired: dict[str, int] = field(default_factory=dict)
    clean_version: int = 1


RECORD_TYPES: dict[str, type[RawRecord]] = {"raw": RawRecord, "clean": CleanRecord}


@dataclass(frozen=True)
class Store:
    fs: pafs.FileSystem
    root: str

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)


def open_store(settings: Settings) -> Store:
    """The store named by settings.store_uri (a local path, file:// or s3://bucket/prefix)."""
    uri = settings.resolved_store_uri
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        endpoint = urlparse(settings.s3_endpoint_url) if settings.s3_endpoint_url else None
        secret = settings.aws_secret_access_key
        fs = pafs.S3FileSystem(
            access_key=settings.aws_access_key_id.get_secret_value() if settings.aws_access_key_id else None,
            secret_key=secret.get_secret_value() if secret else None,
            region=settings.s3_region,
            endpoint_override=endpoint.netloc if endpoint else None,
            scheme=endpoint.scheme if endpoint else "https",
        )
        return Store(fs, f"{parsed.netloc}{parsed.path}".rstrip("/"))
    local = uri.removeprefix("file://")
    fs = pafs.LocalFileSystem()
    fs.create_dir(local, recursive=True)
    return Store(fs, local)


def content_sha256(table: pa.Table) -> str:
    """sha256 of the rows' values (not their encoding): equal tables hash equal after any round trip."""
    return content_sha256_of(table.schema, [row_hashes(table)])


def row_hashes(table: pa.Table) -> bytes:
    """Each row's 64-bit value hash, as bytes: what content_sha256 digests, computable part by part."""
    return pd.util.hash_pandas_object(table.to_pandas(), index=False).to_numpy().tobytes()


def content_sha256_of(schema: pa.Schema, parts: list[bytes]) -> str:
    """content_sha256 of a table given as its parts' row_hashes, in order (no process holds the rows)."""
    digest = hashlib.sha256(json.dumps([str(f) for f in schema]).encode())
    for hashes in parts:
        digest.update(hashes)
    return digest.hexdigest()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# --- writing -------------------------------------------------------------------------------


def write_atomic(store: Store, path: str, data: bytes) -> None:
    """Write one file so that readers see either nothing or all of it (the store's one write primitive)."""
    if store.is_local:
        parent, name = path.rsplit("/", 1)
        store.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
        with store.fs.open_output_stream(tmp) as out:
            out.write(data)
        store.fs.move(tmp, path)  # rename(2): atomic on POSIX
    else:
        with store.fs.open_output_stream(path) as out:  # an S3 object appears only once complete
            out.write(data)


def data_dir(kind: Kind, record: RawRecord) -> str:
    return f"{kind}/{record.source}/{record.group_number}/{record.day}/batch={record.batch_number}"


def manifest_path(kind: Kind, batch_id: str) -> str:
    return f"manifests/{kind}/{batch_id}.json"


def write_parts(store: Store, kind: Kind, record: RawRecord, table: pa.Table) -> list[str]:
    """Write the batch's Parquet parts (not yet visible: no manifest). Returns their store paths."""
    files = []
    for part, start in enumerate(range(0, max(table.num_rows, 1), ROWS_PER_PART)):
        buffer = io.BytesIO()
        pq.write_table(table.slice(start, ROWS_PER_PART), buffer, compression="zstd")
        relative = f"{data_dir(kind, record)}/part-{part}.parquet"
        write_atomic(store, store.path(relative), buffer.getvalue())
        files.append(relative)
    return files


def publish_manifest(settings: Settings, kind: Kind, record: RawRecord) -> None:
    """The publish step: after this the batch exists for every reader."""
    put_json(settings, manifest_path(kind, record.batch_id), asdict(record))


def publish(settings: Settings, kind: Kind, record: RawRecord, table: pa.Table) -> RawRecord:
    """Write data then manifest; returns the record as published."""
    record.files = write_parts(open_store(settings), kind, record, table)
    record.published_at = now()
    publish_manifest(settings, kind, record)
    return record


# --- small JSON documents (manifests, pipeline ledger, drift reports) ---------------------------------------


def put_json(settings: Settings, relative: str, payload: dict) -> str:
    """Publish a JSON document at <root>/<relative> atomically (a re-put replaces it); returns its path."""
    target = open_store(settings)
    path = target.path(relative)
    write_atomic(target, path, json.dumps(payload, indent=1, allow_nan=False, default=str).encode())
    return path


def get_json(settings: Settings, relative: str) -> dict | None:
    """The JSON document at <root>/<relative>, or None if it was never published."""
    target = open_store(settings)
    try:
        with target.fs.open_input_stream(target.path(relative)) as stream:
            return json.loads(stream.read())
    except FileNotFoundError:
        return None


def list_json(settings: Settings, prefix: str) -> list[dict]:
    """Every JSON document directly under <root>/<prefix>/ (in-flight temp files skipped)."""
    target = open_store(settings)
    documents = []
    for info in target.fs.get_file_info(pafs.FileSelector(target.path(prefix), allow_not_found=True)):
        if info.is_file and info.base_name.endswith(".json") and not info.base_name.startswith("."):
            with target.fs.open_input_stream(info.path) as stream:
                documents.append(json.loads(stream.read()))
    return documents


# --- reading batches ---------------------------------------------------------------------------


def get_record(settings: Settings, kind: Kind, batch_id: str) -> RawRecord | None:
    """The published manifest of a batch, or None if it was never (completely) published."""
    document = get_json(settings, manifest_path(kind, batch_id))
    return RECORD_TYPES[kind].from_dict(document) if document is not None else None


def list_records(settings: Settings, kind: Kind = "raw") -> list[RawRecord]:
    """Every published batch of a kind, oldest publication first."""
    records = [RECORD_TYPES[kind].from_dict(d) for d in list_json(settings, f"manifests/{kind}")]
    return sorted(records, key=lambda r: (r.published_at, r.batch_id))


def _records(settings: Settings, kind: Kind, batch_ids: list[str] | None) -> list[RawRecord]:
    if batch_ids is None:
        return list_records(settings, kind)
    records = [get_record(settings, kind, batch_id) for batch_id in batch_ids]
    missing = [b for b, r in zip(batch_ids, records, strict=True) if r is None]
    if missing:
        raise KeyError(f"no published {kind} batch {', '.join(missing)}")
    return records


def read_table(settings: Settings, kind: Kind, batch_id: str, *, verify: bool = True) -> pa.Table:
    """One published batch as an Arrow table; verify checks it against the manifest's sha256."""
    (record,) = _records(settings, kind, [batch_id])
    store = open_store(settings)
    parts = [pq.read_table(store.path(f), filesystem=store.fs, partitioning=None) for f in record.files]
    table = (
        conform_table(pa.concat_tables(parts), where=f"{kind} batch {batch_id}") if parts else RAW_SCHEMA.empty_table()
    )
    if verify and (table.num_rows != record.rows or content_sha256(table) != record.sha256):
        raise StoreError(f"{kind} batch {batch_id}: stored files do not match the manifest (rows or sha256 differ)")
    return table


def read_frame(settings: Settings, kind: Kind = "clean", batch_ids: list[str] | None = None) -> pd.DataFrame:
    """Published batches (all, or the given ids) as one DataFrame with the raw columns."""
    tables = [read_table(settings, kind, r.batch_id, verify=False) for r in _records(settings, kind, batch_ids)]
    return (pa.concat_tables(tables) if tables else RAW_SCHEMA.empty_table()).to_pandas()


def read_dataset(settings: Settings, kind: Kind = "clean", batch_ids: list[str] | None = None):
    """Published batches as a ray.data.Dataset (needs a running Ray)."""
    import ray.data

    store = open_store(settings)
    files = [store.path(f) for r in _records(settings, kind, batch_ids) for f in r.files]
    if not files:
        return ray.data.from_arrow(RAW_SCHEMA.empty_table())
    return ray.data.read_parquet(files, filesystem=store.fs, partitioning=None, schema=RAW_SCHEMA)

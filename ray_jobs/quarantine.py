"""Quarantine for data-API answers that are not a usable batch.

A malformed batch (truncated JSON, wrong types, missing required columns, ...)
is not retried: the same request would get the same answer. It is kept, byte for byte, with
the reason, so someone can look at what the API sent, and the raw store never sees it:

    <store>/quarantine/<sha256 of the body, 16 hex>/payload.bin     the response body as received
    <store>/quarantine/<sha256 of the body, 16 hex>/reason.json     why, when, from where

Both are published atomically (payload first; an entry exists once reason.json does). Keyed
by the body's hash, so the same bad answer twice is one entry. The pipeline calls
:func:`fetch_batch_or_quarantine` where it would call ``source.fetch_batch``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import httpx

from ray_jobs.source import Batch, BatchError, fetch_batch
from rayestate import store
from rayestate.settings import Settings

PREFIX = "quarantine"


class QuarantinedBatch(BatchError):
    """A BatchError whose payload was kept under <store>/quarantine/<entry_id>/."""

    def __init__(self, message: str, entry_id: str):
        super().__init__(message)
        self.entry_id = entry_id


@dataclass(frozen=True)
class QuarantineEntry:
    entry_id: str
    reason: str
    source: str
    status_code: int | None
    bytes: int
    sha256: str
    quarantined_at: str


def quarantine(
    settings: Settings, payload: bytes, reason: str, *, source: str, status_code: int | None = None
) -> QuarantineEntry:
    """Keep a rejected payload and why; returns the entry (idempotent per payload)."""
    digest = hashlib.sha256(payload).hexdigest()
    entry = QuarantineEntry(digest[:16], reason, source, status_code, len(payload), digest, store.now())
    target = store.open_store(settings)
    store.write_atomic(target, target.path(f"{PREFIX}/{entry.entry_id}/payload.bin"), payload)
    store.put_json(settings, f"{PREFIX}/{entry.entry_id}/reason.json", entry.__dict__)
    return entry


def list_quarantine(settings: Settings) -> list[QuarantineEntry]:
    """Every published quarantine entry, oldest first."""
    target = store.open_store(settings)
    import pyarrow.fs as pafs

    entries = []
    for info in target.fs.get_file_info(pafs.FileSelector(target.path(PREFIX), allow_not_found=True)):
        if info.type == pafs.FileType.Directory:
            document = store.get_json(settings, f"{PREFIX}/{info.base_name}/reason.json")
            if document is not None:
                entries.append(QuarantineEntry(**document))
    return sorted(entries, key=lambda e: (e.quarantined_at, e.entry_id))


def read_payload(settings: Settings, entry_id: str) -> bytes:
    target = store.open_store(settings)
    with target.fs.open_input_stream(target.path(f"{PREFIX}/{entry_id}/payload.bin")) as stream:
        return stream.read()


def fetch_batch_or_quarantine(settings: Settings) -> Batch | None:
    """``source.fetch_batch``, but a malformed answer is quarantined before the error is raised.

    Transient failures are still retried inside fetch_batch and end in DataAPIUnavailable
    (nothing to keep); only an answer that arrived and was wrong is quarantined.
    """
    last: dict[str, httpx.Response] = {}

    def keep(response: httpx.Response) -> None:
        response.read()
        last["response"] = response

    with httpx.Client(timeout=settings.http_timeout_s, event_hooks={"response": [keep]}) as client:
        try:
            return fetch_batch(settings, client)
        except BatchError as exc:
            response = last.get("response")
            entry = quarantine(
                settings,
                response.content if response is not None else b"",
                str(exc),
                source=str(response.request.url) if response is not None else settings.data_api_url,
                status_code=response.status_code if response is not None else None,
            )
            raise QuarantinedBatch(f"{exc} (payload quarantined as {PREFIX}/{entry.entry_id})", entry.entry_id) from exc

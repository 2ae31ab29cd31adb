"""A stand-in for the course's data API, serving batches of realtor listings.

Contract (same as the original): ``GET /data?group_number=N&day=Tuesday|Wednesday`` returns
``{"group_number", "day", "batch_number", "data": [12-column rows, NaN as null]}``; once every
batch has been served it answers HTTP 400 with the original Spanish message until
``GET /restart_data_generation`` starts the sequence again. The sequence is deterministic for a
(dataset, mode, seed, group, day), and each (group, day)'s position is persisted to a JSON file
(written atomically) so a restarted server carries on where it stopped.

Modes:
- ``course``: the deliberately shifted slices the original served (see COURSE_SLICES), drawn
  from complete rows only, because the real batch we have (../shared/data/api) has no missing
  value although a third of the dataset's rows do; each slice is capped at ``batch_rows``.
- ``random``: ``random_batches`` uniform samples of ``batch_rows`` rows from all rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import Response

from rayestate.schema import RAW_COLUMNS, read_listings_file
from rayestate.settings import Settings

#: The real course API's answer once every batch was served (its client, ray_jobs.source, owns the contract).
EXHAUSTED_DETAIL = "Ya se recolectó toda la información mínima necesaria"
DAYS = ("Tuesday", "Wednesday")
Mode = Literal["course", "random"]
GroupNumber = Annotated[int, Query(ge=1, le=1000, description="Your group number")]
Day = Annotated[Literal["Tuesday", "Wednesday"], Query(description="Class day")]


@dataclass(frozen=True)
class Slice:
    name: str
    select: Callable[[pd.DataFrame], pd.Series]


#: The course sequence: cheap homes first, then pricier bands, then everything (batch 3 is the
#: Massachusetts slice, like the real batch_group1_tuesday_3.csv).
COURSE_SLICES = (
    Slice("price <= $300k", lambda d: d.price <= 300_000),
    Slice("price <= $300k, house_size >= 1500", lambda d: (d.price <= 300_000) & (d.house_size >= 1500)),
    Slice("Massachusetts, price <= $300k", lambda d: (d.price <= 300_000) & (d.state == "Massachusetts")),
    Slice("price <= $300k, house_size < 1500", lambda d: (d.price <= 300_000) & (d.house_size < 1500)),
    Slice("$300k < price <= $500k", lambda d: (d.price > 300_000) & (d.price <= 500_000)),
    Slice("$500k < price <= $1M", lambda d: (d.price > 500_000) & (d.price <= 1_000_000)),
    Slice("price > $1M", lambda d: d.price > 1_000_000),
    Slice("any listing", lambda d: pd.Series(True, index=d.index)),
)


def batch_plan(dataset: pd.DataFrame, mode: Mode, random_batches: int) -> list[tuple[str, np.ndarray]]:
    """(slice name, candidate row positions) per batch number 1..N; empty slices are skipped."""
    if mode == "random":
        return [("uniform sample", np.arange(len(dataset)))] * random_batches
    complete = dataset.notna().all(axis=1).to_numpy()
    plan = []
    for piece in COURSE_SLICES:
        rows = np.flatnonzero(piece.select(dataset).fillna(False).to_numpy(dtype=bool) & complete)
        if rows.size:
            plan.append((piece.name, rows))
    return plan


class SequenceState:
    """Next batch number per (group, day), persisted atomically after every change."""

    def __init__(self, path: Path, fingerprint: str):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self._lock = threading.Lock()
        self.positions: dict[str, int] = {}
        if self.path.is_file():
            saved = json.loads(self.path.read_text())
            # Positions of another dataset/mode/seed would point into a different sequence.
            if saved.get("fingerprint") == fingerprint:
                self.positions = {k: int(v) for k, v in saved.get("positions", {}).items()}

    def take(self, key: str, total: int) -> int | None:
        """Reserve and persist the next batch number (1-based), or None when exhausted."""
        with self._lock:
            served = self.positions.get(key, 0)
            if served >= total:
                return None
            self.positions[key] = served + 1
            self._save()
            return served + 1

    def reset(self, key: str) -> None:
        with self._lock:
            self.positions[key] = 0
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"fingerprint": self.fingerprint, "positions": self.positions}, indent=1))
        os.replace(tmp, self.path)


def create_data_api(
    dataset: pd.DataFrame | None,
    state_path: Path,
    mode: Mode = "course",
    *,
    batch_rows: int = 50_000,
    random_batches: int = 8,
    synthetic_rows: int = 300_000,
    seed: int = 42,
) -> FastAPI:
    """The data API app; without a dataset it serves ``synthetic_rows`` synthetic listings."""
    if mode not in ("course", "random"):
        raise ValueError(f"mode must be 'course' or 'random', got {mode!r}")
    if batch_rows < 1 or random_batches < 1:
        raise ValueError("batch_rows and random_batches must be >= 1")
    if dataset is None:
        from rayestate.devstack.synthetic import generate_listings

        dataset = generate_listings(synthetic_rows, seed=seed)
    dataset = dataset[list(RAW_COLUMNS)].reset_index(drop=True)
    plan = batch_plan(dataset, mode, random_batches)
    fingerprint = hashlib.sha256(
        json.dumps([mode, seed, batch_rows, random_batches, int(pd.util.hash_pandas_object(dataset).sum())]).encode()
    ).hexdigest()[:16]
    state = SequenceState(state_path, fingerprint)
    app = FastAPI(title="Ray Estate data API", description=__doc__, version="1")

    @app.get("/data")
    def data(group_number: GroupNumber, day: Day) -> Response:
        batch_number = state.take(f"{group_number}:{day}", len(plan))
        if batch_number is None:
            raise HTTPException(status_code=400, detail=EXHAUSTED_DETAIL)
        rows = plan[batch_number - 1][1]
        if rows.size > batch_rows:
            rng = np.random.default_rng([seed, group_number, DAYS.index(day), batch_number])
            rows = np.sort(rng.choice(rows, size=batch_rows, replace=False))
        records = dataset.iloc[rows].to_json(orient="records", double_precision=15)
        header = json.dumps({"group_number": group_number, "day": day, "batch_number": batch_number})
        return Response(content=f'{header[:-1]}, "data": {records}}}', media_type="application/json")

    @app.get("/restart_data_generation")
    def restart(group_number: GroupNumber, day: Day) -> dict:
        state.reset(f"{group_number}:{day}")
        return {"ok": True, "group_number": group_number, "day": day, "message": "data generation restarted"}

    @app.get("/health")
    def health() -> dict:
        return {
            "status": "ok",
            "mode": mode,
            "rows": len(dataset),
            "batch_rows": batch_rows,
            "sequence": [
                {"batch_number": i + 1, "slice": name, "rows": int(rows.size)} for i, (name, rows) in enumerate(plan)
            ],
        }

    return app


def run_data_api(
    settings: Settings,
    dataset_path: Path | None = None,
    port: int = 8081,
    host: str = "127.0.0.1",
    mode: Mode = "course",
    random_batches: int = 8,
) -> None:
    """Serve the data API until interrupted (what `rayestate data-api` runs)."""
    import uvicorn

    dataset = read_listings_file(dataset_path).to_pandas() if dataset_path else None
    app = create_data_api(
        dataset,
        settings.state_dir / "data_api" / "state.json",
        mode,
        batch_rows=settings.data_api_batch_rows,
        random_batches=random_batches,
        synthetic_rows=settings.data_api_synthetic_rows,
        seed=settings.seed,
    )
    uvicorn.run(app, host=host, port=port, log_level="info")

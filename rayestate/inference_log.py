"""The inference log: what the Serve app was asked and answered, as Parquet in the data store.

Serving must never wait for the store, so replicas append rows to an in-memory buffer and a
background task writes them in batches (every ``flush_s`` or ``max_rows`` rows), in a thread,
each file published atomically:

    <store>/inference_log/date=YYYY-MM-DD/part-<utc time>-<writer>-<seq>.parquet

A store outage never fails a request: rows wait in the buffer (bounded; the oldest are dropped
and counted when it overflows) and the next flush retries. Each row holds the listing's raw
columns, ``price`` = the model's predicted price (live traffic has no sale price, so a drift
check on it measures prediction drift), the range served with it (price_low, price_high), plus
model_version, endpoint, latency_ms, logged_at. When the listing later sells, ray_jobs.outcomes
joins the sale price to this row.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rayestate import store
from rayestate.schema import RAW_COLUMNS, RAW_SCHEMA
from rayestate.settings import Settings

PREFIX = "inference_log"
EXTRA_FIELDS = [
    pa.field("price_low", pa.float64()),
    pa.field("price_high", pa.float64()),
    pa.field("model_version", pa.string()),
    pa.field("endpoint", pa.string()),
    pa.field("latency_ms", pa.float64()),
    pa.field("logged_at", pa.timestamp("ms", tz="UTC")),
]
LOG_SCHEMA = pa.schema([*RAW_SCHEMA, *EXTRA_FIELDS])


@dataclass
class _Block:
    """Rows queued by one call, as columns: a batch of 1,000 listings is one entry, not 1,000 dicts."""

    columns: dict[str, list]  # raw-schema columns (a column left out is all null)
    prices: list[float]
    lows: list
    highs: list
    meta: tuple  # (model_version, endpoint, latency_ms, logged_at)

    def __len__(self) -> int:
        return len(self.prices)

    def only(self, positions) -> _Block:
        """The block's rows at ``positions`` (the priced ones; the newest when the bound drops some)."""

        def pick(values: list) -> list:
            return [values[i] for i in positions]

        columns = {name: pick(values) for name, values in self.columns.items()}
        return _Block(columns, pick(self.prices), pick(self.lows), pick(self.highs), self.meta)


class InferenceLogWriter:
    """Buffers inference rows and writes them to the store in batches, off the request path."""

    def __init__(self, settings: Settings, *, flush_s: float = 10.0, max_rows: int = 5_000, max_buffer: int = 200_000):
        self._settings = settings
        self.flush_s, self.max_rows, self.max_buffer = flush_s, max_rows, max_buffer
        self._blocks: deque[_Block] = deque()
        self._buffered = 0  # rows in _blocks
        self._lock = threading.Lock()
        self._writer_id = uuid.uuid4().hex[:8]
        self._seq = 0
        self.rows_written = 0
        self.rows_dropped = 0
        self.last_error: str | None = None
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None

    # --- the request path: cheap, never raises -------------------------------------------------
    def add(
        self,
        listings: list[dict] | dict[str, list],
        prices: list[float | None],
        *,
        model_version: str,
        endpoint: str,
        latency_ms: float,
        lows: list[float | None] | None = None,
        highs: list[float | None] | None = None,
    ) -> None:
        """Queue one row per priced listing, with its range if any.

        ``listings``: raw-schema rows (dicts, as sent to the model) or raw-schema columns (a list
        per field; a field left out is null), one per price. A listing without a price (a rejected
        one) is left out. Only references are queued (the lists are the caller's to hand over, not
        to change): the table is built at flush time, in the writer's thread. A batch is queued as
        its columns: queueing 1,000 listings as dicts, one entry each, cost the ingress's event loop
        5.8 ms per batch (0.3 ms as columns), and the writer's thread 4.0 ms to write them (3.5 ms).
        """
        columns = listings if isinstance(listings, dict) else {c: [row.get(c) for row in listings] for c in RAW_COLUMNS}
        count = len(prices)
        if any(len(values) != count for values in columns.values()):
            raise ValueError(f"{count} prices for listings of {sorted({len(v) for v in columns.values()})} rows")
        lows = lows if lows is not None else [None] * count
        highs = highs if highs is not None else [None] * count
        block = _Block(columns, prices, lows, highs, (model_version, endpoint, float(latency_ms), datetime.now(UTC)))
        if any(price is None for price in prices):
            block = block.only([i for i, price in enumerate(prices) if price is not None])
        if not len(block):
            return
        with self._lock:
            self._blocks.append(block)
            self._buffered += len(block)
            self._drop_oldest()
            full = self._buffered >= self.max_rows
        self._ensure_started()
        if full and self._wake is not None:
            self._wake.set()

    def _drop_oldest(self) -> None:
        """Keep at most max_buffer rows (the lock held): the oldest go, and are counted."""
        while self._buffered > self.max_buffer:
            oldest, excess = self._blocks[0], self._buffered - self.max_buffer
            dropped = min(excess, len(oldest))
            if dropped == len(oldest):
                self._blocks.popleft()
            else:
                self._blocks[0] = oldest.only(range(dropped, len(oldest)))
            self._buffered -= dropped
            self.rows_dropped += dropped

    def _ensure_started(self) -> None:
        """Start the flush loop on the caller's event loop the first time rows arrive."""
        if self._task is None:
            with contextlib.suppress(RuntimeError):  # no running loop (a synchronous caller): call flush()
                self.start()

    # --- the background writer ---------------------------------------------------------------
    def start(self) -> None:
        """Start the flush loop on the running event loop (add() does this itself when it can)."""
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_s)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> int:
        """Write what is buffered (in a thread); returns rows written. Failures keep the rows."""
        with self._lock:
            blocks, rows = list(self._blocks), self._buffered
            self._blocks.clear()
            self._buffered = 0
        if not blocks:
            return 0
        try:
            await asyncio.to_thread(self._write, blocks)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            with self._lock:  # put them back in front of newer rows; the bound still applies
                self._blocks.extendleft(reversed(blocks))
                self._buffered += rows
                self._drop_oldest()
            return 0
        self.rows_written += rows
        self.last_error = None
        return rows

    def _write(self, blocks: list[_Block]) -> str:
        self._seq += 1
        columns = {
            name: [value for block in blocks for value in block.columns.get(name) or [None] * len(block)]
            for name in RAW_COLUMNS
        }
        columns["price"] = [price for block in blocks for price in block.prices]
        columns["price_low"] = [low for block in blocks for low in block.lows]
        columns["price_high"] = [high for block in blocks for high in block.highs]
        for i, name in enumerate(("model_version", "endpoint", "latency_ms", "logged_at")):
            columns[name] = [value for block in blocks for value in [block.meta[i]] * len(block)]
        table = pa.Table.from_pydict(columns, schema=LOG_SCHEMA)
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        stamp = datetime.now(UTC)
        relative = f"{PREFIX}/date={stamp:%Y-%m-%d}/part-{stamp:%H%M%S%f}-{self._writer_id}-{self._seq:06d}.parquet"
        target = store.open_store(self._settings)
        store.write_atomic(target, target.path(relative), buffer.getvalue())
        return relative

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.flush()

    def status(self) -> dict:
        return {"rows_written": self.rows_written, "rows_buffered": self._buffered,
                "rows_dropped": self.rows_dropped, "last_error": self.last_error}  # fmt: skip


def read_inference_log(
    settings: Settings, *, since: datetime | None = None, limit_files: int | None = None
) -> pd.DataFrame:
    """The logged rows (optionally only those logged at or after ``since``) as one DataFrame."""
    target = store.open_store(settings)
    selector = pafs.FileSelector(target.path(PREFIX), recursive=True, allow_not_found=True)
    files = sorted(
        info.path
        for info in target.fs.get_file_info(selector)
        if info.is_file and info.base_name.endswith(".parquet") and not info.base_name.startswith(".")
    )
    if since is not None:
        # A naive time is UTC, like every time the log writes. Files are named by their UTC write
        # time, and a file only holds rows logged before it was written.
        since = since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)
        files = [f for f in files if _file_time(f) is None or _file_time(f) >= since.replace(tzinfo=None)]
    if limit_files is not None:
        files = files[-limit_files:]
    if not files:
        return LOG_SCHEMA.empty_table().to_pandas()
    frame = pa.concat_tables(pq.read_table(f, filesystem=target.fs, schema=LOG_SCHEMA) for f in files).to_pandas()
    if since is not None:
        frame = frame[frame["logged_at"] >= pd.Timestamp(since)]
    return frame.reset_index(drop=True)


def _file_time(path: str) -> datetime | None:
    try:
        date = path.split("date=")[1][:10]
        clock = path.rsplit("/part-", 1)[1][:12]
        return datetime.strptime(date + clock, "%Y-%m-%d%H%M%S%f")
    except (IndexError, ValueError):
        return None

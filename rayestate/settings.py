"""One typed configuration object for every part of Ray Estate.

Values come from (highest first) explicit keyword arguments / CLI flags, ``RAYESTATE_*``
environment variables, then the defaults below, which describe the embedded local stack.
Nothing here connects to anything: callers pass the object to the code that does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_STATE_DIR = Path.home() / ".rayestate"


class Settings(BaseSettings):
    """Settings shared by the CLI, the Ray jobs, the Serve app and the UI."""

    model_config = SettingsConfigDict(env_prefix="RAYESTATE_", extra="forbid", validate_default=True)

    # --- local stack -------------------------------------------------------------
    state_dir: Path = Field(
        DEFAULT_STATE_DIR,
        description="Where the local stack keeps its databases, artefacts, store and logs.",
    )
    bind_host: str = Field("127.0.0.1", description="Address local services listen on.")
    serve_ingress: Literal["proxy", "haproxy"] = Field(
        "haproxy",
        description="What takes HTTP to the Serve app in `make up`'s Ray: HAProxy straight to the ingress replicas "
        "(Ray Serve's HAProxy mode; its stats page, :8404, and Prometheus exporter, :9101, rebound to 127.0.0.1), "
        "or Serve's Python proxy (a fifth of HAProxy's /predict throughput here, measured).",
    )

    # --- Ray ---------------------------------------------------------------------
    ray_address: str = Field(
        "auto", description="Ray cluster to join: 'auto' (running local head), 'local', or ray://host:port."
    )
    ray_dashboard_url: str = Field("http://127.0.0.1:8265", description="Ray dashboard / Job API.")

    # --- MLflow ------------------------------------------------------------------
    mlflow_tracking_uri: str = Field("http://127.0.0.1:5000", description="MLflow tracking server.")
    mlflow_experiment: str = Field("rayestate", min_length=1)
    model_name: str = Field("rayestate-price", min_length=1, description="Registered model name.")
    model_alias: str = Field("champion", min_length=1, description="Alias the Serve app loads.")

    # --- data store --------------------------------------------------------------
    store_uri: str = Field(
        "",
        description="Raw/clean data store: a local path, file:///..., or s3://bucket/prefix. "
        "Empty means <state_dir>/store.",
    )
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, SeaweedFS...).")
    s3_region: str = "us-east-1"
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None

    # --- data source -------------------------------------------------------------
    data_api_url: str = Field("http://127.0.0.1:8081", description="Course-compatible data API.")
    group_number: int = Field(1, ge=1, le=1000)
    day: Literal["Tuesday", "Wednesday"] = "Tuesday"
    source_path: Path | None = Field(None, description="Read batches from this CSV/Parquet instead of the API.")
    file_batch_rows: int = Field(100_000, ge=1, description="Rows per batch when reading source_path.")
    http_timeout_s: float = Field(30.0, gt=0, le=600)
    http_retries: int = Field(4, ge=0, le=20)
    http_backoff_s: float = Field(
        0.5, ge=0, le=60, description="First retry delay; it doubles on each retry (capped at 30 s)."
    )
    max_batch_rows: int = Field(2_000_000, ge=1, description="Refuse API batches larger than this.")
    data_api_batch_rows: int = Field(
        50_000, ge=1, le=2_000_000, description="Rows per batch the data API serves (slices are capped at this)."
    )
    data_api_synthetic_rows: int = Field(
        300_000, ge=1, le=20_000_000, description="Rows the data API generates when it has no dataset file."
    )

    # --- pipeline ----------------------------------------------------------------
    max_batches_per_run: int = Field(1, ge=1, le=1000)
    retrain_min_new_rows: int = Field(
        50_000, ge=1, description="Retrain after this many clean rows since the last training."
    )
    training_window_batches: int = Field(0, ge=0, description="Train on the last N batches; 0 = all.")
    drift_effect_threshold: float = Field(
        0.02,
        gt=0,
        description="PSI at or above which a significant shift counts as drift. 0.02 is about a 0.14-SD shift; "
        "house_size x1.1 gives ~0.04, which the 0.1 rule of thumb misses (see benchmarks/drift_bench.py).",
    )
    drift_alpha: float = Field(0.01, gt=0, lt=1, description="Family-wise error rate (Holm-corrected).")
    drift_missing_threshold: float = Field(
        0.05, gt=0, le=1, description="Change in a column's missing share that counts as drift (0.05 = 5 points)."
    )
    drift_min_rows: int = Field(200, ge=1, description="Rows each side needs before a drift check is run.")
    tune_num_samples: int = Field(
        48, ge=1, le=10_000, description="Tune trials at most; on 2 CPUs the time budget usually ends the search first."
    )
    tune_time_budget_s: float = Field(480.0, gt=0, description="Wall-clock budget of one search, seconds.")
    tune_max_concurrent: int = Field(0, ge=0, description="0 = number of cluster CPUs.")
    explain_budget_ms: float = Field(
        15.0,
        gt=0,
        description="Serving budget: exact TreeSHAP ms per row (one thread, XGBoost's time) a champion "
        "may cost; the search picks the most accurate model within it (inf: no limit).",
    )
    predict_budget_us: float = Field(
        25.0,
        gt=0,
        description="Serving budget: prediction µs per row (one thread, XGBoost's time) a champion may cost.",
    )
    bag_size: int = Field(
        2,
        ge=1,
        le=10,
        description="Most boosters the final model may average (best config, different seeds). The size is chosen "
        "on validation rows within the serving budget, where a bag's members share the rounds it affords.",
    )
    augment_missing_sizes: bool = Field(
        True,
        description="Add copies of training rows with sizes masked (real patterns) when the training data lacks "
        "missing sizes, e.g. the course API's complete rows, so listings without them are priced from trained paths.",
    )
    interval_coverage: float = Field(
        0.8, ge=0.5, le=0.99,
        description="Coverage of the price range every price comes with (0.50-0.99 in steps of 0.01, calibrated per model).",
    )  # fmt: skip
    data_parallel_min_rows: int = Field(
        1_000_000,
        ge=1,
        description="Clean rows from which training is data-parallel: Ray Train's XGBoost over Ray Data shards, "
        "the search on a sample, no process holding every row. Below it one process reads the rows and fits.",
    )
    tune_sample_rows: int = Field(
        250_000,
        ge=1_000,
        description="Data-parallel training: training rows (a hash sample; validation rows sampled alike) the "
        "search, the bag choice and the price range's scale model use.",
    )
    holdout_sample_rows: int = Field(
        200_000,
        ge=1_000,
        description="Data-parallel training: most calibration rows the price range is calibrated on, and most "
        "test rows the challenger is evaluated and compared on (hash samples).",
    )
    train_workers: int = Field(
        0,
        ge=0,
        le=1_000,
        description="Ray Train workers of the data-parallel fit; 0 = one per train_rows_per_worker rows, "
        "at least 2, at most the cluster's CPUs.",
    )
    train_rows_per_worker: int = Field(
        4_000_000,
        ge=1_000,
        description="Training rows one Ray Train worker takes when train_workers is 0 (~0.2 KiB each in its memory).",
    )
    train_worker_cpus: float = Field(1.0, gt=0, le=64, description="CPUs (XGBoost threads) per Ray Train worker.")
    comparables_rows: int = Field(
        250_000, ge=0, le=5_000_000, description="Training listings a model keeps to show as comparable homes."
    )
    comparables_k: int = Field(5, ge=0, le=50, description="Comparable homes /explain returns.")
    live_min_matched: int = Field(
        30,
        ge=1,
        description="Sold homes matched to served prices a version needs before its live accuracy can "
        "trigger a retrain.",
    )
    live_mdape_margin: float = Field(
        0.02,
        ge=0,
        description="Retrain when the champion's live MdAPE is above its offline MdAPE by more than this, "
        "beyond the bootstrap interval.",
    )
    promotion_min_improvement: float = Field(
        0.0, ge=0, description="Required lower-bound improvement in MdAPE-like loss before promoting."
    )
    bootstrap_samples: int = Field(1000, ge=100, le=100_000)
    seed: int = 42

    # --- serving / UI ------------------------------------------------------------
    api_url: str = Field("http://127.0.0.1:8000", description="Ray Serve HTTP endpoint (UI, clients).")
    max_batch_listings: int = Field(10_000, ge=1, le=1_000_000)
    reload_poll_s: float = Field(10.0, gt=0, description="How often replicas check the model alias.")
    model_load_timeout_s: float = Field(
        120.0, gt=0, description="A replica that cannot load a model within this time fails (gets no traffic)."
    )
    max_request_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest HTTP request body the API accepts (413 above)."
    )
    inference_log: bool = Field(
        True, description="Serving appends each answered listing to <store>/inference_log as Parquet (batched, async)."
    )
    inference_log_flush_s: float = Field(10.0, gt=0, le=3600, description="How often the inference log is written.")
    ui_port: int = Field(8501, ge=1, le=65535)
    mlflow_port: int = Field(5000, ge=1, le=65535)
    data_api_port: int = Field(8081, ge=1, le=65535)
    prometheus_port: int = Field(
        9090, ge=1, le=65535, description="Port of the Prometheus `make up` starts (on bind_host), scraping Ray."
    )

    @field_validator("interval_coverage")
    @classmethod
    def _calibrated_coverage(cls, value: float) -> float:
        # Ranges are calibrated at 0.50, 0.51, ..., 0.99 (rayestate.interval.COVERAGES).
        if abs(value * 100 - round(value * 100)) > 1e-9:
            raise ValueError("must be a whole percentage, e.g. 0.8 or 0.95")
        return round(value, 2)

    @field_validator("state_dir")
    @classmethod
    def _absolute_state_dir(cls, value: Path) -> Path:
        # Ray jobs run from a copied working dir, so a relative path would point elsewhere.
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _check_store(self) -> Settings:
        uri = self.resolved_store_uri
        if "://" in uri and not uri.startswith(("s3://", "file://")):
            raise ValueError(f"store_uri {uri!r}: only local paths, file:// and s3:// are supported")
        return self

    @property
    def resolved_store_uri(self) -> str:
        """The store as an absolute location (Ray jobs run from a copied working dir)."""
        if not self.store_uri:
            return str(self.state_dir / "store")
        if "://" in self.store_uri:
            return self.store_uri
        return str(Path(self.store_uri).expanduser().resolve())


def load_settings(**overrides) -> Settings:
    """Settings from the environment, with explicit overrides (CLI flags) on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})

"""The HTTP API's answers, defined once: the Serve app returns them and the UI reads them.

Field names here are public API: the UI and users depend on them. The request listing itself is
:class:`rayestate.schema.Listing`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from rayestate.registry import VersionRecord

RANGE_LOW = "Low end of the price range: the price falls in [price_low, price_high] with probability `coverage` (null: the model has no calibrated range)"
RANGE_HIGH = "High end of the price range"
COVERAGE = "Nominal coverage of the price range (calibrated on rows the model was not fitted on)"


class PredictResponse(BaseModel):
    price: float = Field(description="Predicted price in US dollars")
    price_low: float | None = Field(description=RANGE_LOW)
    price_high: float | None = Field(description=RANGE_HIGH)
    coverage: float = Field(description=COVERAGE)
    model_version: str
    model_alias: str
    request_id: str
    warnings: list[str] = Field(description="What the model could not use as given (e.g. an unseen zip code)")


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class RowError(BaseModel):
    index: int = Field(description="Position of the bad listing in the request")
    detail: list[FieldError]


class RowWarnings(BaseModel):
    index: int
    warnings: list[str]


class BatchResponse(BaseModel):
    prices: list[float | None] = Field(description="One price per listing, null where the listing was rejected")
    price_low: list[float | None] = Field(description="Per listing: " + RANGE_LOW)
    price_high: list[float | None] = Field(description="Per listing: " + RANGE_HIGH)
    coverage: float = Field(description=COVERAGE)
    errors: list[RowError] = Field(description="Rejected listings by index; the other rows are still priced")
    warnings: list[RowWarnings]
    model_version: str | None
    model_alias: str
    request_id: str


class Contribution(BaseModel):
    feature: str
    label: str
    value: float | str | None = Field(description="The feature's value as the model saw it")
    shap: float = Field(description="Exact TreeSHAP value in log-price space")


class DollarEffect(BaseModel):
    feature: str
    label: str
    dollars: float = Field(description="Share of price - base_price; these add up exactly to it")
    factor: float = Field(description="exp(shap): the feature's exact multiplicative effect on the price")


class GroupEffect(BaseModel):
    group: str = Field(description="An input group (location, living_area, ...) or a pair of them joined by '*'")
    label: str
    shap: float = Field(description="Sum of the exact SHAP values of the features read from this group alone")
    effect_pct: float = Field(description="100 * (exp(shap) - 1): the group's multiplicative effect on the price, %")
    dollars: float = Field(description="Share of price - base_price (the dollar_effects rule); these add up to it")
    inputs: dict[str, str | float] = Field(
        description="The listing's values for this group's fields ('missing' if left out)"
    )


class Comparable(BaseModel):
    """A listing from the model's training data like the one explained."""

    match: str = Field(description="How it matches: same ZIP, same ZIP area, same city or same state")
    distance: float = Field(description="How far its sizes are (0: the same living area, lot, bedrooms, bathrooms)")
    price: float
    status: str | None = None
    prev_sold_date: str | None = None
    city: str | None = None
    state: str | None = None
    zip_code: str | None = None
    house_size: float | None = None
    acre_lot: float | None = None
    bed: float | None = None
    bath: float | None = None


class ExplainResponse(BaseModel):
    price: float
    price_low: float | None = Field(description=RANGE_LOW)
    price_high: float | None = Field(description=RANGE_HIGH)
    coverage: float = Field(description=COVERAGE)
    log_price: float = Field(description="The model's output; equals base_value + sum(shap)")
    base_value: float = Field(description="Expected log price over the training data (SHAP base value)")
    base_price: float = Field(description="exp(base_value), the dollar starting point of dollar_effects")
    output_space: Literal["log_price"]
    contributions: list[Contribution]
    dollar_effects: list[DollarEffect]
    groups: list[GroupEffect] = Field(
        description="The explanation in the listing's own fields; base_value + sum of shap == log_price"
    )
    comparables: list[Comparable] = Field(description="The most similar homes in the model's training data")
    model_version: str
    model_alias: str
    request_id: str
    warnings: list[str]


class ReplicaStatus(BaseModel):
    """What one model replica (ingress or predictor) serves, and what its last registry check found."""

    loaded: bool
    model_name: str | None = None
    model_version: str | None = None
    model_alias: str | None = None
    run_id: str | None = None
    meta: dict | None = Field(None, description="What training recorded with the model (rounds, params, ...)")
    loaded_at: float | None = None
    last_check_at: float | None = None
    registry_reachable: bool | None = None
    last_error: str | None = None


class ChampionDetails(VersionRecord):
    """The champion's registry record plus its training run."""

    trained_at: str | None = None
    params: dict[str, str] = Field(default_factory=dict, description="The training run's parameters")
    run_metrics: dict[str, float] = Field(default_factory=dict, description="Every finite metric of the run")
    card: str | None = Field(None, description="The version's model card (Markdown), as logged to MLflow")


class FeatureLabel(BaseModel):
    name: str
    label: str


class ModelReport(BaseModel):
    """GET /model: the champion, how every version was decided, the pipeline's runs and drift reports."""

    model_name: str
    model_alias: str
    registry_available: bool
    registry_error: str | None = None
    champion: ChampionDetails | None = None
    served: ReplicaStatus | None = None
    promotion_history: list[VersionRecord] = Field(
        default_factory=list, description="Every registered version, newest first, with its decision"
    )
    drift_reports: list[dict] = Field(default_factory=list, description="Newest first, as ray_jobs.drift writes them")
    drift_note: str | None = None
    pipeline_runs: list[dict] = Field(default_factory=list, description="The pipeline's ledger, newest first")
    pipeline_runs_note: str | None = None
    live_quality: dict | None = Field(
        None,
        description="Per model version, MdAPE, bias and range coverage on homes that sold after being priced "
        "(ray_jobs.live_quality), beside its offline figures",
    )
    categories: dict[str, list[str]] = Field(default_factory=dict, description="Values the model knows (state, status)")
    features: list[FeatureLabel] = Field(default_factory=list)

"""A small real champion for the serving and UI tests, registered the way the pipeline registers one.

It comes with its price range, calibrated on held-out rows as the pipeline calibrates it.

Trained on the one synthetic market with the pipeline's own fitting code (tests.support.models),
evaluated on held-out synthetic rows, and registered through the pipeline's decision path (ray_jobs.challenger.register_and_decide inside a pipeline run): its metrics and
its decision tags are real. It is small (a few seconds to train) so a test session stays short.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ray_jobs import register
from ray_jobs.challenger import load_champion, register_and_decide
from ray_jobs.split import split_frame
from rayestate import registry
from rayestate.model import PriceModel
from rayestate.settings import Settings
from tests.support.models import sample_listings, train_sample_model, with_sample_range


@dataclass(frozen=True)
class Champion:
    tracking_uri: str
    name: str
    version: str
    alias: str = "champion"


def register_sample_model(
    tracking_uri: str,
    name: str,
    model: PriceModel,
    test: pd.DataFrame,
    *,
    run_key: str,
    training_batches: list[str] | None = None,
) -> registry.VersionRecord:
    """Register ``model`` the way a pipeline run does (decided against the current champion, if any).

    ``training_batches`` (default: a label for the synthetic sample) is what the version records
    it was trained on; the live drift job reads those batches from the store as its reference.
    """
    settings = Settings(mlflow_tracking_uri=tracking_uri, model_name=name, mlflow_experiment=f"{name}-samples")
    batches = list(training_batches or ["synthetic-sample"])
    client = registry.connect(settings)
    champion = load_champion(client, settings, registry.champion(client, settings))
    with register.pipeline_run(client, settings, run_key, batches):
        register_and_decide(
            client, settings, model, test, run_key=run_key, training_batches=batches, champion_model=champion
        )
    return registry.find_version(client, settings, run_key)  # as recorded, aliases included


def make_sample_champion(
    tracking_uri: str, name: str, *, rows: int = 4000, seed: int = 1, training_batches: list[str] | None = None
) -> Champion:
    """Train on ``sample_listings(rows, seed)``, evaluate and register a first model under ``name``.

    It becomes the champion. ``training_batches`` as for :func:`register_sample_model`.
    """
    splits = split_frame(sample_listings(rows, seed=seed))
    model = with_sample_range(train_sample_model(pd.concat([splits.train, splits.valid]), seed=seed), splits, seed=seed)
    record = register_sample_model(
        tracking_uri, name, model, splits.test, run_key=f"sample-{seed}-{rows}", training_batches=training_batches
    )
    return Champion(tracking_uri=tracking_uri, name=name, version=record.version)

"""The registered model works for a plain MLflow user: no project code, only its own requirements.

Loaded with ``mlflow.pyfunc.load_model("models:/<name>@champion")`` in a Python where this project
cannot be imported, and served with ``mlflow models serve --env-manager local``, the model prices
listings exactly as the Serve API does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig

import httpx
import mlflow
import pytest
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from rayestate.localstack import BIN, free_port, running
from rayestate.schema import Listing

#: A complete listing, a bare one (required fields only), and one in between.
LISTINGS = [
    {"bed": 3, "bath": 2, "acre_lot": 0.25, "house_size": 1800, "state": "Florida", "city": "Tampa",
     "zip_code": "33602", "status": "sold", "prev_sold_date": "2015-06-01", "brokered_by": 1234, "street": 5678},
    {"bed": 2, "bath": 1, "acre_lot": 0.1, "house_size": 900, "state": "Ohio"},
    {"bed": 4, "bath": 3, "acre_lot": 1.5, "house_size": 2600, "state": "Texas", "zip_code": "75001"},
]  # fmt: skip


NUMBERS = [name for name, field in Listing.model_fields.items() if field.annotation in (float, float | None)]


@pytest.fixture(scope="module")
def api_prices(serve_app_url) -> list[float]:
    answer = httpx.post(f"{serve_app_url}/predict/batch", json={"listings": LISTINGS}, timeout=60).json()
    assert not answer["errors"], answer
    return answer["prices"]


def _without_project_env(tracking_uri: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    # `mlflow models serve --env-manager local` starts `uvicorn` from PATH: this venv's, as for a user in it.
    path = os.pathsep.join([str(BIN), env.get("PATH", "")])
    return {**env, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": path}


def test_the_signature_is_the_api_listing(champion, tmp_path):
    source = MlflowClient(champion.tracking_uri).get_model_version_download_uri(champion.name, champion.version)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{source}/MLmodel", dst_path=str(tmp_path), tracking_uri=champion.tracking_uri
    )
    inputs = Model.load(local).signature.inputs
    by_name = {spec.name: spec for spec in inputs.inputs}
    assert list(by_name) == list(Listing.model_fields)
    assert {n for n, s in by_name.items() if s.required} == {
        n for n, f in Listing.model_fields.items() if f.is_required()
    }
    assert by_name["zip_code"].type.name == "string" and by_name["bed"].type.name == "double"


def test_pyfunc_loads_where_the_project_is_not_importable_and_prices_like_the_api(champion, api_prices, tmp_path):
    # -S skips site's .pth files, so the editable install's finder never runs; site-packages is added by hand.
    code = f"""
import importlib.util, json, sys
sys.path.append({sysconfig.get_paths()["purelib"]!r})
assert importlib.util.find_spec("rayestate") is None, "the project is importable"
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model("models:/{champion.name}@{champion.alias}")
# Numbers as floats, as the signature declares them (pandas would make whole numbers int64).
frame = pd.DataFrame({LISTINGS!r}).astype({{c: "float64" for c in {NUMBERS!r}}})
print(json.dumps(model.predict(frame)["price"].tolist()))
"""
    result = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env=_without_project_env(champion.tracking_uri),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    prices = json.loads(result.stdout.strip().splitlines()[-1])
    assert prices == pytest.approx(api_prices, rel=1e-9)


def test_mlflow_models_serve_answers_with_the_api_prices(champion, api_prices, tmp_path):
    port = free_port()
    command = [
        str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{champion.name}@{champion.alias}",
        "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with running(
        command, f"{url}/ping", tmp_path / "mlflow-serve.log", env=_without_project_env(champion.tracking_uri)
    ):
        answer = httpx.post(f"{url}/invocations", json={"dataframe_records": LISTINGS}, timeout=60)
    assert answer.status_code == 200, answer.text
    prices = [row["price"] for row in answer.json()["predictions"]]
    assert prices == pytest.approx(api_prices, rel=1e-9)

"""The model object MLflow loads (models from code): a :class:`rayestate.pyfunc.PriceModelPyfunc`.

MLflow runs this file when a registered model is loaded, with the model's shipped code on the
import path, so no pickled object is involved.
"""

import mlflow

from rayestate.pyfunc import PriceModelPyfunc

mlflow.models.set_model(PriceModelPyfunc())

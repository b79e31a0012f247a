"""The registered model's entry point (MLflow "models from code"): MLflow runs this file when it loads the model,
with the model's copy of `pipelines/` on `sys.path`. No pickled Python object travels with the model, so loading
it never unpickles code (MLflow warns against `python_model=<object>` for that reason)."""

import mlflow

from pipelines.register.pyfunc import DetectorModel

mlflow.models.set_model(DetectorModel())

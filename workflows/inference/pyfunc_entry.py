"""MLflow "model from code" entry: MLflow runs this file to build the pyfunc model (no pickle).

Logged with ``code_paths`` holding the project's packages (``workflows.tracking.registry.CODE_PACKAGES``)
so a fresh process that loads the model imports the same code.
"""

from mlflow.models import set_model

from workflows.inference.pyfunc import CASTPyfunc

set_model(CASTPyfunc())

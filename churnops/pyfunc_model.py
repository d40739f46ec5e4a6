"""The MLflow pyfunc model as code (MLflow's "models from code"): `churnops.pipeline` logs this
file as `python_model`, so the model is rebuilt from source at load, not unpickled (MLflow warns
about, and by default refuses, a pickled Python object)."""

from mlflow.models import set_model

from churnops.bundle import ChurnPyfunc

set_model(ChurnPyfunc())

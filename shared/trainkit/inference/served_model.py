"""The pyfunc's entry file (MLflow's models from code): loading the model runs this file, which names
the model object, so nothing is unpickled to get it. The model's code/ folder holds trainkit."""

from mlflow.models import set_model

from trainkit.inference.pyfunc import TrainkitModel

set_model(TrainkitModel())

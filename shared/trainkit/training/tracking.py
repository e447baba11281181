"""MLflow tracking: the platform's server when one is set (AzureML sets MLFLOW_TRACKING_URI), else sqlite
under the output dir. Only this module talks to MLflow."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def model_requirements() -> list[str]:
    """What loading the model needs, stated rather than inferred (inference re-imports the model: slow)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("torch", "torchvision", "cloudpickle"):
        with contextlib.suppress(PackageNotFoundError):
            out.append(f"{name}=={version(name)}")
    return out


class Tracker:
    """One MLflow run of a training job; resumable by run id."""

    def __init__(self, output_dir: Path, experiment: str, run_id: str | None) -> None:
        import mlflow

        self._mlflow = mlflow
        # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; remember that the store is ours,
        # so that `end` can forget it and a later run in this process is not taken for the platform's.
        self._own_store = not os.environ.get("MLFLOW_TRACKING_URI")
        if self._own_store:
            mlflow.set_tracking_uri(f"sqlite:///{(output_dir / 'mlflow.db').resolve()}")
            artifacts = (output_dir / "mlruns").resolve().as_uri()
            if mlflow.get_experiment_by_name(experiment) is None:
                mlflow.create_experiment(experiment, artifact_location=artifacts)
        if os.environ.get("MLFLOW_RUN_ID"):  # inside an AzureML job the platform picks run and experiment
            run_id = None  # mlflow attaches to the job's own run, which a restarted job keeps
        else:
            mlflow.set_experiment(experiment)
        if run_id and not self._has_run(run_id):
            # A restart with a fresh output folder (AzureML keeps only mounted outputs) has a new store.
            log.warning("the checkpoint's MLflow run %s is not in this tracking store: logging to a new run", run_id)
            run_id = None
        self.run = mlflow.start_run(run_id=run_id) if run_id else mlflow.start_run()
        self.run_id = self.run.info.run_id
        self.tracking_uri = mlflow.get_tracking_uri()

    def _has_run(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self._mlflow.MlflowClient().get_run(run_id)
        except MlflowException:
            return False
        return True

    def log_params(self, params: dict[str, Any]) -> None:
        """Hyperparameters and settings (logged once; a resumed run already has them)."""
        existing = self._mlflow.get_run(self.run_id).data.params
        fresh = {k: str(v)[:6000] for k, v in params.items() if k not in existing}
        if fresh:
            self._mlflow.log_params(fresh)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Numeric metrics at a step."""
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_dict(self, value: dict, name: str) -> None:
        """A JSON artifact."""
        self._mlflow.log_dict(value, name)

    def log_artifacts(self, folder: Path, path: str | None = None) -> None:
        """Every file under `folder`."""
        self._mlflow.log_artifacts(str(folder), artifact_path=path)

    def log_model(self, model: Any, code_paths: list[str], register_as: str | None) -> str:
        """The model as an MLflow PyTorch model (pickled: detectors cannot be exported as pt2)."""
        info = self._mlflow.pytorch.log_model(
            model,
            name="model",
            serialization_format="pickle",
            code_paths=code_paths or None,
            registered_model_name=register_as or None,
            pip_requirements=model_requirements(),
        )
        return info.model_uri

    def end(self, status: str) -> None:
        """Close the run: FINISHED, FAILED or KILLED (a preempted run stays resumable by id)."""
        self._mlflow.end_run(status=status)
        if self._own_store:
            self._mlflow.set_tracking_uri("")
            os.environ.pop("MLFLOW_TRACKING_URI", None)


class NullTracker:
    """What ranks other than 0 track with: nothing (rank 0 logs the run once for all)."""

    run_id = ""
    tracking_uri = ""

    def log_params(self, params: dict[str, Any]) -> None:
        """Not logged."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Not logged."""

    def log_dict(self, value: dict, name: str) -> None:
        """Not logged."""

    def end(self, status: str) -> None:
        """Nothing to end."""


def save_model_dir(model: Any, folder: Path, code_paths: list[str]) -> None:
    """The same MLflow model, saved under the output dir; replaces an older one only when complete."""
    import shutil

    import mlflow

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".model.", dir=folder.parent))
    try:
        mlflow.pytorch.save_model(
            model, str(staging / "model"), serialization_format="pickle", code_paths=code_paths or None
        )
        if folder.exists():
            shutil.rmtree(folder)
        (staging / "model").rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

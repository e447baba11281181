"""MLflow tracking: the platform's server when one is set (AzureML sets MLFLOW_TRACKING_URI), else sqlite
under the output dir. Only this module talks to MLflow."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _new_store(db: Path, version: str) -> None:
    """An empty MLflow sqlite store at `db`, copied from one made once per MLflow version in the user's
    cache: creating a store runs MLflow's schema migrations, about 2 s a run. Where the cache cannot
    be written, MLflow creates the store itself as before."""
    import shutil
    import tempfile

    from mlflow import MlflowClient

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trainkit"
    template = cache / f"mlflow-{version}.db"
    try:
        if not template.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache) as work:
                made = Path(work) / "mlflow.db"
                MlflowClient(tracking_uri=f"sqlite:///{made}").search_experiments()  # creates and migrates it
                os.replace(made, template)  # whole: two runs making it at once each put a complete one
        db.parent.mkdir(parents=True, exist_ok=True)
        copy = db.with_name(f".{db.name}.{os.getpid()}.tmp")
        shutil.copyfile(template, copy)
        os.replace(copy, db)  # whole: a run killed while copying leaves no torn store to open next time
    except Exception as exc:  # only a speed-up: MLflow creates the store itself, as without it
        log.debug("no MLflow store template (%s): MLflow creates the store", exc)


class Tracker:
    """One MLflow run of a training job; resumable by run id."""

    def __init__(self, output_dir: Path, experiment: str, run_id: str | None) -> None:
        import mlflow

        self._mlflow = mlflow
        # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; remember that the store is ours,
        # so that `end` can forget it and a later run in this process is not taken for the platform's.
        self._own_store = not os.environ.get("MLFLOW_TRACKING_URI")
        if self._own_store:
            db = (output_dir / "mlflow.db").resolve()
            if not db.exists():
                _new_store(db, mlflow.__version__)
            mlflow.set_tracking_uri(f"sqlite:///{db}")
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
        if run_id:
            self.run = mlflow.start_run(run_id=run_id)
        else:
            # MLflow draws the run's name from `random`, which the trainer has seeded: every run would be
            # called the same. Drawn from fresh entropy instead, and the trainer's random state restored.
            seeded = random.getstate()
            random.seed()
            try:
                self.run = mlflow.start_run()
            finally:
                random.setstate(seeded)
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

    def log_artifact(self, file: Path) -> None:
        """One file, at the run's artifact root."""
        self._mlflow.log_artifact(str(file))

    def log_artifacts(self, folder: Path, path: str | None = None) -> None:
        """Every file under `folder`."""
        self._mlflow.log_artifacts(str(folder), artifact_path=path)

    def log_model(self, folder: Path, register_as: str | None) -> str:
        """The model folder trainkit.inference.package built, logged (and registered) as it is."""
        from mlflow.models import Model

        from trainkit.inference import package

        info = Model.log(
            artifact_path=None, name="model", flavor=package, prebuilt=str(folder),
            registered_model_name=register_as or None,
        )  # fmt: skip
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

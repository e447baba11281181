"""Where a trained model comes from: a run's output folder, its `model/` folder, or an MLflow URI."""

from __future__ import annotations

from pathlib import Path

from trainkit.errors import UserError

URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


def resolve_model(spec: str, scratch: Path) -> Path:
    """The local trainkit model folder `spec` names; MLflow URIs are downloaded into `scratch`."""
    if spec.startswith(URI_SCHEMES):
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        try:
            folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=spec, dst_path=str(scratch)))
        except (MlflowException, OSError) as exc:
            reason = " ".join(str(exc).split())[:200]
            message = f"--model {spec}: cannot fetch it from MLflow ({reason}); check MLFLOW_TRACKING_URI"
            raise UserError(message) from None
        return _model_folder(folder, spec)
    path = Path(spec)
    if not path.exists():
        raise UserError(f"--model {spec}: no such folder (give a run's output folder, its model/ folder, "
                        "models:/NAME/VERSION, runs:/RUN_ID/model or an exported .onnx file)")  # fmt: skip
    return _model_folder(path, spec)


def _model_folder(path: Path, spec: str) -> Path:
    for candidate in (path, path / "model"):
        if (candidate / "MLmodel").is_file():
            return candidate
    raise UserError(f"--model {spec}: holds no MLflow model (no MLmodel file in it or in its model/ folder)")

"""The MLflow model every `train` writes and logs: one folder, two flavours.

    model/MLmodel                   flavours `pytorch` (mlflow.pytorch.load_model: the nn.Module) and
                                    `python_function` (trainkit.inference.pyfunc: what endpoints serve)
    model/data/model.pth            the trained module (pickled; detectors do not export as pt2)
    model/artifacts/settings.json   task, input size, normalisation, score threshold, hyperparameters
    model/artifacts/class_map.json  class names by id
    model/code/                     the trainer's module and trainkit itself, so that an endpoint
                                    built from the model's requirements alone can load it

It has a signature (its answer's columns and the `min_score` parameter) and an input example (a
DataFrame with an `image` column of base64 text, as online endpoints send). `save_model` is also
an MLflow flavour module's entry point: `Model.log` calls it to log the folder that
`build_model_dir` made, so the logged model is the saved one.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from torch import nn

import trainkit
from trainkit.classmap import CLASS_MAP_FILE, ClassMap
from trainkit.inference import served_model
from trainkit.inference.predictor import NMS_OFF, SETTINGS_FILE
from trainkit.inference.settings import ModelSettings
from trainkit.tasks import task_named

# MLflow draws a progress bar for every local "download" while saving; not the user's concern.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# What loading and running the model imports; stated, not inferred (inferring re-imports the model).
REQUIREMENTS = ("torch", "torchvision", "pillow", "numpy", "pandas", "cloudpickle")


def build_model_dir(folder: Path, model: nn.Module, settings: ModelSettings, classes: ClassMap,
                    trainer_source: Path | None) -> Path:  # fmt: skip
    """Write the model folder (see the module doc); an older one is replaced only once this one is complete."""
    import mlflow.pytorch

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".model.", dir=folder.parent))
    try:
        files = staging / "files"
        files.mkdir()
        classes.save(files / CLASS_MAP_FILE)
        (files / SETTINGS_FILE).write_text(_json(settings.to_json()), encoding="utf-8")
        code = [str(Path(trainkit.__file__).parent)] + ([str(trainer_source)] if trainer_source else [])
        with _quiet("mlflow.pyfunc", logging.WARNING):  # its "validating input example" note on every save
            mlflow.pyfunc.save_model(
                str(staging / "model"),
                python_model=str(Path(served_model.__file__)),
                artifacts={"settings": str(files / SETTINGS_FILE), "class_map": str(files / CLASS_MAP_FILE)},
                code_paths=code,
                signature=signature(settings),
                input_example=(input_example(), {"min_score": settings.min_score}),
                pip_requirements=requirements(),
            )
        for cache in (staging / "model" / "code").rglob("__pycache__"):
            shutil.rmtree(cache)
        # Pickled, which MLflow warns about on every save: torchvision's detectors do not export as pt2.
        with _quiet("mlflow.pytorch", logging.ERROR):
            mlflow.pytorch.save_model(
                model, str(staging / "torch"), serialization_format="pickle", pip_requirements=requirements()
            )
        _add_pytorch_flavour(staging / "model", staging / "torch")
        if folder.exists():
            shutil.rmtree(folder)
        (staging / "model").rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _add_pytorch_flavour(target: Path, saved: Path) -> None:
    """Move mlflow.pytorch's saved module into `target` and declare its flavour there (sharing code/)."""
    from mlflow.models import Model

    (saved / "data").rename(target / "data")
    pytorch = Model.load(str(saved / "MLmodel")).flavors["pytorch"]
    model = Model.load(str(target / "MLmodel"))
    model.flavors["pytorch"] = {**pytorch, "code": "code"}  # its trainer module is in code/
    model.save(str(target / "MLmodel"))


def save_model(path: str, mlflow_model: Any, prebuilt: str, **_: Any) -> None:
    """MLflow's flavour entry point (`Model.log(..., flavor=this module, prebuilt=FOLDER)`): the
    folder `build_model_dir` wrote, copied to `path`, its MLmodel carried over."""
    from mlflow.models import Model

    shutil.copytree(prebuilt, path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("MLmodel"))
    built = Model.load(str(Path(prebuilt) / "MLmodel"))
    for key in ("flavors", "signature", "saved_input_example_info", "metadata"):
        setattr(mlflow_model, key, getattr(built, key))
    mlflow_model.save(str(Path(path) / "MLmodel"))


def signature(settings: ModelSettings) -> Any:
    """Output: AutoML's answer; parameters `min_score` and `agnostic_nms`. No input schema: MLflow would
    enforce it on every call, turning away the raw bytes, paths and arrays that batch endpoints and Python callers pass
    (the pyfunc checks its input itself); the input example shows the online endpoints' form."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    task = task_named(settings.task)
    outputs = Schema([ColSpec("string", column) for column in task.answer_columns])
    # agnostic_nms: the IoU above which boxes of any classes count as one object (1.0: off)
    params = [ParamSpec("min_score", "double", settings.min_score), ParamSpec("agnostic_nms", "double", NMS_OFF)]
    if task.tiles:
        params += [ParamSpec(name, kind, value) for name, kind, value in tile_params(settings)]
    return ModelSignature(inputs=None, outputs=outputs, params=ParamSchema(params))


def tile_params(settings: ModelSettings) -> list[tuple[str, str, Any]]:
    """The served model's tile parameters (name, MLflow type, default): the model's own tiling, which a
    request may change as `trainkit predict --tile-*` does (tile_grid none: whole images)."""
    from trainkit.params import TileSpec

    tiles = TileSpec.from_json(settings.tiling) if settings.tiling else None
    grid = f"{tiles.grid[0]}x{tiles.grid[1]}" if tiles is not None and tiles.grid else "none"
    spec = tiles or TileSpec(grid=(1, 1))  # the defaults of a model trained without tiles
    return [("tile_grid", "string", grid), ("tile_size", "long", tiles.size if tiles else 0),
            ("tile_overlap", "double", spec.overlap), ("tile_nms", "double", spec.nms),
            ("tile_merge", "string", spec.merge), ("tile_whole", "boolean", spec.whole)]  # fmt: skip


def input_example() -> Any:
    """A one-row DataFrame with a small base64-encoded PNG, as an online endpoint's request carries it."""
    import pandas as pd
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (96, 64), (120, 140, 160))
    ImageDraw.Draw(image).rectangle((20, 16, 60, 48), fill=(200, 40, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return pd.DataFrame({"image": [base64.b64encode(buffer.getvalue()).decode("ascii")]})


def requirements() -> list[str]:
    """The packages the model imports, pinned to this environment's versions."""
    out = []
    for name in REQUIREMENTS:
        try:
            # A local version such as torch's +cu130 exists on PyTorch's own index only.
            out.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return out


@contextmanager
def _quiet(logger: str, level: int) -> Iterator[None]:
    log = logging.getLogger(logger)
    before = log.level
    log.setLevel(level)
    try:
        yield
    finally:
        log.setLevel(before)


def _json(value: dict) -> str:
    import json

    return json.dumps(value, indent=2) + "\n"

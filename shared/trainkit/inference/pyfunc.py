"""The model MLflow serving and AzureML endpoints load: a pyfunc that answers as AutoML's image models do.

`predict` takes what AzureML sends: a DataFrame with an `image` column of base64-encoded files
(online endpoints' `input_data`), file paths or raw bytes (batch endpoints), or uint8 H x W x 3
arrays; and the parameters `min_score`, `agnostic_nms` (an IoU: of boxes overlapping more, whatever
their classes, the best stays; 1.0, the default, keeps all) and the tile_* ones (`trainkit predict`'s
--tile-* options; by default the model's own tiling). It returns one row per image: `filename` and `boxes`
(detection: normalised corners, label, score) or `probs` and `labels` (classifiers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

IMAGE_COLUMN = "image"
BATCH = 8  # images per forward pass


class TrainkitModel(mlflow.pyfunc.PythonModel):
    """A trainkit model as a pyfunc; its weights and trainer code are the model folder's."""

    def load_context(self, context: Any) -> None:
        import torch

        from trainkit.inference.predictor import load_predictor

        folder = Path(context.artifacts["settings"]).parents[1]  # <model>/artifacts/settings.json
        self._predictor = load_predictor(folder, "cuda" if torch.cuda.is_available() else "cpu")

    # `model_input` is hinted as a DataFrame, a type MLflow infers no schema from: it then passes every
    # input form through unchanged (bytes, paths, arrays too; see `input_items`) for this model to check.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One answer per input image (see the module doc)."""
        from trainkit.errors import UserError
        from trainkit.inference.images import UnreadableImage, to_array
        from trainkit.inference.predictor import NMS_OFF, check_agnostic_nms

        params = params or {}
        min_score = params.get("min_score")
        try:
            agnostic = check_agnostic_nms(float(params.get("agnostic_nms", NMS_OFF)), "agnostic_nms")
        except (TypeError, ValueError, UserError) as exc:
            raise _bad_input(f"parameter agnostic_nms: {exc}") from None
        try:
            predictor = self._tiled(params)
        except (TypeError, ValueError, UserError) as exc:
            raise _bad_input(f"tile parameters: {exc}") from None
        items = input_items(model_input)
        rows = []
        for start in range(0, len(items), BATCH):
            chunk = items[start : start + BATCH]
            arrays = []
            for n, (filename, source) in enumerate(chunk, start):
                try:
                    arrays.append(to_array(source))
                except UnreadableImage as exc:
                    raise _bad_input(f"image {n} ({filename}): {exc}") from None
            answers = predictor.predict(arrays, None if min_score is None else float(min_score), agnostic)
            rows += [predictor.task.automl_answer(a, predictor.classes, f)
                     for (f, _), a in zip(chunk, answers, strict=True)]  # fmt: skip
        return pd.DataFrame(rows, columns=list(predictor.task.answer_columns))

    def _tiled(self, params: dict[str, Any]) -> Any:
        """The predictor, tiling as this request's tile_* parameters say (a copy when they change it)."""
        import copy

        from trainkit.inference.predict import checked_tiles

        options = {key[len("tile_") :]: value for key, value in params.items() if key.startswith("tile_")}
        if not options or not self._predictor.task.tiles:
            return self._predictor
        tiles = checked_tiles(self._predictor, options, "tile_")
        if tiles == self._predictor.tiles:
            return self._predictor
        predictor = copy.copy(self._predictor)
        predictor.with_tiles(tiles)
        return predictor


def input_items(model_input: Any) -> list[tuple[str, Any]]:
    """(filename, image source) pairs from any input form `predict` accepts."""
    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN in model_input.columns:
            column = model_input[IMAGE_COLUMN]
        elif len(model_input.columns) == 1:
            column = model_input.iloc[:, 0]
        else:
            raise _bad_input(f"a DataFrame input needs an {IMAGE_COLUMN!r} column (found {list(model_input.columns)})")
        names = model_input["filename"] if "filename" in model_input.columns else None
        return [(_name(names.iloc[i] if names is not None else None, value, i), value)
                for i, value in enumerate(column.tolist())]  # fmt: skip
    if isinstance(model_input, dict):
        if IMAGE_COLUMN not in model_input:
            raise _bad_input(f"a dict input needs an {IMAGE_COLUMN!r} key")
        return input_items(pd.DataFrame({IMAGE_COLUMN: list(np.atleast_1d(model_input[IMAGE_COLUMN]))}))
    if isinstance(model_input, np.ndarray) and model_input.dtype == np.uint8 and model_input.ndim in (3, 4):
        images = [model_input] if model_input.ndim == 3 else list(model_input)
        return [(str(i), image) for i, image in enumerate(images)]
    if isinstance(model_input, str | bytes | bytearray | Path):
        model_input = [model_input]
    if isinstance(model_input, list | tuple | np.ndarray | pd.Series):
        return [(_name(None, value, i), value) for i, value in enumerate(list(model_input))]
    raise _bad_input(f"cannot read images from a {type(model_input).__name__}")


def _name(given: Any, value: Any, index: int) -> str:
    if given is not None and str(given):
        return str(given)
    if isinstance(value, Path) or (isinstance(value, str) and len(value) < 4096 and Path(value).is_file()):
        return str(value)
    return str(index)


def _bad_input(message: str) -> Exception:
    """An error MLflow's server answers with 400 (bad request), naming the image."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)

"""An exported ONNX model (trainkit.inference.onnx_export) run with onnxruntime, as a predictor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from trainkit.classmap import ClassMap
from trainkit.errors import UserError
from trainkit.inference.predictor import BasePredictor
from trainkit.inference.settings import ModelSettings


class OnnxPredictor(BasePredictor):
    """The ONNX file's model on onnxruntime's CPU provider; its settings and classes from its metadata."""

    def __init__(self, path: Path) -> None:
        import onnxruntime

        try:
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3  # errors only: not its notes on the exporter's shape guesses
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own error types: a file that is not a usable model
            raise UserError(f"--model {path}: not a loadable ONNX model ({' '.join(str(exc).split())[:200]})") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        if "trainkit.settings" not in metadata:
            raise UserError(f"--model {path}: no trainkit.settings in its metadata: export it with `trainkit export`")
        self.settings = ModelSettings.from_document(json.loads(metadata["trainkit.settings"]), f"--model {path}")
        self.classes = ClassMap(tuple(json.loads(metadata["trainkit.classes"])))
        self.device = torch.device("cpu")

    def run(self, images: torch.Tensor, sizes: np.ndarray) -> list[dict[str, np.ndarray]]:
        """onnxruntime on the batch, read back as the task's raw outputs (padding dropped)."""
        outputs = self.session.run(None, {"images": images.cpu().contiguous().numpy()})
        return self.task.onnx_answers(outputs, len(images))

"""Object crops: each labelled object cut out of its image (its box) and classified by its class name.

A second opinion on a detector's boxes, or a crop classifier in a pipeline. Given unlabelled whole
images (`predict`), the model classifies each whole image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from trainkit.tasks.base import Evaluator, Prediction, Task, Truth, rounded
from trainkit.tasks.batches import ClassificationBatch


@dataclass(frozen=True)
class ObjectCrops(Task):
    """One sample per labelled object; the model answers every class's probability."""

    name: ClassVar[str] = "object_crops"
    metrics: ClassVar[tuple[str, ...]] = ("accuracy", "macro_precision", "macro_recall", "macro_f1")
    target_dtypes: ClassVar[tuple[str, ...]] = ("int32",)  # the class id (1,)
    answer_columns: ClassVar[tuple[str, ...]] = ("filename", "probs", "labels")
    onnx_names: ClassVar[tuple[str, ...]] = ("scores", "labels")

    def units(self, records) -> int:
        return records.num_objects

    def unit_images(self, records) -> np.ndarray:
        return records.object_image()

    def unit_sizes(self, records, units: np.ndarray) -> np.ndarray:
        boxes = records.boxes[units].reshape(-1, 4)
        return boxes[:, 2:] - boxes[:, :2]

    def sample(self, records, unit, image, flip, crop, tile, config):
        from trainkit.geometry.windows import box_window

        width, height = (int(v) for v in records.sizes[image])
        window = box_window(records.boxes[unit], width, height, flip)
        return window, (records.class_ids[unit : unit + 1].astype(np.int32),)

    def collate(self, images, targets, units, image_ids, windows):
        labels = torch.from_numpy(np.concatenate([ids for (ids,) in targets]).astype(np.int64))
        return ClassificationBatch(images, labels.to(images.device), torch.from_numpy(np.asarray(units, np.int64)))

    def predict_batch(self, images, scales):
        n = len(images)
        return ClassificationBatch(images, torch.zeros(n, dtype=torch.int64), torch.arange(n))

    def answers(self, outputs, sizes, windows, owners, image_size, tiles, min_score):
        found = []
        for out, size in zip(outputs, np.asarray(sizes).reshape(-1, 2), strict=True):
            width, height = (round(float(v)) for v in size)
            probabilities = out["scores"].astype(np.float32)
            label = int(out["labels"])
            found.append(Prediction(width, height, np.zeros((0, 4), np.float32), np.array([label]),
                                    probabilities[[label]], probabilities))  # fmt: skip
        return found

    def truth(self, records, unit, remap):
        image = int(np.searchsorted(records.offsets, unit, side="right")) - 1  # the image whose objects hold it
        label = remap[records.class_ids[unit : unit + 1]]
        return Truth(str(records.paths[image]), str(records.image_urls[image]),
                     records.boxes[unit : unit + 1].astype(np.float32), label.astype(np.int64))  # fmt: skip

    def evaluator(self, classes, min_score) -> Evaluator:
        from trainkit.tasks.classification_metrics import ClassificationEvaluator

        return ClassificationEvaluator(classes)

    def automl_answer(self, prediction, classes, filename):
        """Every class's probability, and the class names in the same order."""
        return {"filename": filename, "probs": rounded(prediction.probabilities, 5), "labels": list(classes.names)}

    def labelling_row(self, prediction, classes, image_url):
        """The best class as one object covering the whole image (what was classified)."""
        whole = {"type": classes.names[int(prediction.labels[0])], "bottomX": 0, "topX": prediction.width,
                 "bottomY": 0, "topY": prediction.height}  # fmt: skip
        return {"image_url": image_url, "label": [whole], "label_confidence": rounded(prediction.scores, 4)}

    def jsonl_line(self, prediction, classes, image_url):
        details = {"width": prediction.width, "height": prediction.height}
        return {"image_url": image_url, "image_details": details, "label": classes.names[int(prediction.labels[0])],
                "label_confidence": rounded(prediction.scores, 4)}  # fmt: skip

    def onnx_outputs(self, out, limit):
        return out["scores"].float(), out["labels"].reshape(()).to(torch.int64)

    def onnx_output_types(self, limit, classes):
        from onnx import TensorProto

        return [("scores", TensorProto.FLOAT, ["batch", classes]), ("labels", TensorProto.INT64, ["batch"])]

    def onnx_answers(self, outputs, n):
        scores, labels = outputs
        return [{"scores": scores[i], "labels": labels[i]} for i in range(n)]

"""Object detection: boxes and their classes, per image; tiling applies."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from trainkit.tasks.base import Evaluator, Prediction, Task, Truth, labelled_object
from trainkit.tasks.batches import DetectionBatch

if TYPE_CHECKING:
    from trainkit.classmap import ClassMap

MIN_BOX_PIXELS = 1.0  # a box narrower or lower than this after cropping and resizing is no target
IGNORE_FILL = 114  # the grey an ignore region is painted with (YOLO's letterbox grey): no object, no background


@dataclass(frozen=True)
class Detection(Task):
    """Boxes (xyxy) and class ids per image; the model answers boxes, class ids and scores."""

    name: ClassVar[str] = "detection"
    metrics: ClassVar[tuple[str, ...]] = ("map", "map_50", "map_75")
    tiles: ClassVar[bool] = True
    reviews_labels: ClassVar[bool] = True
    target_dtypes: ClassVar[tuple[str, ...]] = ("float32", "int32")  # boxes (k, 4) relative to the window, ids (k,)
    answer_columns: ClassVar[tuple[str, ...]] = ("filename", "boxes")
    onnx_names: ClassVar[tuple[str, ...]] = ("boxes", "labels", "scores", "count")

    def sample(self, records, unit, image, flip, crop, tile, config):
        from trainkit.geometry.tiles import window_targets
        from trainkit.geometry.windows import boxes_in_window, full_window, sample_crop_window

        width, height = (int(v) for v in records.sizes[image])
        start, stop = records.offsets[image], records.offsets[image + 1]
        boxes = records.boxes[start:stop].astype(np.float64)
        labels = records.class_ids[start:stop].astype(np.int32)
        if tile is not None and tile != full_window(width, height):
            # A tile is already a crop: it is only mirrored, and objects it cuts become ignore regions.
            window = replace(tile, flip=flip)
            return window, window_targets(boxes, labels, window, config.tiles.min_visible)
        window = sample_crop_window(crop, boxes, width, height) if crop is not None else full_window(width, height)
        window = replace(window, flip=flip)
        return window, boxes_in_window(boxes, labels, window)

    def tile_targets(self, records, image, tile, config):
        """The window's boxes (kept whole when `min_visible` of them is inside); cut objects left out."""
        from trainkit.geometry.tiles import IGNORE_LABEL, window_targets

        start, stop = records.offsets[image], records.offsets[image + 1]
        rel, ids = window_targets(records.boxes[start:stop], records.class_ids[start:stop], tile,
                                  config.tiles.min_visible)  # fmt: skip
        keep = ids != IGNORE_LABEL
        return rel[keep], ids[keep]

    def collate(self, images, targets, units, image_ids, windows):
        """Targets in batch pixels; ignore regions (a tile's cut objects) painted grey and dropped, and
        boxes under MIN_BOX_PIXELS dropped."""
        from trainkit.geometry.tiles import IGNORE_LABEL

        size = images.shape[-1]
        device = images.device
        out = []
        for i, (rel, ids) in enumerate(targets):
            boxes = np.asarray(rel, np.float32).reshape(-1, 4) * size
            labels = np.asarray(ids).reshape(-1).astype(np.int64)
            ignore = labels == IGNORE_LABEL
            for x0, y0, x1, y1 in np.rint(boxes[ignore]).astype(int).tolist():
                images[i, :, y0:y1, x0:x1] = IGNORE_FILL
            boxes, labels = boxes[~ignore], labels[~ignore]
            keep = ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_PIXELS) & ((boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_PIXELS)
            out.append({"boxes": torch.from_numpy(boxes[keep]).to(device),
                        "labels": torch.from_numpy(labels[keep]).to(device)})  # fmt: skip
        extent = (windows[:, 2:] - windows[:, :2]).astype(np.float32)
        indices = torch.from_numpy(np.asarray(image_ids, np.int64))
        windows_t = torch.from_numpy(windows.astype(np.float32))
        return DetectionBatch(images, out, indices, torch.from_numpy(size / extent), windows=windows_t)

    def predict_batch(self, images, scales):
        empty = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)}
        return DetectionBatch(images, [empty] * len(images), torch.arange(len(images)), scales)

    def answers(self, outputs, sizes, windows, owners, image_size, tiles, min_score):
        from trainkit.geometry.tile_merge import per_image

        for out in outputs:
            keep = out["scores"] >= min_score
            out.update(boxes=out["boxes"][keep], scores=out["scores"][keep], labels=out["labels"][keep])
        found = per_image(outputs, windows, owners, image_size, sizes, tiles)
        return [Prediction(round(float(width)), round(float(height)), boxes, labels, scores)
                for (width, height), (_, boxes, scores, labels) in zip(sizes, found, strict=True)]  # fmt: skip

    def truth(self, records, unit, remap):
        item = records[unit]
        labels = remap[item.class_ids] if len(item.class_ids) else np.zeros(0, np.int64)
        known = labels >= 0
        boxes = np.asarray(item.boxes, np.float32).reshape(-1, 4)
        crowd_boxes, crowd_labels = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
        if records.crowd is not None:
            crowd_boxes, ids = records.crowd.of(unit)
            ids = remap[ids] if len(ids) else np.zeros(0, np.int64)
            crowd_boxes, crowd_labels = np.asarray(crowd_boxes, np.float32).reshape(-1, 4)[ids >= 0], ids[ids >= 0]
        return Truth(str(item.path), str(item.image_url), boxes[known], labels[known].astype(np.int64),
                     crowd_boxes, crowd_labels)  # fmt: skip

    def evaluator(self, classes, min_score) -> Evaluator:
        from trainkit.tasks.detection_metrics import DetectionEvaluator

        return DetectionEvaluator(classes, min_score)

    def automl_answer(self, prediction, classes, filename):
        """Boxes with corners normalised to 0..1, the class name and the score."""
        boxes = []
        for (x0, y0, x1, y1), label, score in _objects(prediction):
            box = {"topX": x0 / prediction.width, "topY": y0 / prediction.height,
                   "bottomX": x1 / prediction.width, "bottomY": y1 / prediction.height}  # fmt: skip
            boxes.append({"box": {k: round(v, 5) for k, v in box.items()}, "label": classes.names[label],
                          "score": round(score, 4)})  # fmt: skip
        return {"filename": filename, "boxes": boxes}

    def labelling_row(self, prediction, classes, image_url):
        """`label` as the labelling API writes it (pixels; bottom is where a range starts)."""
        objects, confidences = [], []
        for box, label, score in _objects(prediction):
            objects.append(labelled_object(box, classes.names[label]))
            confidences.append(round(score, 4))
        return {"image_url": image_url, "label": objects, "label_confidence": confidences}

    def jsonl_line(self, prediction, classes, image_url):
        details = {"width": prediction.width, "height": prediction.height}
        answer = self.automl_answer(prediction, classes, image_url)
        labels = [{"label": box["label"], **box["box"], "isCrowd": 0} for box in answer["boxes"]]
        return {"image_url": image_url, "image_details": details, "label": labels,
                "label_confidence": [box["score"] for box in answer["boxes"]]}  # fmt: skip

    def draw_answers(self, drawn: list[tuple[str, Prediction]], classes: ClassMap, folder: Path) -> list[Path]:
        """Every answered box (no threshold beyond the one predict applied), in red."""
        from trainkit.tasks.drawing import draw_boxes

        nothing = (np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
        return draw_boxes([(path, answer, nothing) for path, answer in drawn], classes, folder, "pred", 0.0)

    def onnx_outputs(self, out, limit):
        boxes, labels, scores = out["boxes"][:limit], out["labels"][:limit], out["scores"][:limit]
        pad = limit - boxes.shape[0]
        count = torch.ones_like(scores, dtype=torch.int64).sum()  # traced as the detections' number, not a constant
        return (
            torch.cat([boxes.float(), boxes.new_zeros((pad, 4))]),
            torch.cat([labels.to(torch.int64), labels.new_full((pad,), -1).to(torch.int64)]),
            torch.cat([scores.float(), scores.new_zeros((pad,))]),
            count,
        )

    def onnx_output_types(self, limit, classes):
        from onnx import TensorProto

        return [("boxes", TensorProto.FLOAT, ["batch", limit, 4]), ("labels", TensorProto.INT64, ["batch", limit]),
                ("scores", TensorProto.FLOAT, ["batch", limit]), ("count", TensorProto.INT64, ["batch"])]  # fmt: skip

    def onnx_answers(self, outputs, n):
        """Padding dropped: the first `count` of each image's detections."""
        boxes, labels, scores, count = outputs
        return [{"boxes": boxes[i, : count[i]], "labels": labels[i, : count[i]], "scores": scores[i, : count[i]]}
                for i in range(n)]  # fmt: skip


def _objects(prediction: Prediction):
    for box, label, score in zip(prediction.boxes.tolist(), prediction.labels.tolist(), prediction.scores.tolist(),
                                 strict=True):  # fmt: skip
        yield box, int(label), float(score)

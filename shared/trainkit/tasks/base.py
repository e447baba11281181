"""What a task is asked for, and the types it answers in.

A task (detection, object crops, and the ones to come) owns everything that differs between tasks:
the targets a sample carries through the loader and how a batch is made of them; how a model's raw
outputs become each image's answer; the one evaluator that training's validation and `trainkit
evaluate` share, with its pictures; the rows `predict` writes in the label-set formats; what the
pyfunc and the ONNX file return; the metrics a trainer may monitor. The loader, harness, predictor,
packaging and export ask the task and never branch on its name.

A task is a frozen dataclass: two instances of one task are equal, and it travels in a LoaderConfig.
Modules of this package import the loader's geometry and torchmetrics inside their methods only, so
that a trainer (which names its task) stays light to import. `config` below is the loader's
`trainkit.batch.LoaderConfig` (which holds the task, so is not imported here).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

if TYPE_CHECKING:
    from trainkit.classmap import ClassMap
    from trainkit.params import TileSpec
    from trainkit.tasks.batches import Batch


@dataclass(frozen=True)
class Prediction:
    """One image's (or object's) answer. Detection: boxes (k, 4) xyxy in the image's pixels, class ids,
    scores. Classification: the class id and score of the best class, and every class's probability."""

    width: int
    height: int
    boxes: np.ndarray  # (k, 4) float32; (0, 4) for classifiers
    labels: np.ndarray  # (k,) int64 class ids
    scores: np.ndarray  # (k,) float32
    probabilities: np.ndarray | None = None  # (classes,) for classifiers

    def tensors(self) -> dict[str, torch.Tensor]:
        """Boxes, labels and scores as torch tensors: what torchmetrics and the drawing take."""
        return {"boxes": torch.from_numpy(self.boxes), "labels": torch.from_numpy(self.labels),
                "scores": torch.from_numpy(self.scores)}  # fmt: skip

    def above(self, threshold: float) -> Prediction:
        """This answer with only what scores `threshold` or more."""
        keep = self.scores >= threshold
        return Prediction(self.width, self.height, self.boxes[keep], self.labels[keep], self.scores[keep],
                          self.probabilities)  # fmt: skip


@dataclass(frozen=True)
class Truth:
    """What the labels say of one unit (an image, or an object for crops), in the model's class ids.

    `crowd_*`: regions labelled as crowds (COCO's `iscrowd`), where detections count as neither right
    nor wrong."""

    path: str
    image_url: str
    boxes: np.ndarray  # (k, 4) float32 xyxy in image pixels
    labels: np.ndarray  # (k,) int64; a classified object: its one class
    crowd_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    crowd_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


class Evaluator(ABC):
    """One pass of a model over a labelled set: `update` with each unit's answer and truth, then read
    `metrics` (scalars, logged as val/NAME or eval/NAME) and `details` (what is not a scalar), and draw."""

    @abstractmethod
    def update(self, answer: Prediction, truth: Truth) -> None:
        """Count one unit (an image, or an object for crops)."""

    @property
    @abstractmethod
    def metrics(self) -> dict[str, float]:
        """The scalar metrics, computed once after the last update."""

    @property
    def details(self) -> dict[str, Any]:
        """Results that are not scalars (a confusion matrix), for metrics.json."""
        return {}

    @abstractmethod
    def draw(self, folder: Path) -> list[Path]:
        """The pictures training keeps of its final validation (in OUTPUT_DIR/plots)."""

    @abstractmethod
    def report(self, folder: Path, worst: int) -> list[Path]:
        """The pictures `trainkit evaluate` writes: curves, the confusion matrix, the `worst` units."""


@dataclass(frozen=True)
class Task(ABC):
    """Base of every task; see the module doc. Subclasses set the class attributes and the methods."""

    name: ClassVar[str]
    # The scalar metrics the task's evaluator always returns (per-class ones besides), as `val/NAME`
    # for a trainer's `monitor` and a sweep's objective.
    metrics: ClassVar[tuple[str, ...]]
    # Whether images may be cut into tiles (the tile_* hyperparameters and --tile-* options).
    tiles: ClassVar[bool] = False
    # Whether the labels can be reviewed against the model's answers (`evaluate --label-issues`).
    reviews_labels: ClassVar[bool] = False
    # The numpy dtypes of the arrays each sample carries through the loader (see `sample`).
    target_dtypes: ClassVar[tuple[str, ...]]
    # The columns of a served answer (the pyfunc's output, AutoML's form).
    answer_columns: ClassVar[tuple[str, ...]]
    # The ONNX file's outputs, in order (see `onnx_outputs`).
    onnx_names: ClassVar[tuple[str, ...]]

    # --- loading -----------------------------------------------------------------------------------
    def units(self, records) -> int:
        """How many samples an epoch of `records` holds (before tiling)."""
        return len(records)

    def unit_images(self, records) -> np.ndarray | None:
        """The image of each unit, where a unit is not an image (None: units are images)."""
        return None

    def unit_sizes(self, records, units: np.ndarray) -> np.ndarray:
        """(width, height) in image pixels of each of `units`: what an answer is measured against."""
        return records.sizes[units]

    @abstractmethod
    def sample(self, records, unit: int, image: int, flip: bool, crop: np.random.Generator | None, tile,
               config: Any) -> tuple[Any, tuple[np.ndarray, ...]]:  # fmt: skip
        """The window of `image` to decode for `unit` (a trainkit.geometry.windows.Window, mirrored when
        `flip`; a random crop drawn from `crop` when given; `tile` when training on tiles) and the
        sample's targets, arrays of `target_dtypes`, relative to that window."""

    def tile_targets(self, records, image: int, tile, config: Any) -> tuple[np.ndarray, ...]:
        """The targets of one evaluation window `tile` of `image` (tasks that tile)."""
        raise NotImplementedError(f"task {self.name} does not tile")

    @abstractmethod
    def collate(self, images: torch.Tensor, targets: list[tuple[np.ndarray, ...]], units: np.ndarray,
                image_ids: np.ndarray, windows: np.ndarray) -> Batch:  # fmt: skip
        """A batch of resized images (N, 3, S, S) uint8 and their samples' targets; `windows` are the
        decoded windows (x0, y0, x1, y1 in image pixels)."""

    # --- model outputs -----------------------------------------------------------------------------
    @abstractmethod
    def predict_batch(self, images: torch.Tensor, scales: torch.Tensor) -> Batch:
        """The batch `Trainer.predict` receives for unlabelled images (`scales`: input pixels per image pixel)."""

    @abstractmethod
    def answers(self, outputs: list[dict[str, np.ndarray]], sizes: np.ndarray, windows: np.ndarray | None,
                owners: np.ndarray, image_size: int, tiles: TileSpec | None,
                min_score: float) -> list[Prediction]:  # fmt: skip
        """The model's raw outputs per input (numpy; see `Trainer.predict`) as one answer per image,
        in the image's pixels (`sizes`: each image's width, height; `windows`/`owners` as in
        BasePredictor.predict_batch)."""

    # --- evaluation --------------------------------------------------------------------------------
    @abstractmethod
    def truth(self, records, unit: int, remap: np.ndarray) -> Truth:
        """What `records` say of `unit`, in the model's class ids (`remap`: label-set id -> model id,
        -1 for a class the model does not know)."""

    @abstractmethod
    def evaluator(self, classes: ClassMap, min_score: float) -> Evaluator:
        """The task's one evaluator (`min_score`: the operating threshold for counts at a threshold)."""

    # --- answers written for others ----------------------------------------------------------------
    @abstractmethod
    def automl_answer(self, prediction: Prediction, classes: ClassMap, filename: str) -> dict:
        """One image as AutoML's image models answer (the pyfunc's row)."""

    @abstractmethod
    def labelling_row(self, prediction: Prediction, classes: ClassMap, image_url: str) -> dict:
        """A label-set row in the labelling API's form (what `validate` and `train` read back)."""

    @abstractmethod
    def jsonl_line(self, prediction: Prediction, classes: ClassMap, image_url: str) -> dict:
        """A line of AutoML's JSON Lines dataset form, with the scores beside the labels."""

    def draw_answers(self, drawn: list[tuple[str, Prediction]], classes: ClassMap, folder: Path) -> list[Path]:
        """Pictures of `predict`'s answers (path, answer), where the task has something to draw on an image."""
        return []

    # --- ONNX --------------------------------------------------------------------------------------
    @abstractmethod
    def onnx_outputs(self, out: dict[str, torch.Tensor], limit: int) -> tuple[torch.Tensor, ...]:
        """One image's `Trainer.predict` output as the ONNX outputs `onnx_names` (traced; `limit`: the
        model's answers per image, to pad to)."""

    @abstractmethod
    def onnx_output_types(self, limit: int, classes: int) -> list[tuple[str, int, list]]:
        """(name, onnx.TensorProto element type, shape with "batch" first) of each output."""

    @abstractmethod
    def onnx_answers(self, outputs: list[np.ndarray], n: int) -> list[dict[str, np.ndarray]]:
        """onnxruntime's outputs for `n` images as per-input raw outputs (as `Trainer.predict`'s)."""


def labelled_object(box, name: str) -> dict:
    """An object (x0, y0, x1, y1 in pixels) as the labelling API writes it: bottom is where a range starts."""
    x0, y0, x1, y1 = (round(float(v), 1) for v in box)
    return {"type": name, "bottomX": x0, "topX": x1, "bottomY": y0, "topY": y1}


def rounded(values, digits: int) -> list[float]:
    """Floats rounded for a written answer."""
    return [round(float(v), digits) for v in values]

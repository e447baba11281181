"""A trained model on decoded images: the training resize and normalisation, the trainer's own `predict`,
and boxes back in each image's own pixels."""

from __future__ import annotations

import importlib
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from trainkit.batch import to_float
from trainkit.classmap import CLASS_MAP_FILE, ClassMap
from trainkit.errors import UserError
from trainkit.geometry.tile_merge import as_numpy
from trainkit.geometry.tiles import tile_windows
from trainkit.geometry.windows import full_window
from trainkit.inference.settings import ModelSettings
from trainkit.loading.resize import resize_into
from trainkit.tasks import Prediction, Task, task_named
from trainkit.trainer import Trainer

if TYPE_CHECKING:
    from trainkit.batch import BatchLoader
    from trainkit.params import TileSpec

SETTINGS_FILE = "settings.json"

NMS_OFF = 1.0  # class-agnostic NMS at IoU 1 suppresses nothing


class BasePredictor:
    """What every predictor shares: the training resize before the model, answers in image pixels after,
    and tiling (the model's own `tiling` setting, or what `with_tiles` says)."""

    classes: ClassMap
    settings: ModelSettings
    device: torch.device

    @property
    def task(self) -> Task:
        """What the model does (its settings name it)."""
        return task_named(self.settings.task)

    @property
    def tiles(self) -> TileSpec | None:
        """How images are cut before the model (None: whole images): the saved model's setting unless
        replaced by `with_tiles`."""
        from trainkit.params import TileSpec

        return TileSpec.from_json(self.settings.tiling) if self.settings.tiling and self.task.tiles else None

    def with_tiles(self, tiles: TileSpec | None) -> None:
        """Predict on these tiles from now on (None: whole images), whatever the model was trained with."""
        self.settings = replace(self.settings, tiling=tiles.to_json() if tiles is not None else None)

    def predict(
        self, images: list[np.ndarray], min_score: float | None = None, agnostic_nms: float = NMS_OFF
    ) -> list[Prediction]:
        """Answers for (H, W, 3) uint8 RGB images, cut into the model's tiles and resized as in
        training; see `predict_batch` for the rest."""
        size, tiles = self.settings.image_size, self.tiles
        shapes = [image.shape[:2] for image in images]
        cuts = [tile_windows(w, h, tiles) if tiles is not None else [full_window(w, h)] for h, w in shapes]
        batch = torch.empty((sum(map(len, cuts)), 3, size, size), dtype=torch.uint8, device=self.device)
        batch = batch.contiguous(memory_format=torch.channels_last)
        n = 0
        for image, windows in zip(images, cuts, strict=True):
            chw = torch.tensor(np.ascontiguousarray(image), device=self.device).permute(2, 0, 1).unsqueeze(0)
            for w in windows:
                resize_into(chw[:, :, w.y0 : w.y0 + w.height, w.x0 : w.x0 + w.width], batch[n : n + 1])
                n += 1
        sizes = np.array([(image.shape[1], image.shape[0]) for image in images], np.float32).reshape(-1, 2)
        corners = np.concatenate([w.xyxy() for windows in cuts for w in windows]).astype(np.float32)
        owners = np.repeat(np.arange(len(images)), [len(windows) for windows in cuts])
        return self.predict_batch(batch, sizes, min_score, agnostic_nms, corners, owners)

    def predict_batch(
        self,
        images: torch.Tensor,
        sizes: np.ndarray,
        min_score: float | None = None,
        agnostic_nms: float = NMS_OFF,
        windows: np.ndarray | None = None,
        owners: np.ndarray | None = None,
    ) -> list[Prediction]:
        """Answers for inputs already resized to the model's input, (M, 3, S, S) uint8 on the model's
        device (what trainkit's loader yields), given each image's original (width, height).

        Without `windows` each input is a whole image. With them (x0, y0, x1, y1 in image pixels per
        input) inputs are windows of the images `owners` says (consecutive; `sizes` per image), whose
        detections are mapped back and merged as `tiles` says.
        `agnostic_nms` < 1: of detections overlapping by more than that IoU, whatever their classes,
        only the best-scoring stays (one box per object, as pre-labels need); 1 keeps them all."""
        threshold = self.settings.min_score if min_score is None else min_score
        sizes = np.asarray(sizes, np.float32).reshape(-1, 2)
        owners = np.arange(len(images)) if owners is None else np.asarray(owners)
        outputs = self.run(images, _input_sizes(sizes, windows))
        answers = self.task.answers(outputs, sizes, windows, owners, self.settings.image_size, self.tiles, threshold)
        return answers if agnostic_nms >= NMS_OFF else [_agnostic(a, agnostic_nms) for a in answers]

    def run(self, images: torch.Tensor, sizes: np.ndarray) -> list[dict[str, np.ndarray]]:
        """The model's raw outputs per input (see `Trainer.predict`), as numpy arrays; `sizes` are the
        inputs' own (width, height) in image pixels."""
        raise NotImplementedError


def _input_sizes(sizes: np.ndarray, windows: np.ndarray | None) -> np.ndarray:
    """Each input's (width, height) in image pixels: its window's, or its whole image's."""
    if windows is None:
        return sizes
    windows = np.asarray(windows, np.float32).reshape(-1, 4)
    return windows[:, 2:] - windows[:, :2]


def _agnostic(answer: Prediction, iou: float) -> Prediction:
    """`answer` after non-maximum suppression across classes at `iou`, best score first."""
    from torchvision.ops import nms

    if len(answer.scores) < 2:
        return answer
    keep = nms(torch.from_numpy(answer.boxes).float(), torch.from_numpy(answer.scores).float(), iou).numpy()
    return Prediction(answer.width, answer.height, answer.boxes[keep], answer.labels[keep], answer.scores[keep])


def check_agnostic_nms(iou: float, name: str = "--agnostic-nms") -> float:
    """`iou` if it is an IoU (0..1), else a UserError naming `name`."""
    if not 0 <= iou <= 1:
        raise UserError(f"{name} {iou}: must be an IoU between 0 and 1 (1 keeps every box)")
    return iou


class Predictor(BasePredictor):
    """A PyTorch model with what it needs to run: its trainer, class map and settings, on one device."""

    def __init__(
        self,
        trainer: Trainer,
        model: nn.Module,
        classes: ClassMap,
        settings: ModelSettings,
        device: torch.device,
        amp_dtype: torch.dtype | None = None,
    ) -> None:
        self.trainer = trainer
        self.model = model.to(device).eval()
        self.classes = classes
        self.settings = settings
        self.device = device
        self.amp_dtype = amp_dtype  # mixed precision's type on a GPU (None: full precision)

    @classmethod
    def in_training(cls, trainer: Trainer, model: nn.Module, classes: ClassMap, loader: BatchLoader,
                    amp: bool) -> Predictor:  # fmt: skip
        """The model being trained, answering as it will once saved, for the batches of `loader`
        (its input size and tiles); `amp`: in the trainer's mixed precision, on a GPU."""
        config, device = loader.config, loader.device
        settings = ModelSettings(
            trainer=trainer.name, trainer_module=type(trainer).__module__, task=trainer.task.name,
            image_size=config.image_size, mean=tuple(trainer.mean), std=tuple(trainer.std),
            tiling=config.tiles.to_json() if config.tiles is not None else None,
        )  # fmt: skip
        dtype = trainer.amp_dtype(device) if amp and device.type == "cuda" else None
        return cls(trainer, model, classes, settings, device, dtype)

    def run(self, images: torch.Tensor, sizes: np.ndarray) -> list[dict[str, np.ndarray]]:
        """The trainer's own `predict` on the images, normalised as the harness fed them in training."""
        batch = self.task.predict_batch(images, torch.from_numpy(self.settings.image_size / sizes))
        device, dtype = self.device, self.amp_dtype
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            outputs = self.trainer.predict(self.model, to_float(images, self.settings.mean, self.settings.std), batch)
        return as_numpy(outputs)


def load_predictor(folder: Path, device: torch.device | str = "cpu") -> Predictor:
    """The trainkit MLflow model in `folder` (its settings, class map, trainer code and PyTorch flavour)."""
    import mlflow.pytorch

    artifacts = folder / "artifacts"
    if not (artifacts / SETTINGS_FILE).is_file():
        raise UserError(f"{folder}: no artifacts/{SETTINGS_FILE}: not a trainkit model folder (a run's outputs/model)")
    settings = ModelSettings.load(artifacts / SETTINGS_FILE)
    classes = ClassMap.load(artifacts / CLASS_MAP_FILE)
    code = folder / "code"
    if code.is_dir() and str(code) not in sys.path:
        # The trainer's module (and a copy of trainkit) travel with the model: where trainkit is not
        # installed, as in an AzureML endpoint built from the model's requirements, they come from here.
        sys.path.insert(0, str(code))
    trainer = getattr(importlib.import_module(settings.trainer_module), "TRAINER", None)
    if not isinstance(trainer, Trainer):
        raise UserError(f"{folder}: module {settings.trainer_module} defines no TRAINER (a trainkit trainer)")
    device = torch.device(device)
    model = mlflow.pytorch.load_model(str(folder), map_location=device)
    return Predictor(trainer, model, classes, settings, device)

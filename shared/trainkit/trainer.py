"""The trainer interface: what a model author writes, in one file, for the harness to run.

Subclass `Trainer`, give it a `Params` dataclass (extending CommonParams), and implement
`build_model`, `loss` and `predict` (a torchvision detection model needs only `build_model`: subclass
`TorchvisionDetectionTrainer`). Everything else has a default the harness uses: optimiser,
schedule, export; what is evaluated and drawn is the task's (`task`, from trainkit.tasks). The
module must define `TRAINER = YourTrainer()`.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from trainkit.batch import Batch, LoaderConfig
from trainkit.classmap import ClassMap
from trainkit.detection_archs import label_offset
from trainkit.errors import UserError
from trainkit.params import CommonParams, tile_spec
from trainkit.tasks import Detection, Task, task_named


class Trainer:
    """Base class of every trainer. Override what your model needs; keep the rest."""

    name: ClassVar[str] = "trainer"
    # What the model does (trainkit.tasks): the batches it gets, how its answers are read and evaluated.
    task: ClassVar[Task] = Detection()
    Params: ClassVar[type[CommonParams]] = CommonParams
    # The harness hands the model float images (x / 255 - mean) / std, on the model's device.
    mean: ClassVar[tuple[float, float, float]] = (0.0, 0.0, 0.0)
    std: ClassVar[tuple[float, float, float]] = (1.0, 1.0, 1.0)
    # Validation metrics the harness logs each epoch and draws as curves (names `evaluate` returns).
    summary_metrics: ClassVar[tuple[str, ...]] = ("map", "map_50")
    # The validation metric that picks the saved (best) model and drives early stopping, unless the
    # `monitor` hyperparameter names another.
    monitor: ClassVar[str] = "val/map"
    # `train` also writes model.onnx (trainkit.inference.onnx_export traces `predict` for one image);
    # set False for a model whose operations do not export.
    exports_onnx: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # Trainers written before tasks were types name theirs ("detection"): the name stands for the type.
        if isinstance(cls.__dict__.get("task"), str):
            cls.task = task_named(cls.__dict__["task"])

    def build_model(self, params: CommonParams, classes: ClassMap) -> nn.Module:
        """The model for these classes (ids 0 .. len(classes) - 1). Never download weights here."""
        raise NotImplementedError

    def loss(self, model: nn.Module, images: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        """Training losses for a batch; the harness minimises `out["loss"]` and logs the others."""
        raise NotImplementedError

    def predict(self, model: nn.Module, images: torch.Tensor, batch: Batch) -> list[dict[str, torch.Tensor]]:
        """Detection: per image `boxes` (xyxy in batch pixels), `labels` (class ids), `scores`.
        Classification: per sample `labels` (the class id, a 0-d tensor) and `scores` (probabilities)."""
        raise NotImplementedError

    @classmethod
    def metric_names(cls) -> tuple[str, ...]:
        """The validation metrics, as logged (`val/NAME`), that `monitor` and a sweep's objective may name:
        the task's evaluator's, the summary metrics and the monitor."""
        names = [f"val/{name}" for name in (*cls.task.metrics, *cls.summary_metrics)] + [cls.monitor]
        return tuple(dict.fromkeys(names))

    def loader_config(self, params: CommonParams, train: bool) -> LoaderConfig:
        """How the harness loads batches for this trainer: tiles when the tile_* hyperparameters ask
        (training on them unless `tile_train` is off; evaluation always on them)."""
        tiles = tile_spec(params)
        if tiles is not None and not self.task.tiles:
            raise UserError(f"hyperparameters 'tile_grid'/'tile_size' are for detection trainers; "
                            f"{self.name} is a {self.task.name} trainer: leave them out")  # fmt: skip
        return LoaderConfig(
            batch_size=params.batch_size,
            image_size=params.image_size,
            train=train,
            task=self.task,
            seed=params.seed,
            tiles=None if train and not params.tile_train else tiles,
        )

    def amp_dtype(self, device: torch.device) -> torch.dtype | None:
        """The float type of mixed precision (the `amp` hyperparameter, on a GPU); None: full precision.
        float16 is scaled against underflow (a GradScaler); bfloat16 needs no scaling."""
        return torch.float16

    def configure_optimizer(self, model: nn.Module, params: CommonParams) -> torch.optim.Optimizer:
        """SGD with momentum and weight decay on the trainable parameters."""
        trainable = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.SGD(trainable, lr=params.lr, momentum=0.9, weight_decay=params.weight_decay)

    def configure_scheduler(
        self, optimizer: torch.optim.Optimizer, params: CommonParams, total_steps: int
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """Linear warm-up for `warmup_steps` (at most a fifth of the run), then cosine decay to zero at
        `total_steps`."""
        # A warm-up longer than the run would never reach the set learning rate.
        warmup = min(params.warmup_steps, total_steps // 5)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def export(self, model: nn.Module, params: CommonParams, classes: ClassMap) -> nn.Module:
        """The module saved as the MLflow model (default: the trained model in eval mode, on the CPU)."""
        return model.eval().cpu()


class TorchvisionDetectionTrainer(Trainer):
    """A detection trainer whose model is a torchvision detection model (Faster R-CNN and its kin).

    Such a model takes a list of images and, in training, targets, and returns its losses; in eval
    mode it returns per-image boxes, labels and scores. Faster R-CNN and SSD reserve label 0 for the
    background, so class id `c` is label `c + 1` there, and `build_model` gives them `len(classes) + 1`
    classes; RetinaNet and FCOS take the class ids as they are (`trainkit.detection_archs`). Subclasses
    write `build_model` and keep `loss` and `predict`.
    """

    task: ClassVar[Task] = Detection()

    def loss(self, model: nn.Module, images: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        """The model's own losses (whatever it names them), summed into `loss`."""
        offset = label_offset(model)
        targets = [{"boxes": t["boxes"], "labels": t["labels"] + offset} for t in batch.targets]
        losses = model(list(images), targets)
        return {"loss": sum(losses.values()), **losses}

    def predict(self, model: nn.Module, images: torch.Tensor, batch: Batch) -> list[dict[str, torch.Tensor]]:
        """The model's detections, with labels back as class ids."""
        offset = label_offset(model)
        return [
            {"boxes": out["boxes"], "labels": out["labels"] - offset, "scores": out["scores"]}
            for out in model(list(images))
        ]

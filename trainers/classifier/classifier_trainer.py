"""trainkit trainer: an image classifier of labelled objects (torchvision ResNet-18 or MobileNetV3-Small).

Task: each labelled object is cut out of its image (its box: the `ObjectCrops` task of trainkit.tasks) and
classified by its class name (`type`, or `label`). The same label sets as the detector, no new
loader: a second opinion on what the detector's boxes hold, or a crop classifier in a pipeline.
Metrics: accuracy, macro and per-class precision / recall / F1, and the confusion matrix (PNG).
Weights are never downloaded: train from scratch, or start from `weights`: torchvision's ImageNet
weights baked into the cache (`torchvision:ResNet18_Weights.IMAGENET1K_V1`), a state-dict file or an
earlier run; the final layer is re-initialised for the dataset's classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional
from torchvision.models import mobilenet_v3_small, resnet18
from torchvision.ops.misc import FrozenBatchNorm2d

from trainkit.classmap import ClassMap
from trainkit.params import CommonParams, require_choice
from trainkit.tasks import ObjectCrops
from trainkit.trainer import Batch, Trainer
from trainkit.weights import check_spec, load_into

ARCHITECTURES = {"resnet18": resnet18, "mobilenet_v3_small": mobilenet_v3_small}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ClassifierParams(CommonParams):
    """Classifier options on top of the common hyperparameters (crops are small: 128 px by default)."""

    image_size: int = 128
    batch_size: int = 32
    lr: float = 0.01
    arch: str = "resnet18"
    weights: str = ""  # torchvision:NAME, a state-dict file or a run folder; never fetched (final layer replaced)
    # BatchNorm with fixed statistics (torchvision's FrozenBatchNorm2d, as its detectors use): for
    # fine-tuning `weights` with small per-GPU batches, and so that a distributed run on CPUs (which
    # have no SyncBatchNorm) computes exactly what one process with the global batch computes.
    freeze_bn: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require_choice(self, "arch", ARCHITECTURES)
        if self.weights:
            check_spec(self.weights, "weights")


class ClassifierTrainer(Trainer):
    name = "classifier"
    task = ObjectCrops()
    Params = ClassifierParams
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    summary_metrics = ("accuracy", "macro_f1")
    monitor = "val/accuracy"

    def build_model(self, params: ClassifierParams, classes: ClassMap) -> nn.Module:
        norm = {"norm_layer": FrozenBatchNorm2d} if params.freeze_bn else {}
        model = ARCHITECTURES[params.arch](weights=None, num_classes=len(classes), **norm)
        if params.weights:
            # Everything but the final layer, whose shape depends on the classes.
            load_into(model, params.weights)
        return model

    def loss(self, model: nn.Module, images: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        logits = model(images)
        loss = functional.cross_entropy(logits, batch.labels)
        accuracy = (logits.argmax(1) == batch.labels).float().mean()
        return {"loss": loss, "accuracy": accuracy.detach()}

    def predict(self, model: nn.Module, images: torch.Tensor, batch: Batch) -> list[dict[str, torch.Tensor]]:
        probabilities = model(images).float().softmax(1)
        scores, labels = probabilities.max(1)
        return [
            {"labels": label, "scores": p, "score": s}
            for label, p, s in zip(labels, probabilities, scores, strict=True)
        ]


TRAINER = ClassifierTrainer()

"""The trainer template: copy this folder to trainers/<your_model>/, rename the file to
<your_model>_trainer.py, and fill in the places marked FILL IN. The harness does everything else
(data, devices, AMP, schedule, checkpoints and resume, MLflow, evaluation, plots, export).

As shipped it is a complete, tiny detector (a few conv layers under torchvision's Faster R-CNN
heads), so the template itself is trained in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

from trainkit.classmap import ClassMap
from trainkit.params import CommonParams
from trainkit.trainer import TorchvisionDetectionTrainer


# FILL IN: your model's own hyperparameters. Every trainer also accepts the common ones
# (epochs, batch_size, lr, image_size, seed, weight_decay, grad_clip, warmup_steps, max_steps, amp).
# Users set them with `--set width=32` or `--params file.json`; unknown names are rejected.
@dataclass(frozen=True)
class SkeletonParams(CommonParams):
    width: int = 16  # channels of the first conv layer

    def __post_init__(self) -> None:
        super().__post_init__()
        # A ValueError here reaches the user as one line naming the hyperparameter (exit 2).
        # trainkit.params.require_choice / require_local_file cover named choices and weight files.
        if self.width < 4:
            raise ValueError(f"hyperparameter 'width' must be at least 4, got {self.width}")


class TinyBackbone(nn.Sequential):
    """Four strided conv blocks: a feature map at 1/16 of the input."""

    def __init__(self, width: int) -> None:
        layers: list[nn.Module] = []
        channels = 3
        for out in (width, width * 2, width * 4, width * 4):
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        super().__init__(*layers)
        self.out_channels = channels  # what torchvision's detection heads read


class SkeletonTrainer(TorchvisionDetectionTrainer):
    name = "skeleton"  # FILL IN: your trainer's name (shown in run.json and MLflow)
    task = "detection"  # or "object_crops" / "image_labels" for classifiers
    Params = SkeletonParams

    # FILL IN: build the model for the dataset's classes (ids 0 .. len(classes) - 1).
    # Load pretrained weights only from files baked into the image; never download here.
    def build_model(self, params: SkeletonParams, classes: ClassMap) -> nn.Module:
        anchors = AnchorGenerator(sizes=((16, 32, 64, 128),), aspect_ratios=((0.5, 1.0, 2.0),))
        return FasterRCNN(
            TinyBackbone(params.width),
            num_classes=len(classes) + 1,  # + background
            rpn_anchor_generator=anchors,
            box_roi_pool=MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2),
            min_size=params.image_size,
            max_size=params.image_size,
        )

    # FILL IN, for a model that is not a torchvision detection model (subclass `Trainer` then):
    #   loss(model, images, batch) -> {"loss": total, ...}: `images` are float (N, 3, S, S) on the
    #     device, in [0, 1] (set `mean`/`std` on the class to normalise differently); `batch.targets`
    #     holds per image "boxes" (xyxy pixels of the S x S image) and "labels" (class ids).
    #   predict(model, images, batch) -> per image {"boxes", "labels" (class ids), "scores"}.
    # TorchvisionDetectionTrainer writes both for torchvision's detection models.


TRAINER = SkeletonTrainer()  # the harness looks for this name

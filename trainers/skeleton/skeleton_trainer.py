"""The trainer template: copy this folder to trainers/<your_model>/, rename the file to
<your_model>_trainer.py, and fill in the places marked FILL IN. The harness does everything else
(data, devices, AMP, schedule, checkpoints and resume, MLflow, evaluation, plots, export).

As shipped it is a complete, small detector trained from scratch (eight conv layers under
torchvision's Faster R-CNN heads), so the template itself is trained in the tests and by `make demo`.
Its defaults are what made it learn from scratch on a few hundred images (measured; see the README,
"A demo that learns"): GroupNorm rather than BatchNorm, few sampled RoIs with half of them positive,
and AdamW with a warm-up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from trainkit.classmap import ClassMap
from trainkit.params import CommonParams, require_choice
from trainkit.tasks import Detection
from trainkit.trainer import TorchvisionDetectionTrainer
from trainkit.weights import check_spec, load_into

GROUPS = 8  # GroupNorm groups: every layer's width is a multiple of this


# FILL IN: your model's own hyperparameters. Every trainer also accepts the common ones
# (epochs, batch_size, lr, image_size, seed, weight_decay, grad_clip, warmup_steps, max_steps, amp,
# monitor, patience, min_delta);
# a field named like one of them changes its default for this trainer.
# Users set them with `--set width=32` or `--params file.json`; unknown names are rejected.
@dataclass(frozen=True)
class SkeletonParams(CommonParams):
    lr: float = 2e-3  # AdamW's (see configure_optimizer)
    warmup_steps: int = 20
    width: int = 16  # channels of the first stage; the later stages have 2x and 4x
    norm: str = "group"  # group or batch (see `conv`)
    # The box head learns from RoIs sampled per image. torchvision's 512 with at most 25% positives
    # suit COCO; on a small set, where early proposals rarely hit an object, the few positives drown
    # among 500 backgrounds and the head learns to answer "background" everywhere.
    rois_per_image: int = 64
    positive_fraction: float = 0.5
    proposals: int = 500  # RPN proposals kept per image (training and evaluation)
    # Where to start: "" (from scratch), a state-dict file, or an earlier run's output folder (continue
    # training it, e.g. on new labels; layers whose shape changed, like the class head, start afresh).
    weights: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        # A ValueError here reaches the user as one line naming the hyperparameter (exit 2).
        # trainkit.params.require_choice and trainkit.weights.check_spec check named choices and weights.
        require_choice(self, "norm", NORMS)
        if self.width < GROUPS or self.width % GROUPS:
            raise ValueError(f"hyperparameter 'width' must be a multiple of {GROUPS}, got {self.width}")
        if not 0 < self.positive_fraction <= 1 or self.rois_per_image < 1 or self.proposals < 1:
            raise ValueError("hyperparameters 'rois_per_image', 'proposals' (>= 1), 'positive_fraction' (0..1]")
        if self.weights:
            check_spec(self.weights, "weights")


# GroupNorm normalises each image on its own: unlike BatchNorm it does not depend on the batch,
# which lets detectors train from scratch with small batches (Wu & He, 2018). Measured on the demo
# data, BatchNorm's model stays near mAP@0.5 0.1 where GroupNorm's passes 0.3 (benchmarks/quality.py).
NORMS = {"group": lambda channels: nn.GroupNorm(GROUPS, channels), "batch": nn.BatchNorm2d}


def conv(channels_in: int, channels_out: int, stride: int, norm: str) -> list[nn.Module]:
    return [
        nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False),
        NORMS[norm](channels_out),
        nn.ReLU(inplace=True),
    ]


class SmallBackbone(nn.Sequential):
    """Four stages of two conv layers, each stage halving the size: a feature map at 1/16 of the input."""

    def __init__(self, width: int, norm: str) -> None:
        layers: list[nn.Module] = []
        channels = 3
        for out in (width, width * 2, width * 4, width * 4):
            layers += conv(channels, out, 2, norm) + conv(out, out, 1, norm)
            channels = out
        super().__init__(*layers)
        self.out_channels = channels  # what torchvision's detection heads read


class SkeletonTrainer(TorchvisionDetectionTrainer):
    name = "skeleton"  # FILL IN: your trainer's name (shown in run.json and MLflow)
    task = Detection()  # what the model does: trainkit.tasks (ObjectCrops() for a crop classifier)
    Params = SkeletonParams

    # FILL IN: build the model for the dataset's classes (ids 0 .. len(classes) - 1).
    # Load pretrained weights only from files baked into the image (trainkit.weights); never download here.
    def build_model(self, params: SkeletonParams, classes: ClassMap) -> nn.Module:
        backbone = SmallBackbone(params.width, params.norm)
        representation = 256
        model = FasterRCNN(
            backbone,
            rpn_anchor_generator=AnchorGenerator(sizes=((16, 32, 64, 128),), aspect_ratios=((0.5, 1.0, 2.0),)),
            box_roi_pool=MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2),
            box_head=TwoMLPHead(backbone.out_channels * 7 * 7, representation),
            box_predictor=FastRCNNPredictor(representation, len(classes) + 1),  # + background
            min_size=params.image_size,  # the loader already resized: no second resize
            max_size=params.image_size,
            box_batch_size_per_image=params.rois_per_image,
            box_positive_fraction=params.positive_fraction,
            rpn_pre_nms_top_n_train=params.proposals,
            rpn_post_nms_top_n_train=params.proposals,
            rpn_pre_nms_top_n_test=params.proposals,
            rpn_post_nms_top_n_test=params.proposals,
        )
        if params.weights:
            load_into(model, params.weights)
        return model

    # FILL IN (optional): the optimiser. The default is SGD with momentum; AdamW needs no tuning of
    # the learning rate per model size, which suits a template trained from scratch.
    def configure_optimizer(self, model: nn.Module, params: SkeletonParams) -> torch.optim.Optimizer:
        trainable = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.AdamW(trainable, lr=params.lr, weight_decay=params.weight_decay)

    # FILL IN, for a model that is not a torchvision detection model (subclass `Trainer` then):
    #   loss(model, images, batch) -> {"loss": total, ...}: `images` are float (N, 3, S, S) on the
    #     device, in [0, 1] (set `mean`/`std` on the class to normalise differently); `batch.targets`
    #     holds per image "boxes" (xyxy pixels of the S x S image) and "labels" (class ids).
    #   predict(model, images, batch) -> per image {"boxes", "labels" (class ids), "scores"}.
    # TorchvisionDetectionTrainer writes both for torchvision's detection models.


TRAINER = SkeletonTrainer()  # the harness looks for this name

"""trainkit trainer: torchvision's COCO detectors (Faster R-CNN, RetinaNet, FCOS, SSDlite), fine-tuned.

`arch` picks the detector (trainkit.detection_archs): fasterrcnn_mobilenet_v3_large_fpn (default),
fasterrcnn_resnet50_fpn_v2, retinanet_resnet50_fpn_v2, fcos_resnet50_fpn or
ssdlite320_mobilenet_v3_large. By default it fine-tunes that arch's COCO weights, which the image
bakes in (its Dockerfile's `ARG WEIGHTS`; in a venv, `trainkit weights download` them once): the
class layer is replaced for the dataset's classes, the backbone's early layers stay frozen, and a
warm-up eases the new layer in, at torchvision's recipe learning rate scaled to the batch. Weights
are never downloaded at run time. `weights` may also be a state-dict file or an earlier run
(continue training), or empty (from scratch: every layer trains).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from trainkit.classmap import ClassMap
from trainkit.detection_archs import ARCHS, DEFAULT_ARCH, build_detector
from trainkit.params import CommonParams, require_choice
from trainkit.trainer import TorchvisionDetectionTrainer
from trainkit.weights import check_spec, is_named, load_into, torchvision_weights

COCO = "coco"  # the `weights` value that stands for the arch's COCO weights


@dataclass(frozen=True)
class DetectorParams(CommonParams):
    """torchvision detector options on top of the common hyperparameters."""

    arch: str = DEFAULT_ARCH
    # 0: torchvision's reference recipe for the arch, scaled to batch_size (0.01 for Faster R-CNN at 8).
    lr: float = 0.0
    # The whole detector's starting point: coco (the arch's COCO weights; the class layer is replaced for
    # this dataset's classes), torchvision:<Enum>.<member>, a state-dict file, an earlier run's folder, or "".
    weights: str = COCO
    # The backbone's alone (e.g. torchvision:MobileNet_V3_Large_Weights.IMAGENET1K_V1); the rest starts afresh.
    backbone_weights: str = ""
    # With pretrained weights, how many backbone stages train; -1: the arch's default (3; SSDlite 6).
    # From scratch every layer trains.
    trainable_backbone_layers: int = -1
    warmup_steps: int = 100  # a new class layer on a pretrained body: ease it in (at most a fifth of the run)
    score_threshold: float = 0.05
    detections_per_image: int = 100
    # Faster R-CNN's box head learns from RoIs sampled per image; 0: torchvision's 512 at 25% positives,
    # its COCO recipe. Fewer, more of them positive, make a from-scratch box head learn on a small set
    # (the skeleton's finding) and a CPU step three times cheaper (RoIAlign's backward is half of it).
    rois_per_image: int = 0
    positive_fraction: float = 0.0

    def __post_init__(self) -> None:
        require_choice(self, "arch", ARCHS)
        # Resolved here, so that run.json, MLflow and the image check name what the run really uses.
        arch = ARCHS[self.arch]
        if self.weights == COCO:
            object.__setattr__(self, "weights", arch.coco_weights)
        if self.lr == 0:
            object.__setattr__(self, "lr", arch.lr_for(self.batch_size))
        super().__post_init__()
        if self.weights:
            check_spec(self.weights, "weights")
        if self.backbone_weights:
            check_spec(self.backbone_weights, "backbone_weights", named_only=True)
        if (self.rois_per_image or self.positive_fraction) and not arch.name.startswith("fasterrcnn"):
            raise ValueError(f"hyperparameters 'rois_per_image' and 'positive_fraction' apply to the Faster R-CNN "
                             f"archs only, not {arch.name}")  # fmt: skip
        if self.rois_per_image < 0 or not 0 <= self.positive_fraction <= 1:
            raise ValueError("hyperparameters 'rois_per_image' (>= 1, or 0: 512) and 'positive_fraction' "
                             "((0..1], or 0: 0.25) are out of range")  # fmt: skip
        if not -1 <= self.trainable_backbone_layers <= 6:
            raise ValueError(f"hyperparameter 'trainable_backbone_layers' = {self.trainable_backbone_layers} "
                             "is out of range: 0 to 6, or -1 for the arch's default")  # fmt: skip


class DetectorTrainer(TorchvisionDetectionTrainer):
    name = "detector"
    Params = DetectorParams

    def build_model(self, params: DetectorParams, classes: ClassMap) -> nn.Module:
        layers = None if params.trainable_backbone_layers < 0 else params.trainable_backbone_layers
        # torchvision's builders default to ImageNet backbone weights: say None, or they would download them.
        backbone = torchvision_weights(params.backbone_weights, "backbone_weights") if params.backbone_weights else None
        arch = ARCHS[params.arch]
        options = {
            "arch": arch,
            "num_classes": arch.labels_for(len(classes)),
            "image_size": params.image_size,
            "score_threshold": params.score_threshold,
            "detections_per_image": params.detections_per_image,
            "weights_backbone": backbone,
            "trainable_backbone_layers": layers,
            "roi_sampling": {"box_batch_size_per_image": params.rois_per_image or None,
                             "box_positive_fraction": params.positive_fraction or None},
        }  # fmt: skip
        if is_named(params.weights):
            # torchvision's own fine-tuning recipe: its detector as published (frozen BatchNorm, its
            # classes), then a new class layer for ours. torchvision reads the file from the cache.
            return build_detector(weights=torchvision_weights(params.weights, "weights"), **options)
        model = build_detector(**options)
        if params.weights:
            load_into(model, params.weights)
        return model


TRAINER = DetectorTrainer()

"""trainkit trainer: a torchvision Faster R-CNN detector (MobileNetV3-Large FPN or ResNet-50 FPN v2).

By default it fine-tunes torchvision's COCO detector, which the image bakes in (its Dockerfile's
`ARG WEIGHTS`; in a venv, `trainkit weights download` it once): the class head is re-initialised
for the dataset's classes, the backbone's early layers stay frozen, and a warm-up eases the new head
in. Weights are never downloaded at run time. `weights` may also be a state-dict file or an earlier
run (continue training), or empty (from scratch: every layer trains).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn, fasterrcnn_resnet50_fpn_v2
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

from trainkit.classmap import ClassMap
from trainkit.errors import UserError
from trainkit.params import CommonParams, require_choice
from trainkit.trainer import TorchvisionDetectionTrainer
from trainkit.weights import check_spec, is_named, load_into, torchvision_weights

COCO = "torchvision:FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1"
BACKBONES = {"mobilenet_v3_large": fasterrcnn_mobilenet_v3_large_fpn, "resnet50": fasterrcnn_resnet50_fpn_v2}


@dataclass(frozen=True)
class DetectorParams(CommonParams):
    """Faster R-CNN options on top of the common hyperparameters."""

    backbone: str = "mobilenet_v3_large"
    # The whole detector's starting point: torchvision:<Enum>.<member> (COCO by default; the class head
    # is re-initialised for this dataset's classes), a state-dict file, an earlier run's folder, or "".
    weights: str = COCO
    # The backbone's alone (e.g. torchvision:MobileNet_V3_Large_Weights.IMAGENET1K_V1); the rest starts afresh.
    backbone_weights: str = ""
    trainable_backbone_layers: int = 3  # used with pretrained weights; from scratch every layer trains
    warmup_steps: int = 100  # a new class head on a pretrained body: ease it in (at most a fifth of the run)
    score_threshold: float = 0.05
    detections_per_image: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        require_choice(self, "backbone", BACKBONES)
        if self.weights:
            check_spec(self.weights, "weights")
        if self.backbone_weights:
            check_spec(self.backbone_weights, "backbone_weights", named_only=True)


class DetectorTrainer(TorchvisionDetectionTrainer):
    name = "detector"
    Params = DetectorParams

    def build_model(self, params: DetectorParams, classes: ClassMap) -> nn.Module:
        options = {
            "min_size": params.image_size,  # the loader already resized: no second resize
            "max_size": params.image_size,
            "box_score_thresh": params.score_threshold,
            "box_detections_per_img": params.detections_per_image,
        }
        if params.weights or params.backbone_weights:
            options["trainable_backbone_layers"] = params.trainable_backbone_layers
        # torchvision's builders default to ImageNet backbone weights: say None, or they would download them.
        options["weights_backbone"] = (
            torchvision_weights(params.backbone_weights, "backbone_weights") if params.backbone_weights else None
        )
        build = BACKBONES[params.backbone]
        if is_named(params.weights):
            # torchvision's own fine-tuning recipe: its detector as published (frozen BatchNorm, its
            # classes), then a new class head for ours. torchvision reads the file from the cache.
            model = _checked(build, weights=torchvision_weights(params.weights, "weights"), **options)
            features = model.roi_heads.box_predictor.cls_score.in_features
            model.roi_heads.box_predictor = FastRCNNPredictor(features, len(classes) + 1)
            return model
        # torchvision reserves label 0 for background
        model = _checked(build, weights=None, num_classes=len(classes) + 1, **options)
        if params.weights:
            load_into(model, params.weights)
        return model


def _checked(build, **options) -> nn.Module:
    """torchvision's builder; weights for another architecture are the user's to fix (one line, exit 2)."""
    try:
        return build(**options)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{build.__name__}: {exc}") from None


TRAINER = DetectorTrainer()

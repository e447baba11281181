"""torchvision's COCO detectors as trainkit builds and fine-tunes them: one table, one builder.

Each architecture is a torchvision builder with its COCO weights and its reference recipe's learning
rate (torchvision's references/detection README: Faster R-CNN 0.02 and RetinaNet / FCOS 0.01 for 16
images a step, SSDlite 0.15 for 192). Fine-tuning follows torchvision's way: the detector as
published (frozen BatchNorm where torchvision freezes it, its normalisation, its anchors), then only
the layer that maps features to classes replaced for the dataset's classes. The table imports no
torch, so `trainkit weights list` and `submit` can name what an architecture needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class DetectionArch:
    """One torchvision detector: its builder's name, COCO weights and how its options are spelt."""

    name: str
    coco: str  # torchvision's named weights, Enum.MEMBER
    recipe_lr: float  # torchvision's reference learning rate ...
    recipe_batch: int  # ... for this many images a step (all GPUs together)
    score_option: str = "score_thresh"
    detections_option: str = "detections_per_img"
    # Softmax detectors (Faster R-CNN, SSD) score a background class, label 0; sigmoid ones (RetinaNet,
    # FCOS) score each class alone, so a column for label 0 would be a class no target ever has.
    background: bool = True

    def labels_for(self, classes: int) -> int:
        """The `num_classes` torchvision's builder takes for `classes` dataset classes."""
        return classes + 1 if self.background else classes

    @property
    def coco_weights(self) -> str:
        """The `weights` hyperparameter's value for the COCO weights."""
        return f"torchvision:{self.coco}"

    def lr_for(self, batch_size: int) -> float:
        """The recipe's learning rate scaled linearly to `batch_size` images a step."""
        return self.recipe_lr * batch_size / self.recipe_batch


_RCNN = {"score_option": "box_score_thresh", "detections_option": "box_detections_per_img"}
ARCHS: dict[str, DetectionArch] = {
    a.name: a
    for a in (
        DetectionArch("fasterrcnn_mobilenet_v3_large_fpn", "FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1",
                      0.02, 16, **_RCNN),
        DetectionArch("fasterrcnn_resnet50_fpn_v2", "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1", 0.02, 16, **_RCNN),
        DetectionArch("retinanet_resnet50_fpn_v2", "RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1", 0.01, 16,
                      background=False),
        DetectionArch("fcos_resnet50_fpn", "FCOS_ResNet50_FPN_Weights.COCO_V1", 0.01, 16, background=False),
        DetectionArch("ssdlite320_mobilenet_v3_large", "SSDLite320_MobileNet_V3_Large_Weights.COCO_V1", 0.15, 192),
    )
}  # fmt: skip
DEFAULT_ARCH = "fasterrcnn_mobilenet_v3_large_fpn"


def coco_weights_users() -> dict[str, str]:
    """Named weights -> the architecture whose COCO default they are (for `trainkit weights list`)."""
    return {arch.coco: arch.name for arch in ARCHS.values()}


def label_offset(model: nn.Module) -> int:
    """What a torchvision detector's labels add to class ids: 1 where label 0 is its background."""
    from torchvision.models.detection import FCOS, RetinaNet

    return 0 if isinstance(getattr(model, "module", model), RetinaNet | FCOS) else 1  # (unwrapped from DDP)


def build_detector(
    arch: DetectionArch,
    num_classes: int,
    image_size: int,
    score_threshold: float,
    detections_per_image: int,
    weights: object | None = None,
    weights_backbone: object | None = None,
    trainable_backbone_layers: int | None = None,
    roi_sampling: dict[str, float | None] | None = None,
) -> nn.Module:
    """The torchvision detector `arch` for `num_classes` labels (`arch.labels_for` counts them), taking square
    `image_size` inputs as the loader gives them (no second resize). With `weights` (a torchvision
    weights enum member) it starts as published and its class layer is then replaced. `roi_sampling`:
    Faster R-CNN's box_batch_size_per_image / box_positive_fraction where not None (else the recipe's)."""
    import torchvision.models.detection as detection

    build = getattr(detection, arch.name)
    options: dict[str, object] = {
        arch.score_option: score_threshold,
        arch.detections_option: detections_per_image,
        "weights_backbone": weights_backbone,
    }
    if weights is not None or weights_backbone is not None:
        options["trainable_backbone_layers"] = trainable_backbone_layers
    if not arch.name.startswith("ssdlite"):
        options.update(min_size=image_size, max_size=image_size)
    options.update({key: value for key, value in (roi_sampling or {}).items() if value is not None})
    try:
        model = build(weights=weights, num_classes=None if weights is not None else num_classes, **options)
    except (TypeError, ValueError) as exc:  # weights for another architecture, a bad layer count
        from trainkit.errors import UserError

        raise UserError(f"{arch.name}: {exc}") from None
    if arch.name.startswith("ssdlite"):
        # SSDlite is built for 320 px; its anchors are relative, so it takes the loader's size as is.
        model.transform.min_size, model.transform.max_size = (image_size,), image_size
        model.transform.fixed_size = (image_size, image_size)
    if weights is not None:
        replace_class_layer(model, num_classes)
        if not arch.name.startswith("ssdlite"):
            # The v2 builders leave the ResNet's BatchNorm trainable (torchvision trains them on 16 images a
            # step); fine-tuned on a few images a step, its statistics would drift, frozen stages' too.
            freeze_batch_norm(model.backbone.body)
    return model


def freeze_batch_norm(module: nn.Module) -> None:
    """Replace every BatchNorm2d under `module` by a FrozenBatchNorm2d holding its affine values and statistics."""
    from torch import nn
    from torchvision.ops.misc import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            freeze_batch_norm(child)


def replace_class_layer(model: nn.Module, num_classes: int) -> None:
    """Give a published detector a fresh class layer for `num_classes` labels (`DetectionArch.labels_for`),
    initialised as torchvision initialises it; every other layer keeps what it learned."""
    from torch import nn
    from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.ssd import SSD

    if isinstance(model, FasterRCNN):
        # Its box regression is per class too: the whole predictor goes.
        features = model.roi_heads.box_predictor.cls_score.in_features
        model.roi_heads.box_predictor = FastRCNNPredictor(features, num_classes)
    elif isinstance(model, RetinaNet | FCOS):
        head = model.head.classification_head
        old = head.cls_logits
        head.cls_logits = nn.Conv2d(old.in_channels, head.num_anchors * num_classes, 3, padding=1)
        nn.init.normal_(head.cls_logits.weight, std=0.01)
        nn.init.constant_(head.cls_logits.bias, -math.log((1 - 0.01) / 0.01))  # focal loss's prior of 1%
        head.num_classes = num_classes
    elif isinstance(model, SSD):
        head = model.head.classification_head
        for block in head.module_list:
            old = block[-1]
            anchors = old.out_channels // head.num_columns
            block[-1] = nn.Conv2d(old.in_channels, anchors * num_classes, 1)
            nn.init.normal_(block[-1].weight, std=0.03)
            nn.init.constant_(block[-1].bias, 0.0)
        head.num_columns = num_classes
    else:
        raise TypeError(f"no class layer known for {type(model).__name__}")

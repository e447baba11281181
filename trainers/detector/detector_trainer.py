"""trainkit trainer: a torchvision Faster R-CNN detector (MobileNetV3-Large FPN or ResNet-50 FPN v2).

Weights are never downloaded at run time: train from scratch, or point `weights` at a state-dict
file baked into the image at build time (e.g. torchvision's COCO weights; the class head is
re-initialised for the dataset's classes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn, fasterrcnn_resnet50_fpn_v2

from trainkit.classmap import ClassMap
from trainkit.params import CommonParams, require_choice, require_local_file
from trainkit.trainer import TorchvisionDetectionTrainer

BACKBONES = {"mobilenet_v3_large": fasterrcnn_mobilenet_v3_large_fpn, "resnet50": fasterrcnn_resnet50_fpn_v2}


@dataclass(frozen=True)
class DetectorParams(CommonParams):
    """Faster R-CNN options on top of the common hyperparameters."""

    backbone: str = "mobilenet_v3_large"
    weights: str = ""  # a local state-dict file; never fetched
    trainable_backbone_layers: int = 3  # used with `weights`; from scratch every layer trains
    score_threshold: float = 0.05
    detections_per_image: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        require_choice(self, "backbone", BACKBONES)
        require_local_file(self, "weights")


class DetectorTrainer(TorchvisionDetectionTrainer):
    name = "detector"
    Params = DetectorParams

    def build_model(self, params: DetectorParams, classes: ClassMap) -> nn.Module:
        options = {
            "weights": None,
            "weights_backbone": None,
            "num_classes": len(classes) + 1,  # torchvision reserves label 0 for background
            "min_size": params.image_size,  # the loader already resized: no second resize
            "max_size": params.image_size,
            "box_score_thresh": params.score_threshold,
            "box_detections_per_img": params.detections_per_image,
        }
        if params.weights:
            options["trainable_backbone_layers"] = params.trainable_backbone_layers
        model = BACKBONES[params.backbone](**options)
        if params.weights:
            state = torch.load(params.weights, map_location="cpu", weights_only=True)
            head = "roi_heads.box_predictor."
            own = model.state_dict()
            usable = {k: v for k, v in state.items() if not k.startswith(head) and k in own and own[k].shape == v.shape}
            model.load_state_dict(usable, strict=False)
        return model


TRAINER = DetectorTrainer()

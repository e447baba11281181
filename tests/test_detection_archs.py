"""The detector's architectures: each fine-tunes its COCO weights the torchvision way, trains and predicts.

torchvision's COCO files cannot be downloaded here: each test puts a stand-in (the arch with
random weights for COCO's 91 labels) under the real file name in a private cache, which is what
`trainkit weights download` leaves there.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from trainkit.batch import DetectionBatch
from trainkit.classmap import ClassMap
from trainkit.detection_archs import ARCHS, build_detector
from trainkit.params import parse_params
from trainkit.training.discovery import load_trainer
from trainkit.weights import named_weights

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ClassMap(("circle", "square", "triangle"))
SIZE = 64
# The layers that map features to classes: replaced for the dataset, so not the file's.
CLASS_LAYERS = {
    "fasterrcnn_mobilenet_v3_large_fpn": ("roi_heads.box_predictor.",),
    "fasterrcnn_resnet50_fpn_v2": ("roi_heads.box_predictor.",),
    "retinanet_resnet50_fpn_v2": ("head.classification_head.cls_logits.",),
    "fcos_resnet50_fpn": ("head.classification_head.cls_logits.",),
    "ssdlite320_mobilenet_v3_large": tuple(f"head.classification_head.module_list.{i}.1." for i in range(6)),
}


@pytest.fixture(scope="module")
def detector():
    return load_trainer(str(ROOT / "trainers" / "detector")).trainer


def fake_coco(arch: str, home: Path) -> dict[str, torch.Tensor]:
    """A stand-in for torchvision's COCO file of `arch` in the cache under `home`; its state dict."""
    torch.manual_seed(1)
    model = build_detector(ARCHS[arch], 91, 320, 0.05, 100)
    path = home / "hub" / "checkpoints" / named_weights(ARCHS[arch].coco).file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.state_dict()


def batch() -> tuple[torch.Tensor, DetectionBatch]:
    """Two images: one with two objects, one with none."""
    images = torch.rand(2, 3, SIZE, SIZE)
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [34.0, 20.0, 60.0, 58.0]]), "labels": torch.tensor([0, 2])},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    return images, DetectionBatch(images, targets, torch.arange(2), torch.ones(2, 2))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_each_arch_fine_tunes_its_coco_weights(arch: str, detector, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    coco = fake_coco(arch, tmp_path / "torch")
    params = parse_params(detector.Params, {"arch": arch, "image_size": SIZE, "batch_size": 2})
    assert params.weights == ARCHS[arch].coco_weights
    model = detector.build_model(params, CLASSES)
    own = model.state_dict()
    replaced = [k for k in own if k.startswith(CLASS_LAYERS[arch])]
    assert replaced, sorted(own)[-10:]
    # Every other tensor is the file's; the class layer is new and sized for the 3 classes (and a background).
    for key, value in own.items():
        if key not in replaced:  # (a frozen BatchNorm has no batch count)
            assert torch.equal(value, coco[key]), key
    assert all(own[k].shape != coco[k].shape for k in replaced if k.endswith("weight"))
    logits = own[next(k for k in replaced if k.endswith("weight"))].shape[0]
    assert logits % ARCHS[arch].labels_for(len(CLASSES)) == 0
    # torchvision's way: the backbone's first stages frozen; BatchNorm frozen except in SSDlite's recipe.
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert all(name.startswith("backbone.") for name in frozen)
    assert bool(frozen) == (arch != "ssdlite320_mobilenet_v3_large")  # SSDlite trains its 6 stages by default
    has_frozen_norm = any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert has_frozen_norm == (arch != "ssdlite320_mobilenet_v3_large")

    images, data = batch()
    losses = detector.loss(model.train(), images, data)
    assert math.isfinite(losses["loss"].item()) and len(losses) >= 3  # every arch's own loss terms, logged
    losses["loss"].backward()
    head = dict(model.named_parameters())[next(k for k in replaced if k.endswith("weight"))]
    assert head.grad is not None and head.grad.abs().sum() > 0
    with torch.no_grad():
        answers = detector.predict(model.eval(), images, data)
    assert len(answers) == 2
    for answer in answers:
        assert answer["boxes"].shape[1:] == (4,) and len(answer["labels"]) == len(answer["scores"])
        assert ((answer["labels"] >= 0) & (answer["labels"] < len(CLASSES))).all()
        assert (answer["boxes"] >= 0).all() and (answer["boxes"] <= SIZE).all()


def test_another_archs_weights_file_is_one_line(detector, tmp_path: Path) -> None:
    """A state-dict file of another arch loads nothing: the user is told, rather than training from noise."""
    from trainkit.errors import UserError

    path = tmp_path / "ssd.pth"
    torch.save(build_detector(ARCHS["ssdlite320_mobilenet_v3_large"], 4, SIZE, 0.05, 100).state_dict(), path)
    params = parse_params(detector.Params, {"arch": "fcos_resnet50_fpn", "weights": str(path), "image_size": SIZE})
    with pytest.raises(UserError, match=r"none of its \d+ tensors fits this model; is it for another one\?"):
        detector.build_model(params, CLASSES)


def test_faster_rcnn_samples_the_rois_it_is_told_and_the_recipe_by_default() -> None:
    """rois_per_image / positive_fraction reach torchvision's sampler; 0 leaves its recipe (512 at 25%)."""
    trainer = load_trainer(str(ROOT / "trainers" / "detector")).trainer
    for raw, expected in (({"rois_per_image": 64, "positive_fraction": 0.5}, (64, 0.5)), ({}, (512, 0.25))):
        model = trainer.build_model(parse_params(trainer.Params, {**raw, "weights": "", "image_size": SIZE}), CLASSES)
        sampler = model.roi_heads.fg_bg_sampler
        assert (sampler.batch_size_per_image, sampler.positive_fraction) == expected

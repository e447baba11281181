import re
from dataclasses import dataclass

import pytest

from trainkit.errors import UserError
from trainkit.params import CommonParams, parse_params
from trainkit.training.discovery import load_trainer


@dataclass(frozen=True)
class ModelParams(CommonParams):
    depth: int = 3
    name: str = "x"
    scales: tuple[float, ...] = (1.0,)
    dropout: float | None = None


def test_defaults_and_coercion() -> None:
    params = parse_params(ModelParams, {"epochs": "2", "lr": 1, "amp": "false", "depth": 4.0, "scales": [1, 2]})
    assert (params.epochs, params.lr, params.amp, params.depth, params.scales) == (2, 1.0, False, 4, (1.0, 2.0))
    assert params.batch_size == 8 and params.image_size == 512 and params.seed == 0
    assert parse_params(ModelParams, {"dropout": "None"}).dropout is None
    assert parse_params(ModelParams, {"dropout": 0.5}).dropout == 0.5


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"epoch": 1}, "unknown hyperparameter 'epoch' for this trainer; it accepts: amp, batch_size, depth"),
        ({"epochs": 1.5}, "hyperparameter 'epochs' must be int, got 1.5"),
        ({"epochs": True}, "hyperparameter 'epochs' must be int, got True"),
        ({"epochs": "3.5"}, "hyperparameter 'epochs' must be int, got '3.5'"),
        ({"depth": float("inf")}, "hyperparameter 'depth' must be int, got inf"),
        ({"lr": True}, "hyperparameter 'lr' must be float, got True"),
        ({"lr": "fast"}, "hyperparameter 'lr' must be float, got 'fast'"),
        ({"amp": 2}, "hyperparameter 'amp' must be bool, got 2"),
        ({"lr": 0}, "hyperparameter 'lr' = 0.0 is out of range"),
        ({"batch_size": 0}, "hyperparameter 'batch_size' = 0 is out of range"),
    ],
)
def test_bad_values_name_the_key(raw: dict, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_params(ModelParams, raw)


def test_trainer_discovery_by_folder_file_and_module(tmp_path, monkeypatch) -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "trainers"
    assert load_trainer(str(root / "skeleton")).trainer.name == "skeleton"
    assert load_trainer(str(root / "detector" / "detector_trainer.py")).trainer.name == "detector"
    (tmp_path / "mine_trainer.py").write_text(
        "from trainkit.trainer import Trainer\nclass Mine(Trainer):\n    name = 'mine'\nTRAINER = Mine()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_trainer("mine_trainer")
    assert loaded.trainer.name == "mine" and loaded.source == (tmp_path / "mine_trainer.py").resolve()
    (tmp_path / "two").mkdir()
    for name in ("a_trainer.py", "b_trainer.py"):
        (tmp_path / "two" / name).write_text("")
    with pytest.raises(UserError, match=r"exactly one \*_trainer\.py"):
        load_trainer(str(tmp_path / "two"))


@pytest.mark.parametrize(
    ("trainer", "raw", "message"),
    [
        (
            "detector",
            {"arch": "yolov5"},
            "hyperparameter 'arch' must be one of fasterrcnn_mobilenet_v3_large_fpn, fasterrcnn_resnet50_fpn_v2, "
            "retinanet_resnet50_fpn_v2, fcos_resnet50_fpn, ssdlite320_mobilenet_v3_large, got 'yolov5'",
        ),
        ("detector", {"trainable_backbone_layers": 7}, "'trainable_backbone_layers' = 7 is out of range: 0 to 6"),
        (
            "detector",
            {"arch": "fcos_resnet50_fpn", "rois_per_image": 64},
            "'rois_per_image' and 'positive_fraction' apply to the Faster R-CNN archs only, not fcos_resnet50_fpn",
        ),
        ("detector", {"positive_fraction": 1.5}, "'rois_per_image' (>= 1, or 0: 512) and 'positive_fraction'"),
        ("classifier", {"arch": "vit"}, "hyperparameter 'arch' must be one of resnet18, mobilenet_v3_small, got 'vit'"),
        ("detector", {"weights": "/no/such.pt"}, "'weights': no file or folder '/no/such.pt' (weights are never"),
        ("detector", {"backbone_weights": "torchvision:X.Y"}, "unknown weights 'X.Y': give torchvision's name"),
        ("detector", {"backbone_weights": "/no/such.pt"}, "'backbone_weights': '/no/such.pt' must be torchvision:NAME"),
        ("classifier", {"weights": "/no/such.pt"}, "hyperparameter 'weights': no file or folder '/no/such.pt'"),
    ],
)
def test_trainer_choices_and_weight_files_are_checked(trainer: str, raw: dict, message: str) -> None:
    from pathlib import Path

    params = load_trainer(str(Path(__file__).resolve().parents[1] / "trainers" / trainer)).trainer.Params
    with pytest.raises(UserError, match=re.escape(message)):
        parse_params(params, raw)


def test_detector_arch_resolves_its_coco_weights_and_recipe_learning_rate() -> None:
    from pathlib import Path

    params = load_trainer(str(Path(__file__).resolve().parents[1] / "trainers" / "detector")).trainer.Params
    default = parse_params(params, {})
    assert default.weights == "torchvision:FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1" and default.lr == 0.01
    retina = parse_params(params, {"arch": "retinanet_resnet50_fpn_v2", "batch_size": 4})
    assert retina.weights == "torchvision:RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1" and retina.lr == 0.0025
    ssd = parse_params(params, {"arch": "ssdlite320_mobilenet_v3_large", "batch_size": 32, "weights": "", "lr": 0.1})
    assert ssd.weights == "" and ssd.lr == 0.1  # what is given is kept


def test_an_int_takes_whole_number_text_as_a_sweep_writes_it() -> None:
    assert parse_params(ModelParams, {"epochs": "3.0", "depth": "2"}).epochs == 3  # AzureML's quniform: 3.0

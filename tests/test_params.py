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
            {"backbone": "vgg"},
            "hyperparameter 'backbone' must be one of mobilenet_v3_large, resnet50, got 'vgg'",
        ),
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


def test_an_int_takes_whole_number_text_as_a_sweep_writes_it() -> None:
    assert parse_params(ModelParams, {"epochs": "3.0", "depth": "2"}).epochs == 3  # AzureML's quniform: 3.0

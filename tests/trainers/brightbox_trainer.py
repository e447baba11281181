"""A test trainer whose model is exact, so that tests can check where predicted boxes land: it
"detects" the bright pixels of each image (class 0, score 0.9) and finds nothing in a dark one."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainkit.batch import Batch
from trainkit.classmap import ClassMap
from trainkit.params import CommonParams
from trainkit.tasks import Detection
from trainkit.trainer import Trainer


@dataclass(frozen=True)
class BrightBoxParams(CommonParams):
    image_size: int = 64


class BrightBox(nn.Module):
    """The box around pixels brighter than `threshold` (mean over channels), per image."""

    def __init__(self) -> None:
        super().__init__()
        self.threshold = nn.Parameter(torch.tensor(0.5))

    def forward(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        out = []
        for image in images:
            ys, xs = torch.nonzero(image.mean(0) > self.threshold, as_tuple=True)
            if len(xs) == 0:
                out.append({"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64),
                            "scores": torch.zeros(0)})  # fmt: skip
                continue
            box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float().unsqueeze(0)
            out.append({"boxes": box, "labels": torch.zeros(1, dtype=torch.int64), "scores": torch.tensor([0.9])})
        return out


class BrightBoxTrainer(Trainer):
    name = "brightbox"
    task = Detection()
    Params = BrightBoxParams

    def build_model(self, params: BrightBoxParams, classes: ClassMap) -> nn.Module:
        return BrightBox()

    def loss(self, model: nn.Module, images: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        return {"loss": (model.threshold - 0.5) ** 2}

    def predict(self, model: nn.Module, images: torch.Tensor, batch: Batch) -> list[dict[str, torch.Tensor]]:
        return model(images)


TRAINER = BrightBoxTrainer()

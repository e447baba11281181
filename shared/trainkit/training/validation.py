"""A validation pass of the model being trained: its task's evaluator, fed exactly as `trainkit evaluate`
feeds it for the saved model (trainkit.inference.evaluate), so that the two report the same metrics."""

from __future__ import annotations

import torch

from trainkit.classmap import ClassMap
from trainkit.inference.evaluate import evaluate_loader
from trainkit.inference.predictor import Predictor
from trainkit.tasks import Evaluator
from trainkit.trainer import Trainer


def validate(trainer: Trainer, model: torch.nn.Module, loader, classes: ClassMap, amp: bool) -> Evaluator:
    """The task's evaluator over `loader` (the model in eval mode): the model's answers in each image's
    own pixels, as the saved model will give them; `amp`: in the trainer's mixed precision, on a GPU."""
    return evaluate_loader(Predictor.in_training(trainer, model, classes, loader, amp), loader)

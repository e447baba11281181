"""The best evaluation so far on the monitored metric, and early stopping when it stops improving.

Every evaluation is offered to `BestModel.update`; the weights of the best one are kept (a CPU
copy), so `train` saves the best model rather than the last. With `patience` > 0 the run stops once
that many evaluations in a row fail to beat the best by more than `min_delta`. Its state is part of
every checkpoint, so a resumed run takes the same decisions as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainkit.errors import UserError

VAL = "val/"


@dataclass
class BestModel:
    """The monitored metric's best value, where it was reached, and the patience count."""

    monitor: str  # as logged, e.g. val/map
    patience: int = 0
    min_delta: float = 0.0
    value: float | None = None
    step: int = -1
    epoch: int = -1
    evaluations_without_gain: int = 0
    stopped_at: int | None = None  # the step at which patience ran out
    last_step: int = -1  # the step of the last evaluation offered
    weights: dict[str, torch.Tensor] | None = None

    @property
    def maximize(self) -> bool:
        """Losses go down; every other metric (mAP, accuracy, F1) goes up."""
        return not self.monitor.rsplit("/", 1)[-1].endswith("loss")

    def update(self, metrics: dict[str, float], step: int, epoch: int, model: nn.Module) -> bool:
        """Offer one evaluation's metrics (names without `val/`); True when patience has run out."""
        key = self.monitor.removeprefix(VAL)
        if key not in metrics:
            known = ", ".join(VAL + name for name in sorted(metrics) if "/" not in name)
            raise UserError(f"hyperparameter 'monitor': {self.monitor} is not a metric this trainer's evaluation "
                            f"logs (it logs {known})")  # fmt: skip
        value, self.last_step = float(metrics[key]), step
        margin = self.min_delta if self.maximize else -self.min_delta
        if self.value is None or (value - margin > self.value if self.maximize else value - margin < self.value):
            self.value, self.step, self.epoch, self.evaluations_without_gain = value, step, epoch, 0
            self.weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            return False
        self.evaluations_without_gain += 1
        if self.patience and self.evaluations_without_gain >= self.patience:
            self.stopped_at = step
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps (the best weights included)."""
        return {key: getattr(self, key) for key in ("value", "step", "epoch", "evaluations_without_gain",
                                                     "stopped_at", "last_step", "weights")}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def summary(self) -> dict[str, Any]:
        """For metrics.json and MLflow: the monitored metric, its best value and where, early stop or not."""
        return {"monitor": self.monitor, "value": self.value, "step": self.step, "epoch": self.epoch,
                "stopped_early": self.stopped_at is not None, "stopped_at_step": self.stopped_at}  # fmt: skip

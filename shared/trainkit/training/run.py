"""One training run's context: what its steps (training.harness) build up, read and hand on."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from trainkit.training.checkpoint import Position
from trainkit.training.tracking import NullTracker

if TYPE_CHECKING:
    from trainkit.config import TrainConfig
    from trainkit.data.dataset import Dataset
    from trainkit.loading.loader import DaliLoader
    from trainkit.params import CommonParams
    from trainkit.tasks import Evaluator
    from trainkit.trainer import Trainer
    from trainkit.training.best import BestModel
    from trainkit.training.ddp import ProcessGroup
    from trainkit.training.discovery import LoadedTrainer
    from trainkit.training.tracking import Tracker


@dataclass
class TrainingState:
    """What a checkpoint holds and restores: the model and what moves it on, and where it stands."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    position: Position
    train_model: torch.nn.Module  # the model wrapped for distributed training, else the model

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Weights, optimiser, schedule and scaler from `checkpoint`, and its position."""
        from trainkit.training.checkpoint import set_rng_state

        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        set_rng_state(checkpoint["rng"])
        self.position = Position(checkpoint["step"], checkpoint["epoch"], checkpoint["batch"])


@dataclass
class Run:
    """A run from its configuration to its outputs. Filled in step by step: the loaders, then the
    state, then tracking; `evaluation` is the saved model's final validation."""

    config: TrainConfig
    dataset: Dataset
    loaded: LoadedTrainer
    group: ProcessGroup
    device: torch.device
    params: CommonParams
    checkpoint_dir: Path
    checkpoint: dict[str, Any] | None  # the checkpoint this run resumes, None for a new run
    amp_dtype: torch.dtype | None  # mixed precision's type (the trainer's), None: off
    train_loader: DaliLoader | None = None
    val_loader: DaliLoader | None = None
    total_steps: int = 0
    state: TrainingState | None = None
    best: BestModel | None = None
    complete: bool = False  # the checkpoint's run had finished: its outputs are written again
    tracker: Tracker | NullTracker = field(default_factory=NullTracker)
    info: dict[str, Any] = field(default_factory=dict)  # run.json
    history: defaultdict[str, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    latest: Evaluator | None = None  # the latest validation in this process
    evaluation: Evaluator | None = None  # the saved model's validation
    seconds: float = 0.0  # training's wall time

    @property
    def trainer(self) -> Trainer:
        return self.loaded.trainer

    @property
    def output_dir(self) -> Path:
        return self.config.output_dir

    @property
    def amp(self) -> bool:
        return self.amp_dtype is not None

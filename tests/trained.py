"""Briefly trained models, for tests that compare two runtimes of one model (torch and ONNX).

An untrained model's answers are noise: its scores are near-equal, so the last bits, which differ
between runtimes and between CPUs' instruction sets, decide which boxes make a cut-off and which one
NMS keeps. A model trained for a few dozen steps on simple synthetic scenes (one colour per class on
a dark background) answers them with scores far apart, and a comparison of what it finds above a
cut-off, with a margin, holds on any CPU. The training goes through the trainer's own `loss` and
optimiser, so any trainer, of any task trainkit has, can be compared this way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainkit.batch import ClassificationBatch, DetectionBatch, to_float
from trainkit.classmap import ClassMap
from trainkit.params import CommonParams
from trainkit.tasks import Detection, ObjectCrops
from trainkit.trainer import Trainer

COLOURS = ((230, 60, 60), (60, 220, 80), (70, 90, 240))  # class id -> colour
BACKGROUND = 25


def scene(seed: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A size x size RGB uint8 image (HWC) with two coloured rectangles, one per side; their xyxy
    boxes and class ids."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), BACKGROUND, np.uint8)
    boxes, labels = [], []
    for side in range(2):
        label = (seed + side) % len(COLOURS)
        w, h = (int(size * rng.uniform(0.25, 0.4)) for _ in range(2))
        x0 = 0 if side == 0 else size - w - 2
        y0 = int((size - h) * rng.uniform())
        image[y0 : y0 + h, x0 : x0 + w] = COLOURS[label]
        boxes.append((x0, y0, x0 + w, y0 + h))
        labels.append(label)
    return image, np.array(boxes, np.float32), np.array(labels, np.int64)


def crop(seed: int, size: int) -> tuple[np.ndarray, int]:
    """An object crop: its class's colour filling most of a size x size image."""
    rng = np.random.default_rng(seed)
    label = seed % len(COLOURS)
    image = np.full((size, size, 3), BACKGROUND, np.uint8)
    border = int(size * rng.uniform(0.05, 0.2))
    image[border : size - border, border : size - border] = COLOURS[label]
    return image, label


def _batch(trainer: Trainer, seeds: list[int], size: int) -> tuple[torch.Tensor, DetectionBatch | ClassificationBatch]:
    indices = torch.tensor(seeds)
    if isinstance(trainer.task, Detection):
        scenes = [scene(s, size) for s in seeds]
        images = torch.from_numpy(np.stack([s[0] for s in scenes])).permute(0, 3, 1, 2).contiguous()
        targets = [{"boxes": torch.from_numpy(b), "labels": torch.from_numpy(c)} for _, b, c in scenes]
        return images, DetectionBatch(images, targets, indices, torch.ones(len(seeds), 2))
    if isinstance(trainer.task, ObjectCrops):
        crops = [crop(s, size) for s in seeds]
        images = torch.from_numpy(np.stack([c[0] for c in crops])).permute(0, 3, 1, 2).contiguous()
        return images, ClassificationBatch(images, torch.tensor([c[1] for c in crops]), indices)
    raise NotImplementedError(f"task {trainer.task.name}: give tests/trained.py its synthetic data")


def built_model_dir(
    trainer_folder: Path,
    folder: Path,
    overrides: dict,
    classes: ClassMap,
    steps: int = 0,
    adjust: Callable[[nn.Module], None] | None = None,
) -> Path:
    """A trainer's model (seeded; trained for `steps` steps on synthetic scenes) saved as a trainkit
    model folder. `adjust` changes the built model before training (e.g. fewer sampled RoIs, to train faster)."""
    from trainkit.inference.package import build_model_dir
    from trainkit.inference.settings import ModelSettings
    from trainkit.params import parse_params
    from trainkit.training.discovery import load_trainer

    torch.manual_seed(0)
    loaded = load_trainer(str(trainer_folder))
    params = parse_params(loaded.trainer.Params, overrides)
    if steps:
        model = briefly_trained(loaded.trainer, params, classes, steps, adjust=adjust)
    else:
        model = loaded.trainer.build_model(params, classes).eval()
    settings = ModelSettings.of(loaded.trainer, loaded.module.__name__, params)
    return build_model_dir(folder, model, settings, classes, loaded.source)


def briefly_trained(
    trainer: Trainer,
    params: CommonParams,
    classes: ClassMap,
    steps: int,
    scenes: int = 8,
    batch_size: int = 4,
    adjust: Callable[[nn.Module], None] | None = None,
) -> nn.Module:
    """The trainer's model for `classes`, trained for `steps` steps on `scenes` synthetic images
    (seeded: the same model on this machine every time), in eval mode."""
    assert len(classes) == len(COLOURS)
    torch.manual_seed(0)
    model = trainer.build_model(params, classes).train()
    if adjust is not None:
        adjust(model)
    optimizer = trainer.configure_optimizer(model, params)
    for step in range(steps):
        seeds = [(step * batch_size + i) % scenes for i in range(batch_size)]
        images, batch = _batch(trainer, seeds, params.image_size)
        loss = trainer.loss(model, to_float(images, trainer.mean, trainer.std), batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    _recalibrate_batch_norm(trainer, model, scenes, params.image_size)
    return model.eval()


def _recalibrate_batch_norm(trainer: Trainer, model: nn.Module, scenes: int, size: int) -> None:
    """BatchNorm's running statistics, averaged afresh over the training scenes with the final weights:
    torchvision's MobileNets move them by 1% a step, so after a few dozen steps they still describe
    the initial weights and the model in eval mode answers every image alike."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches below
    with torch.no_grad():
        for seed in range(0, scenes, 2):
            images, batch = _batch(trainer, [seed, seed + 1], size)
            trainer.loss(model, to_float(images, trainer.mean, trainer.std), batch)


def sample_images(trainer: Trainer, size: int, count: int = 4) -> list[np.ndarray]:
    """Images of the kind the model was trained on, at twice its input size (so they are resized)."""
    if isinstance(trainer.task, ObjectCrops):
        return [crop(seed, 2 * size)[0] for seed in range(count)]
    return [scene(seed, 2 * size)[0] for seed in range(count)]


def assert_same_answer(expected, got, cut: float, margin: float = 0.05, score_tol: float = 1e-3) -> int:
    """Two runtimes' answers for one image agree where the model is sure; returns how many answers
    were compared.

    Detection: each detection scoring at least `cut + margin` on either side has one on the other with
    the same class, its score within `score_tol` and its box within 1 px; detections within `margin`
    of the cut may fall on either side of it and are not compared (both answers must have been asked
    for with `min_score = cut - margin`). Classification: every class's probability within `score_tol`,
    and the same class wherever the best leads the second by more than `margin`.
    """
    if expected.probabilities is not None:
        assert np.allclose(expected.probabilities, got.probabilities, atol=score_tol)
        second, best = np.sort(expected.probabilities)[-2:]
        if best - second <= margin:
            return 0
        assert expected.labels == got.labels
        return 1
    compared = 0
    for one, other in ((expected, got), (got, expected)):
        for box, label, score in zip(one.boxes, one.labels, one.scores, strict=True):
            if score < cut + margin:
                continue
            near = [
                j
                for j in range(len(other.labels))
                if other.labels[j] == label
                and abs(other.scores[j] - score) <= score_tol
                and np.abs(other.boxes[j] - box).max() <= 1.0
            ]
            assert near, f"no match for {box.round(2).tolist()} class {label} score {score:.4f} among {other}"
            compared += 1
    return compared

"""`trainkit train --folds K`: a label review of every image, each scored by a model that never learned it.

A model agrees with the labels it was trained on, so `--label-issues` at the end of training reviews
only the validation images. Here the training and validation images are pooled and split into K
folds by a seeded shuffle; K models train one after another (OUTPUT_DIR/folds/foldN, each an
ordinary run with its own checkpoints, MLflow run and model), each validating on, and so reviewing,
the fold it left out. Their label_issues.csv files are merged, worst first, into
OUTPUT_DIR/label_issues.csv with the fold that scored each image.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from trainkit.atomic import write_bytes_atomic
from trainkit.config import TrainConfig
from trainkit.contract import ExitCode
from trainkit.data.dataset import Dataset
from trainkit.data.records import Records
from trainkit.errors import UserError
from trainkit.training.ddp import ProcessGroup
from trainkit.training.discovery import LoadedTrainer

log = logging.getLogger(__name__)


def fold_datasets(dataset: Dataset, k: int, seed: int) -> list[Dataset]:
    """K datasets over every image of `dataset` (training and validation): the i-th validates on fold
    i and trains on the others. The same images and seed always give the same folds."""
    parts = [dataset.train] + ([dataset.val] if dataset.val is not None and len(dataset.val) else [])
    every = Records.concat(parts).with_classes(dataset.class_map.names)  # concat sorts the classes: back in order
    n = len(every)
    if not 2 <= k <= n:
        raise UserError(f"--folds {k}: needs 2 to {n} folds for {n} images (each fold trains on the others)")
    order = np.argsort(every.image_urls.astype(str), kind="stable")
    fold_of = np.empty(n, np.int64)
    fold_of[order[np.random.default_rng(seed).permutation(n)]] = np.arange(n) % k
    out = []
    for i in range(k):
        held = fold_of == i
        split = f"fold {i + 1} of {k}: {int(held.sum())} of {n} images held out for review (seed {seed})"
        out.append(replace(dataset, train=every.subset(np.where(~held)[0]), val=every.subset(np.where(held)[0]),
                           split=split))  # fmt: skip
    return out


def fold_config(config: TrainConfig, i: int) -> TrainConfig:
    """The i-th fold's run (1-based): its own output and checkpoint folders, its label review on, not
    registered (no fold model is the product), the data report once (with the first fold)."""
    name = f"fold{i}"
    checkpoints = config.checkpoint_dir / name if config.checkpoint_dir is not None else None
    return replace(config, output_dir=config.output_dir / "folds" / name, checkpoint_dir=checkpoints, folds=0,
                   label_issues=True, register_as="", data_report=config.data_report and i == 1)  # fmt: skip


def run_folds(config: TrainConfig, dataset: Dataset, loaded: LoadedTrainer) -> int:
    """Train the K fold models and merge their reviews; the exit code of the first fold that did not
    finish (3 when stopped: `--resume auto` continues it), else 0."""
    from trainkit.training.harness import run_training

    if ProcessGroup.from_env().distributed:
        raise UserError("--folds trains its models one after another in one process; run it without torchrun "
                        "(one process per node)")  # fmt: skip
    folds = fold_datasets(dataset, config.folds, config.data.seed)
    runs = [fold_config(config, i) for i in range(1, len(folds) + 1)]
    for i, (run, part) in enumerate(zip(runs, folds, strict=True), 1):
        log.info("fold %d of %d: training on %d images, reviewing the other %d", i, len(folds), len(part.train),
                 len(part.val))  # fmt: skip
        code = run_training(run, part, loaded)
        if code != ExitCode.OK:
            return code
    merged = merge_reviews([run.output_dir for run in runs], config.output_dir / "label_issues.csv")
    unreviewed = [str(i) for i, run in enumerate(runs, 1) if not (run.output_dir / "label_issues.csv").is_file()]
    if merged is not None and unreviewed:
        log.warning("label review of folds %s only: the models of folds %s were too weak to judge their labels "
                    "(their warnings say so); train them further for a review of every image",
                    ", ".join(str(i) for i in range(1, len(runs) + 1) if str(i) not in unreviewed),
                    ", ".join(unreviewed))  # fmt: skip
    elif merged is not None:
        log.info("label review of every image (%d folds): %s", len(folds), merged)
    return ExitCode.OK


def merge_reviews(folders: list[Path], path: Path) -> Path | None:
    """The folders' label_issues.csv as one table, worst first, with a `fold` column (1-based); None
    (and an earlier run's table removed) when none wrote one (a classifier; models too weak to judge)."""
    import pandas as pd

    tables = []
    for i, folder in enumerate(folders, 1):
        if (folder / "label_issues.csv").is_file():
            tables.append(pd.read_csv(folder / "label_issues.csv", dtype=str, keep_default_na=False).assign(fold=i))
    if not tables:
        path.unlink(missing_ok=True)
        return None
    table = pd.concat(tables, ignore_index=True)
    table = table.iloc[np.argsort(-table.issue_score.astype(float).to_numpy(), kind="stable")]
    return write_bytes_atomic(path, table.to_csv(index=False).encode("utf-8"))

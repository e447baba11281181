"""The one typed configuration of a run, built once from the command line and environment."""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import MappingProxyType

from trainkit.atomic import read_json
from trainkit.classmap import ClassMap
from trainkit.contract import ENV_DATA_REPORT, ENV_LABEL_ISSUES, EnvVar
from trainkit.data.dataset import DataConfig, DatasetOptions, DatasetPair
from trainkit.errors import UserError

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


@dataclass(frozen=True)
class TrainConfig:
    """Everything `trainkit train` runs with. Hyperparameters stay raw here; the trainer types them."""

    data: DataConfig
    output_dir: Path
    trainer: str
    hyperparameters: Mapping[str, object]
    device: str = "auto"
    resume: str = "never"  # never | auto
    checkpoint_dir: Path | None = None  # default: <output_dir>/checkpoints
    checkpoint_every: int = 100  # optimiser steps; 0: only at epoch ends
    log_every: int = 10
    eval_every: int = 1  # epochs
    experiment: str = "trainkit"
    register_as: str = ""
    data_report: bool = True  # the dataset report (trainkit.data.visual_report) in data_report/ and MLflow
    label_issues: bool = True  # the validation labels the model disagrees with, in label_issues.csv, at the end
    folds: int = 0  # K > 1: a label review: K models, each scoring the fold it did not learn (training.folds)

    def to_json(self) -> dict:
        """The resolved configuration, as written next to the outputs."""
        out = asdict(self.data)
        run = {k: getattr(self, k) for k in ("device", "resume", "checkpoint_every", "log_every", "eval_every",
                                             "data_report", "label_issues", "folds")}  # fmt: skip
        return {
            "data": json.loads(json.dumps(out, default=str)),
            "output_dir": str(self.output_dir),
            "checkpoint_dir": str(self.checkpoint_dir or self.output_dir / "checkpoints"),
            "trainer": self.trainer,
            "hyperparameters": dict(self.hyperparameters),
            **run,
            "experiment": self.experiment,
            "register_as": self.register_as,
        }


def data_config_from_args(args: argparse.Namespace) -> DataConfig:
    """The dataset part of the configuration, shared by `validate` and `train`."""
    if args.val_labelset is None and args.val_imageset is not None:
        raise UserError("--val-imageset needs --val-labelset")
    if not 0 <= args.val_fraction < 1:
        raise UserError(f"--val-fraction must be at least 0 and below 1, got {args.val_fraction:g}")
    if not 0 <= args.min_confidence <= 1:
        raise UserError(f"--min-confidence must be between 0 and 1, got {args.min_confidence:g}")
    if args.max_cell_chars < 1:
        raise UserError(f"--max-cell-chars must be positive, got {args.max_cell_chars}")
    options = DatasetOptions(
        datastore_name=_datastore(args.datastore_name),
        box_units=args.box_units,
        min_confidence=args.min_confidence,
        on_bad_row=args.on_bad_row,
        decode_check=args.decode_check,
        max_cell_chars=args.max_cell_chars,
        class_names=args.class_names,
        class_map=ClassMap.read_fixed(args.class_map).names if args.class_map else None,
        image_url_prefix=args.image_url_prefix.strip().strip("/"),
    )
    train = [parse_pair(text, "--train-set") for text in [*args.train_set, *args.train_sets]]
    if args.imageset is not None or args.labelset is not None:
        if args.imageset is None or args.labelset is None:
            raise UserError("give both --imageset and --labelset (or pairs with --train-set LABELSET:IMAGESET)")
        train.insert(0, DatasetPair(args.imageset, args.labelset))
    val = [parse_pair(text, "--test-set") for text in [*args.test_set, *args.test_sets]]
    if args.val_labelset is not None:
        if args.val_imageset is None and args.imageset is None:
            raise UserError("--val-labelset needs --val-imageset (or --imageset)")
        val.insert(0, DatasetPair(args.val_imageset or args.imageset, args.val_labelset))
    return DataConfig(
        train=_named(train, "train"),
        val=_named(val, "validation"),
        val_fraction=0.0 if val else args.val_fraction,
        seed=args.split_seed,
        options=options,
    )


def parse_pair(text: str, flag: str) -> DatasetPair:
    """`LABELSET:IMAGESET` or `LABELSET:IMAGESET:DATASTORE` (an empty DATASTORE: the ML-studio layout)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise UserError(
            f"{flag} {text!r}: expected LABELSET:IMAGESET or LABELSET:IMAGESET:DATASTORE (paths without ':')"
        )
    return DatasetPair(Path(parts[1]), Path(parts[0]), datastore_name=_datastore(parts[2] if len(parts) == 3 else None))


def _datastore(name: str | None) -> str | None:
    """A datastore folder name as given (None: not given, detect it), without surrounding blanks or slashes."""
    return None if name is None else name.strip().strip("/")


def _named(pairs: list[DatasetPair], kind: str) -> tuple[DatasetPair, ...]:
    if len(pairs) == 1:
        return (replace(pairs[0], name=kind),)
    return tuple(replace(pair, name=f"{kind} {i}") for i, pair in enumerate(pairs, 1))


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The whole `train` configuration: data, outputs, trainer and hyperparameters."""
    params = load_params_file(args.params) if args.params else {}
    params.update(parse_set_options(args.set or []))
    if args.folds == 1 or args.folds < 0:
        raise UserError(f"--folds must be 2 or more (0: no folds), got {args.folds}")
    for name in ("checkpoint_every", "log_every", "eval_every"):
        if getattr(args, name) < (0 if name == "checkpoint_every" else 1):
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    return TrainConfig(
        data=data_config_from_args(args),
        output_dir=args.output_dir,
        trainer=args.trainer or "",
        hyperparameters=MappingProxyType(params),
        device=args.device,
        resume=args.resume,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        eval_every=args.eval_every,
        experiment=args.experiment,
        register_as=args.register_as or "",
        data_report=_switch(args.data_report, ENV_DATA_REPORT),
        label_issues=_switch(args.label_issues, ENV_LABEL_ISSUES),
        folds=args.folds,
    )


def _switch(option: str | None, env: EnvVar) -> bool:
    """An on/off option: the flag, else its environment variable, else on."""
    value = option or os.environ.get(env.name, "").strip() or "on"
    if value not in ("on", "off"):
        raise UserError(f"{env.name}={value!r}: expected on or off")
    return value == "on"


def load_params_file(path: Path) -> dict[str, object]:
    """Hyperparameters from a JSON object file (as SageMaker's hyperparameters.json)."""
    value = read_json(path, f"--params {path}")
    if not isinstance(value, dict):
        raise UserError(f"--params {path}: expected a JSON object of name: value, got {type(value).__name__}")
    for key in value:
        _check_key(key, f"--params {path}")
    return dict(value)


def parse_set_options(items: Sequence[str]) -> dict[str, object]:
    """`key=value` pairs; values are read as JSON when they parse (numbers, booleans, lists), else as text."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise UserError(f"--set {item!r}: expected key=value, e.g. --set epochs=10")
        _check_key(key.strip(), f"--set {item!r}")
        try:
            value: object = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = value
    return out


def _check_key(key: str, where: str) -> None:
    if not _KEY.match(key):
        raise UserError(f"{where}: {key!r} is not a hyperparameter name (letters, digits, _ and .)")

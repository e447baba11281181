"""Typed hyperparameters: every trainer's dataclass extends CommonParams; unknown keys are errors."""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from trainkit.errors import UserError

if TYPE_CHECKING:
    from trainkit.loading.tiles import TileSpec

P = TypeVar("P", bound="CommonParams")


@dataclass(frozen=True)
class CommonParams:
    """Hyperparameters every trainer accepts (`--set key=value` or `--params FILE`)."""

    epochs: int = 10
    batch_size: int = 8
    lr: float = 0.01
    image_size: int = 512
    seed: int = 0
    weight_decay: float = 1e-4
    grad_clip: float = 0.0  # max gradient norm; 0 turns clipping off
    warmup_steps: int = 0  # linear warm-up before the trainer's schedule
    max_steps: int = 0  # stop after this many optimiser steps in all; 0: run every epoch
    amp: bool = True  # mixed precision on a GPU (ignored on the CPU)
    monitor: str = ""  # the validation metric that picks the best model, e.g. val/map (empty: the trainer's)
    patience: int = 0  # stop after this many evaluations without a better `monitor`; 0: never stop early
    min_delta: float = 0.0  # how much better counts as better
    # Detection on tiles (trainkit.loading.tiles): small objects in large images. A grid (COLUMNSxROWS)
    # or a tile side in source pixels turns it on, for training, evaluation and the saved model alike.
    tile_grid: str = ""  # e.g. 3x2; empty: no tiles
    tile_size: int = 0  # square tiles of this many source pixels instead of a grid; 0: none
    tile_overlap: float = 0.25  # neighbouring tiles share at least this share of a tile
    tile_whole: bool = True  # the whole image is a sample (training) and a window (prediction) too
    tile_nms: float = 0.25  # overlap above which boxes from different windows merge
    tile_merge: str = "nms"  # nms (class-wise NMS at IoU tile_nms) or nmm (SAHI's merging, tile_nms of the smaller)
    tile_min_visible: float = 0.6  # training: a cut object keeps its box with this share inside, else is ignored
    tile_train: bool = True  # false: train on whole images, tile only to evaluate and predict

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "image_size": self.image_size >= 32,
            "weight_decay": self.weight_decay >= 0,
            "grad_clip": self.grad_clip >= 0,
            "warmup_steps": self.warmup_steps >= 0,
            "max_steps": self.max_steps >= 0,
            "patience": self.patience >= 0,
            "min_delta": self.min_delta >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"hyperparameter {name!r} = {getattr(self, name)!r} is out of range")
        tile_spec(self)  # a ValueError naming the tile hyperparameter that is wrong


def tile_spec(params: CommonParams) -> TileSpec | None:
    """The tiling the tile_* hyperparameters ask for, or None (no tile_grid, no tile_size)."""
    from trainkit.loading.tiles import TileSpec, parse_grid

    grid = parse_grid(params.tile_grid)
    if grid is None and not params.tile_size:
        return None
    return TileSpec(grid=grid, size=params.tile_size, overlap=params.tile_overlap, nms=params.tile_nms,
                    whole=params.tile_whole, merge=params.tile_merge, min_visible=params.tile_min_visible)  # fmt: skip


def require_choice(params: CommonParams, name: str, choices: Iterable[str]) -> None:
    """For a trainer's __post_init__: hyperparameter `name` must be one of `choices` (ValueError naming them)."""
    value, allowed = getattr(params, name), list(choices)
    if value not in allowed:
        raise ValueError(f"hyperparameter {name!r} must be one of {', '.join(allowed)}, got {value!r}")


def parse_params(cls: type[P], raw: Mapping[str, object]) -> P:
    """Build `cls` from raw values (JSON types or strings), naming any unknown key or bad value."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise UserError(
            f"unknown hyperparameter {unknown[0]!r} for this trainer; it accepts: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(name, value, hints[name]) for name, value in raw.items()}
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise UserError(str(exc)) from None


def params_to_dict(params: CommonParams) -> dict[str, Any]:
    """Plain JSON-able dict of a params object."""
    return dataclasses.asdict(params)


def _coerce(name: str, value: object, hint: Any) -> object:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or value == "None":
            return None
        hint = options[0]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif hint in (int, float):
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return hint(value)
            # "32.0" as well: AzureML's quniform samples are floats, written into the command as text.
            with contextlib.suppress(ValueError):
                number = float(value)
                if hint is int and number.is_integer():
                    return int(number)
        # An int hyperparameter takes a whole float (JSON may write 3 as 3.0), never a fraction.
        elif (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and (hint is float or isinstance(value, int) or value.is_integer())
        ):
            return hint(value)
    elif hint is str:
        return str(value)
    elif typing.get_origin(hint) is tuple:
        if isinstance(value, (list, tuple)):
            inner = typing.get_args(hint)[0]
            return tuple(_coerce(name, v, inner) for v in value)
    else:
        return value
    kind = getattr(hint, "__name__", str(hint))
    raise UserError(f"hyperparameter {name!r} must be {kind}, got {value!r}")

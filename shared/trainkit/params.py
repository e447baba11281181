"""Typed hyperparameters: every trainer's dataclass extends CommonParams; unknown keys are errors."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from trainkit.errors import UserError

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
    # Detection on tiles (trainkit.geometry.tiles): small objects in large images. A grid (COLUMNSxROWS)
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


# Tiles (trainkit.geometry.tiles cuts images with them; trainkit.geometry.tile_merge merges the windows' boxes).
MERGES = ("nms", "nmm")
_GRID = re.compile(r"^\s*(\d+)\s*[xX*]\s*(\d+)\s*$")


@dataclass(frozen=True)
class TileSpec:
    """How images are cut and how the windows' detections are merged.

    `grid` (columns, rows) or `size` (a square side in source pixels; images smaller than it are one
    tile across) says where the cuts are; neighbouring tiles overlap by at least `overlap` of a tile.
    """

    grid: tuple[int, int] | None = None
    size: int = 0
    overlap: float = 0.25  # AutoML's tile_overlap_ratio default
    nms: float = 0.25  # IoU (nms) or intersection over the smaller box (nmm) above which boxes merge
    whole: bool = True  # the whole image is a window too
    merge: str = "nms"  # nms: class-wise NMS; nmm: SAHI's greedy merging of overlapping boxes
    min_visible: float = 0.6  # training: a cut object keeps its box when this share of it is in the window

    def __post_init__(self) -> None:
        checks = {
            "tile_grid": (self.grid is None or (len(self.grid) == 2 and min(self.grid) >= 1), self.grid),
            "tile_size": (self.size >= 8 or self.size == 0, self.size),
            "tile_overlap": (0 <= self.overlap < 1, self.overlap),
            "tile_nms": (0 < self.nms <= 1, self.nms),
            "tile_merge": (self.merge in MERGES, self.merge),
            "tile_min_visible": (0 < self.min_visible <= 1, self.min_visible),
        }
        for name, (ok, value) in checks.items():
            if not ok:
                raise ValueError(f"hyperparameter {name!r} = {value!r} is out of range: {_RULES[name]}")
        if self.grid is not None and self.size:
            raise ValueError("hyperparameters 'tile_grid' and 'tile_size' both set: give one of them")
        if self.grid is None and not self.size:
            raise ValueError("tiling needs 'tile_grid' (e.g. 3x2) or 'tile_size' (pixels)")

    def to_json(self) -> dict:
        """As settings.json `tiling` holds it."""
        return {**asdict(self), "grid": list(self.grid) if self.grid else None}

    @classmethod
    def from_json(cls, document: Mapping) -> TileSpec:
        """From settings.json `tiling`."""
        grid = document.get("grid")
        return cls(**{**document, "grid": tuple(grid) if grid else None})


_RULES = {
    "tile_grid": "COLUMNSxROWS, each at least 1",
    "tile_size": "a side of at least 8 pixels, or 0",
    "tile_overlap": "a share of a tile, 0 or more and below 1",
    "tile_nms": "an overlap above 0 and at most 1",
    "tile_merge": f"one of {', '.join(MERGES)}",
    "tile_min_visible": "a share above 0 and at most 1",
}


def describe(spec: TileSpec) -> str:
    """One line for logs: `grid 3x2, overlap 0.25, + whole image, nms 0.25`."""
    cut = f"grid {spec.grid[0]}x{spec.grid[1]}" if spec.grid else f"{spec.size} px tiles"
    whole = ", + whole image" if spec.whole else ""
    return f"{cut}, overlap {spec.overlap:g}{whole}, {spec.merge} {spec.nms:g}"


def parse_grid(text: str, name: str = "tile_grid") -> tuple[int, int] | None:
    """'3x2' -> (3, 2) (columns, rows); '' or 'none' -> None; else a ValueError naming `name`."""
    if text.strip().lower() in ("", "none", "off"):
        return None
    match = _GRID.match(text)
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise ValueError(f"{name} {text!r}: write COLUMNSxROWS, e.g. 3x2 (or none)")
    return int(match[1]), int(match[2])


def override_tiles(current: TileSpec | None, options: Mapping[str, object]) -> TileSpec | None:
    """The tiling a prediction runs with: the model's own (`current`) with `options` changed, keys as
    the hyperparameters' without `tile_` (grid as text: 'none' turns tiling off). A model trained
    without tiles predicts on them when `options` gives a grid or size. ValueError names what is wrong."""
    options = {key: value for key, value in options.items() if value is not None}
    if not options:
        return current
    known = [f.name for f in dataclasses.fields(TileSpec)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"tile_{unknown[0]} is no tile setting; they are tile_{', tile_'.join(known)}")
    changes = dict(options)
    if "grid" in changes:
        changes["grid"] = parse_grid(str(changes["grid"]))
        if changes["grid"] is None and not changes.get("size"):
            return None
        changes.setdefault("size", 0)
    elif changes.get("size"):
        changes["grid"] = None
    if current is None and changes.get("grid") is None and not changes.get("size"):
        raise ValueError(f"tile_{sorted(options)[0]} given, but the model predicts on whole images: "
                         "give tile_grid (e.g. 3x2) or tile_size too")  # fmt: skip
    base = asdict(current) if current is not None else {}
    return TileSpec(**{**base, **changes})

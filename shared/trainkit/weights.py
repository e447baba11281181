"""Pretrained weights, resolved offline: a local file, an earlier trainkit run, or torchvision's named weights.

A trainer's `weights` hyperparameter takes any of
    /path/to/state_dict.pth                         a state dict (loaded with torch's weights_only)
    /path/to/run/outputs                            a trainkit run's output or checkpoint folder (its latest
                                                    checkpoint: continue from an earlier model)
    /path/to/run/outputs/model                      an MLflow model trainkit saved or registered (on
                                                    AzureML: a registered model mounted as a job input)
    torchvision:FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1   torchvision's named weights
Named weights are read from the torch hub cache (`$TORCH_HOME/hub/checkpoints`, as torchvision keeps
them) and never downloaded at train time: `trainkit weights download NAME` puts them there first
(in a venv, or in an image build), checking torchvision's hash. It also bakes any other file
published the torch.hub way (a URL whose file name ends in -<sha256 prefix>.pth, e.g. a team's own
weights), which a trainer then takes as a local file.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trainkit.errors import UserError

if TYPE_CHECKING:  # torch is imported where a tensor is handled: `submit` and `--help` name weights without it
    import torch
    from torch import nn

log = logging.getLogger(__name__)

TORCHVISION = "torchvision:"
# Where downloads come from instead of torchvision's server (a mirror, or a test's local server).
ENV_WEIGHTS_URL = "TRAINKIT_WEIGHTS_URL"
_HASH_PREFIX = re.compile(r"-([a-f0-9]{6,})\.")  # torchvision's file names end in -<sha256 prefix>.pth


@dataclass(frozen=True)
class NamedWeights:
    """One of torchvision's named weights: `name` as torchvision writes it, and where it is published."""

    name: str
    url: str
    mirrored: bool = True  # torchvision's files may come from $TRAINKIT_WEIGHTS_URL instead

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def hash_prefix(self) -> str | None:
        """The start of the file's sha256, as its name carries it."""
        found = _HASH_PREFIX.search(self.file_name)
        return found.group(1) if found else None

    def path(self, folder: Path | None = None) -> Path:
        """Where the file is (or goes) in `folder`, by default the torch hub cache."""
        return (folder or cache_dir()) / self.file_name

    def source_url(self) -> str:
        """The URL to download from: torchvision's, or the same file under $TRAINKIT_WEIGHTS_URL."""
        base = os.environ.get(ENV_WEIGHTS_URL, "").strip() if self.mirrored else ""
        return f"{base.rstrip('/')}/{self.file_name}" if base else self.url


def cache_dir() -> Path:
    """torchvision's weight cache: $TORCH_HOME/hub/checkpoints (default ~/.cache/torch/hub/checkpoints)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def named_weights(name: str) -> NamedWeights:
    """torchvision's weights called `name` (`Enum.MEMBER`, with or without the `torchvision:` prefix)."""
    from torchvision.models import get_weight

    bare = name.removeprefix(TORCHVISION)
    try:
        weights = get_weight(bare)
    except (ValueError, KeyError, AttributeError, IndexError):
        raise UserError(
            f"unknown weights {bare!r}: give torchvision's name, e.g. "
            "FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1 (`trainkit weights list` shows them all)"
        ) from None
    return NamedWeights(f"{type(weights).__name__}.{weights.name}", weights.url)


def all_named_weights() -> list[NamedWeights]:
    """Every named weights torchvision publishes, by name."""
    from torchvision.models import get_model_weights, list_models

    found = {f"{type(w).__name__}.{w.name}": w.url for model in list_models() for w in get_model_weights(model)}
    return [NamedWeights(name, url) for name, url in sorted(found.items())]


def is_named(spec: str) -> bool:
    """Whether `spec` names torchvision weights rather than a file or folder."""
    return spec.startswith(TORCHVISION)


def check_spec(spec: str, hyperparameter: str = "weights", named_only: bool = False) -> None:
    """For a Params __post_init__: a known torchvision name (its presence is checked where training runs,
    e.g. in the job's image), or, unless `named_only`, an existing file or folder. UserError otherwise."""
    if named_only:
        _require_named(spec, hyperparameter)
    if is_named(spec):
        named_weights(spec)
    else:
        require_present(spec, hyperparameter)


def require_present(spec: str, hyperparameter: str = "weights") -> Path:
    """The local file `spec` stands for; a UserError naming what is missing and how to provide it."""
    if is_named(spec):
        weights = named_weights(spec)
        path = weights.path()
        if not path.is_file():
            raise UserError(
                f"hyperparameter {hyperparameter!r}: {weights.name} is not in the weights cache (no {path}); "
                f"bake it first with `trainkit weights download {weights.name}` (weights are never "
                f"downloaded while training), or --set {hyperparameter}= to start from scratch"
            )
        return path
    path = Path(spec)
    if path.is_dir():
        return path
    if not path.is_file():
        raise UserError(
            f"hyperparameter {hyperparameter!r}: no file or folder {spec!r} (weights are never downloaded; "
            "use torchvision:NAME for weights baked into the cache)"
        )
    return path


def torchvision_weights(spec: str, hyperparameter: str = "weights"):
    """The torchvision weights enum member `spec` (torchvision:NAME) names, once its file is in the cache.

    Pass it to a torchvision model builder: torchvision then reads the cached file (it downloads only
    what is missing, and nothing is, after this check).
    """
    from torchvision.models import get_weight

    _require_named(spec, hyperparameter)
    require_present(spec, hyperparameter)
    return get_weight(spec.removeprefix(TORCHVISION))


def _require_named(spec: str, hyperparameter: str) -> None:
    if not is_named(spec):
        raise UserError(f"hyperparameter {hyperparameter!r}: {spec!r} must be torchvision:NAME, e.g. "
                        "torchvision:MobileNet_V3_Large_Weights.IMAGENET1K_V1")  # fmt: skip


def load_state_dict(spec: str, hyperparameter: str = "weights") -> dict[str, torch.Tensor]:
    """The state dict `spec` stands for (a trainkit run or checkpoint folder gives its latest model's,
    an MLflow model folder its model's)."""
    path = require_present(spec, hyperparameter)
    if (path / "MLmodel").is_file():
        return _mlflow_state_dict(path, hyperparameter)
    if path.is_dir():
        from trainkit.training.checkpoint import load_latest_checkpoint

        checkpoint = load_latest_checkpoint(path / "checkpoints") or load_latest_checkpoint(path)
        if checkpoint is None:
            raise UserError(
                f"hyperparameter {hyperparameter!r}: {spec} holds no readable trainkit checkpoint (looked in "
                f"{path / 'checkpoints'} and {path}); give a run's output or checkpoint folder, or a weights file"
            )
        return checkpoint["model"]
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reason it cannot be read is the user's to fix
        reason = " ".join(str(exc).split())[:160]
        raise UserError(f"hyperparameter {hyperparameter!r}: {path} is not a PyTorch weights file ({reason})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"hyperparameter {hyperparameter!r}: {path} holds no state dict of tensors")
    return state


def load_into(model: nn.Module, spec: str, hyperparameter: str = "weights") -> list[str]:
    """Load the weights `spec` names (any form but torchvision's names, which their builders take)
    into `model`, every tensor whose name and shape match; returns those that kept their initial values."""
    return load_matching(model, load_state_dict(spec, hyperparameter), spec)


def _mlflow_state_dict(path: Path, hyperparameter: str) -> dict[str, torch.Tensor]:
    import mlflow.pytorch

    try:
        model = mlflow.pytorch.load_model(str(path), map_location="cpu")
    except Exception as exc:  # not a PyTorch model, or one whose code is missing: the user's to fix
        reason = " ".join(str(exc).split())[:160]
        message = f"hyperparameter {hyperparameter!r}: {path} is no loadable MLflow PyTorch model ({reason})"
        raise UserError(message) from None
    return model.state_dict()


def load_matching(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> list[str]:
    """Load every tensor of `state` whose name and shape `model` has; log what was and was not loaded.

    Returns the names of the model's tensors that kept their initial values (e.g. a class head
    re-initialised for other classes). Nothing loaded at all is an error: the file is for another model.
    """
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise UserError(f"weights {source}: none of its {len(state)} tensors fits this model; is it for another one?")
    model.load_state_dict(usable, strict=False)
    kept = [k for k in own if k not in usable]
    log.info("weights %s: loaded %d of the model's %d tensors", source, len(usable), len(own))
    if kept:
        heads = sorted({k.rsplit(".", 1)[0] for k in kept})
        log.info("weights %s: initialised afresh (not in the file, or shaped otherwise): %s", source, ", ".join(heads))
    return kept


def downloadable(spec: str) -> NamedWeights:
    """What `trainkit weights download SPEC` fetches: torchvision's weights by name, or a file by URL
    whose name carries the start of its sha256 (`name-<hash>.pth`, torch.hub's convention)."""
    if not spec.startswith(("https://", "http://")):
        return named_weights(spec)
    weights = NamedWeights(spec, spec, mirrored=False)
    if weights.hash_prefix is None:
        raise UserError(
            f"{spec}: the file name must end in -<sha256 prefix>.pth (torch.hub's convention, e.g. "
            "model-1a2b3c4d.pth) so that the download can be checked; rename the published file"
        )
    return weights


def download(spec: str, folder: Path | None = None) -> Path:
    """Fetch the weights `spec` names (see `downloadable`) into `folder` (default the hub cache), checking its hash.

    The file appears complete or not at all: torch.hub writes a temporary file beside it and moves
    it into place once its sha256 starts with the prefix the name carries, so a failed, cut short
    or altered download leaves nothing in the folder.
    """
    import torch

    weights = downloadable(spec)
    target = weights.path(folder)
    if target.is_file():
        return target
    if weights.hash_prefix is None:
        raise UserError(f"{weights.name}: its file name {weights.file_name} carries no hash to check; not downloaded")
    target.parent.mkdir(parents=True, exist_ok=True)
    url = weights.source_url()
    try:
        torch.hub.download_url_to_file(url, str(target), hash_prefix=weights.hash_prefix, progress=False)
    except RuntimeError as exc:  # torch.hub's hash check
        raise UserError(f"{weights.name}: {url} {' '.join(str(exc).split())[:200]}; nothing was kept") from None
    except (OSError, http.client.HTTPException) as exc:  # HTTP errors, refused or cut connections, disk
        raise UserError(f"{weights.name}: cannot download {url} ({exc!r}); nothing was kept") from None
    return target

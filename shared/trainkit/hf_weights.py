"""Hugging Face checkpoints, baked offline: `hf:ORG/NAME@REVISION` names one, the cache holds it.

`trainkit weights download hf:ORG/NAME@REVISION` fetches just the files a detector needs
(config.json, model.safetensors, preprocessor_config.json) with huggingface_hub into its cache
($HF_HOME/hub; the images set HF_HOME=/opt/trainkit/hf), from the Hub or the mirror $HF_ENDPOINT
names, prints the commit and each file's sha256, and records them in $HF_HOME/trainkit-baked.json
(`trainkit weights list --json` reads it back: ci/publish.py copies it into the publish manifest).
Training reads them from the cache with HF_HUB_OFFLINE=1:
a checkpoint that was not baked is a one-line error naming the command that bakes it, never a
download. REVISION is a commit (pinned) or a branch or tag as the cache recorded it at bake time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from trainkit.atomic import write_json_atomic
from trainkit.errors import UserError

HF = "hf:"
FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
_SPEC = re.compile(r"^hf:(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")


@dataclass(frozen=True)
class HubCheckpoint:
    """A checkpoint on the Hub: its repository and revision."""

    repo: str
    revision: str = "main"

    @property
    def spec(self) -> str:
        return f"{HF}{self.repo}@{self.revision}"


def is_hub(spec: str) -> bool:
    """Whether `spec` names a Hugging Face checkpoint (hf:...) rather than a file or folder."""
    return spec.startswith(HF)


def parse_hub(spec: str, hyperparameter: str = "weights") -> HubCheckpoint:
    """`hf:ORG/NAME[@REVISION]` as a HubCheckpoint; a UserError naming the form otherwise."""
    found = _SPEC.match(spec.strip())
    if not found:
        raise UserError(f"hyperparameter {hyperparameter!r}: {spec!r} is not hf:ORG/NAME@REVISION, "
                        "e.g. hf:PekingU/rtdetr_r18vd@main")  # fmt: skip
    return HubCheckpoint(found["repo"], found["revision"] or "main")


def download_hub(spec: str) -> tuple[str, dict[str, str]]:
    """Fetch the checkpoint's FILES into the Hugging Face cache; returns (the commit the revision
    named, {file: sha256}).

    huggingface_hub writes each file to a temporary name and moves it into place once complete,
    so a cut download leaves nothing that a later offline read would take for the file.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    checkpoint = parse_hub(spec, "weights download")
    digests = {}
    for name in FILES:
        try:
            path = hf_hub_download(checkpoint.repo, name, revision=checkpoint.revision)
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
            reason = " ".join(str(exc).split())[:200]
            endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
            raise UserError(f"{checkpoint.spec}: cannot download {name} from {endpoint} ({reason})") from None
        digests[name] = _sha256(Path(path))
    commit = Path(path).parent.name  # the cache keeps a revision's files in snapshots/<commit>/
    baked = baked_checkpoints()
    baked[checkpoint.spec] = {"commit": commit, "sha256": digests}
    write_json_atomic(_record(), dict(sorted(baked.items())))
    return commit, digests


def baked_checkpoints() -> dict[str, dict]:
    """What `weights download` baked into this HF_HOME: {spec: {"commit", "sha256": {file: hex}}}.

    Read without huggingface_hub, so the base image (which has none) answers `weights list` too.
    """
    try:
        found = json.loads(_record().read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _record() -> Path:
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface"
    return Path(home).expanduser() / "trainkit-baked.json"


def resolve_hub(spec: str, hyperparameter: str = "weights") -> Path:
    """The cached checkpoint folder `spec` names, read offline; a UserError saying how to bake it."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    checkpoint = parse_hub(spec, hyperparameter)
    try:
        folder = Path(snapshot_download(checkpoint.repo, revision=checkpoint.revision, allow_patterns=list(FILES),
                                        local_files_only=True))  # fmt: skip
    except (LocalEntryNotFoundError, OSError, ValueError):
        folder = None
    missing = [name for name in FILES if folder is None or not (folder / name).is_file()]
    if missing:
        raise UserError(
            f"hyperparameter {hyperparameter!r}: {checkpoint.spec} is not in the Hugging Face cache "
            f"({cache_home()}; {', '.join(missing)} missing); bake it first with `trainkit weights download "
            f"{checkpoint.spec}` (weights are never downloaded while training)"
        )
    return folder


def cache_home() -> Path:
    """Where huggingface_hub keeps checkpoints ($HF_HUB_CACHE, else $HF_HOME/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

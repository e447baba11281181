"""Read the image manifest that `ci/publish.py` writes: which image, by digest, runs each trainer.

A job references `repository@sha256:...` from here, never a tag: a tag can move between the time
a job is submitted and the time (possibly hours later, after a preemption) its node pulls it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from trainkit.errors import UserError

SCHEMA = "trainkit.images/v1"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class PublishedImage:
    """One image as published: `reference` is `repository@digest`."""

    key: str  # "base" or the trainer's name
    repository: str
    digest: str
    weights: tuple[str, ...] | None = None  # what the image baked (`trainkit weights download` names); None: not said

    @property
    def reference(self) -> str:
        return f"{self.repository}@{self.digest}"


@dataclass(frozen=True)
class ImageManifest:
    """The images of one publish, and the commit and tags they came from."""

    path: Path
    registry: str
    sha: str
    ref: str
    version: str | None
    tags: tuple[str, ...]
    images: dict[str, PublishedImage]

    @property
    def trainers(self) -> list[str]:
        return sorted(k for k in self.images if k != "base")

    def image_for(self, trainer: str) -> PublishedImage:
        """The published image of `trainer`; a UserError naming the published trainers if it has none."""
        if trainer not in self.images or trainer == "base":
            known = ", ".join(self.trainers) or "none"
            raise UserError(
                f"{self.path}: no image for trainer {trainer!r} (published: {known}); "
                f"publish it (python ci/publish.py --only {trainer}) or pass --image"
            )
        return self.images[trainer]


def load_image_manifest(path: str | Path) -> ImageManifest:
    """Read and check a manifest; every problem is a UserError naming the file and the field."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: image manifest not found; run ci/publish.py or download it from CI") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable JSON image manifest ({exc})") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        found = document.get("schema") if isinstance(document, dict) else type(document).__name__
        raise UserError(f"{path}: field 'schema' is {found!r}, expected {SCHEMA!r}: not a trainkit image manifest")
    entries = document.get("images")
    if not isinstance(entries, dict) or not entries:
        raise UserError(f"{path}: field 'images' must be a non-empty object of trainer -> image")
    published = {}
    for key, entry in entries.items():
        where = f"{path}: images.{key}"
        if not isinstance(entry, dict):
            raise UserError(f"{where} must be an object with 'repository' and 'digest'")
        repository, digest = entry.get("repository"), entry.get("digest")
        if not isinstance(repository, str) or not repository or "@" in repository or repository.endswith(":"):
            raise UserError(f"{where}.repository is {repository!r}: expected a repository such as myacr.azurecr.io/x")
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise UserError(f"{where}.digest is {digest!r}: expected sha256: and 64 hex digits")
        baked = entry.get("weights")
        if baked is not None and not (isinstance(baked, list) and all(isinstance(w, str) for w in baked)):
            raise UserError(f"{where}.weights is {baked!r}: expected a list of weights names")
        published[key] = PublishedImage(key, repository, digest, None if baked is None else tuple(baked))
    source = document.get("source") if isinstance(document.get("source"), dict) else {}
    return ImageManifest(
        path=path,
        registry=str(document.get("registry", "")),
        sha=str(source.get("sha", "")),
        ref=str(source.get("ref", "")),
        version=source.get("version"),
        tags=tuple(document.get("tags") or ()),
        images=published,
    )

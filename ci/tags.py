"""Which tags a publish puts on its images, from the commit and the git ref being built.

    sha-<12 hex>       every publish (the commit)
    <branch>           a branch build (`feature/x` -> `feature-x`); `pr-<n>` for a pull request
    <version>          a release: a tag `v1.2.3` (or `v1.2.3-rc.1`) -> `1.2.3`

Tags move; jobs never use them. They are for people and for `docker pull`; the manifest pins every
image by digest. The commit and ref come from $TRAINKIT_GIT_SHA / $TRAINKIT_GIT_REF, else from the
CI system (GitHub Actions, Azure Pipelines), else from the git checkout.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from images import git

RELEASE = re.compile(r"^v(\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?)$")


@dataclass(frozen=True)
class Source:
    """The commit and ref a publish builds, and the tags that follow from them."""

    sha: str
    ref: str
    tags: tuple[str, ...]
    version: str | None  # set for a release

    @property
    def is_release(self) -> bool:
        return self.version is not None


def sanitize(name: str) -> str:
    """A valid image tag from a branch or tag name: [A-Za-z0-9_.-], not starting with . or -, <= 128."""
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).lstrip(".-")
    return tag[:128] or "unnamed"


def source_from(sha: str, ref: str) -> Source:
    """Tags for commit `sha` built from git ref `ref` (refs/heads/..., refs/tags/..., refs/pull/...)."""
    if not re.fullmatch(r"[0-9a-f]{7,64}", sha):
        raise ValueError(f"not a git commit SHA: {sha!r} (set TRAINKIT_GIT_SHA to the full hex SHA)")
    tags = [f"sha-{sha[:12]}"]
    version = None
    if ref.startswith("refs/tags/"):
        name = ref.removeprefix("refs/tags/")
        match = RELEASE.match(name)
        if match:
            version = match.group(1).replace("+", "_")  # '+' is not allowed in a tag
            tags.append(version)
        else:
            tags.append(sanitize(name))
    elif pull := re.fullmatch(r"refs/pull/(\d+)/(merge|head)", ref):
        tags.append(f"pr-{pull.group(1)}")
    elif ref.startswith("refs/heads/"):
        tags.append(sanitize(ref.removeprefix("refs/heads/")))
    elif ref:
        raise ValueError(f"not a git ref: {ref!r} (expected refs/heads/..., refs/tags/... or refs/pull/...)")
    return Source(sha, ref, tuple(dict.fromkeys(tags)), version)


def current_source(env: dict[str, str] | None = None) -> Source:
    """The Source of this build, from the environment or the git checkout."""
    env = dict(os.environ if env is None else env)
    sha = env.get("TRAINKIT_GIT_SHA") or env.get("GITHUB_SHA") or env.get("BUILD_SOURCEVERSION") or _git_sha()
    ref = env.get("TRAINKIT_GIT_REF") or env.get("GITHUB_REF") or env.get("BUILD_SOURCEBRANCH") or _git_ref()
    return source_from(sha, ref)


def _git_sha() -> str:
    return git("rev-parse", "HEAD")


def _git_ref() -> str:
    branch = git("symbolic-ref", "--quiet", "HEAD")
    if branch:
        return branch
    tag = git("describe", "--tags", "--exact-match", "HEAD")
    return f"refs/tags/{tag}" if tag else ""

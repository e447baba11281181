"""Build, test, tag and push every image, and write the manifest that AzureML jobs pin images by.

    python ci/publish.py [--engine podman] [--only TRAINER ...] [--resolve-only] [--manifest FILE]

1. Plan: each image's content tag `inputs-<sha256 of its input files>` (ci/images.py); a trainer's
   inputs include its base's content tag. An image whose content tag is already in the registry is
   reused, not rebuilt: only what changed is built, on any runner, with or without a layer cache.
2. Build what is missing (base first), run the image tests (ci/smoke.py) on each, then push.
   Nothing is pushed unless every image built in this run passed its test.
3. Tag each image with the commit, the branch and, on a release tag, the version (ci/tags.py).
   Tags are copied inside the registry by digest, so no image is pulled or pushed again.
4. Write the manifest (default dist/images.json; trainer -> repository@digest, with each image's
   uncompressed size and largest layers) and a package list (CycloneDX) for each image built (dist/sbom/).

Settings, from the environment only (no file holds a secret):
    TRAINKIT_REGISTRY                        registry (and namespace), e.g. myacr.azurecr.io or 127.0.0.1:5000
    TRAINKIT_REGISTRY_USERNAME / _PASSWORD   optional; else the engine's existing login is used
                                             (`az acr login`, docker/login-action)
    TRAINKIT_REGISTRY_INSECURE=1             plain-HTTP registry (tests)
    TRAINKIT_BASE_IMAGE                      the base image's FROM; must be pinned by digest for a release
    TRAINKIT_GIT_SHA / TRAINKIT_GIT_REF      override what the CI system or git says
    TRAINKIT_BUILD_FLAGS / TRAINKIT_ENGINE_FLAGS   engine quirks (see ci/images.py)

Exit codes: 0 published; 1 a build, test or registry operation failed; 2 bad settings.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import images
from registry import Registry, RegistryError
from sbom import write_sbom
from sizes import image_size
from smoke import SmokeTestFailed, smoke_test
from tags import Source, current_source

MANIFEST_SCHEMA = "trainkit.images/v1"
CONTENT_TAG_PREFIX = "inputs-"


class ConfigError(Exception):
    """A setting is missing or wrong (exit 2)."""


@dataclass
class Planned:
    """One image of the publish: what it is, and where it stands in the registry."""

    image: images.Image  # tagged with its content tag
    digest: str | None  # in the registry; None until pushed
    built: bool = False
    sbom: Path | None = None
    size: dict | None = None  # uncompressed bytes and largest layers, when the engine holds the image
    baked: dict | None = None  # the weights files a trainer image holds, with their hashes (images.baked_files)

    @property
    def repository(self) -> str:
        return self.image.name

    @property
    def reference(self) -> str:
        return f"{self.image.name}@{self.digest}"


def content_tag(image: images.Image) -> str:
    """`inputs-<digest of the image's input files and build args>`: the tag that says what it was built from."""
    return CONTENT_TAG_PREFIX + images.content_digest(image)[:32]


def plan(registry: Registry, only: list[str] | None) -> list[Planned]:
    """The base and the selected trainers, each with its content tag and, if published, its digest."""
    defined = images.images()
    base, trainers = defined[0], defined[1:]
    known = [t.key for t in trainers]
    unknown = sorted(set(only or ()) - {*known, "base"})
    if unknown:
        names = ", ".join(known)
        raise ConfigError(f"unknown trainer {', '.join(unknown)}: trainers are {names} (folders under trainers/)")
    base = replace(base, tag=content_tag(base))
    out = [Planned(base, registry.digest(base.ref))]
    for trainer in trainers:
        if only and trainer.key not in only:
            continue
        # The content tag of the base is itself a content hash: it stands for the base's inputs.
        trainer = replace(trainer, args=trainer.args | {"BASE_IMAGE": base.ref})
        trainer = replace(trainer, tag=content_tag(trainer))
        out.append(Planned(trainer, registry.digest(trainer.ref)))
    return out


def publish(
    engine: str,
    registry: Registry,
    source: Source,
    only: list[str] | None = None,
    *,
    resolve_only: bool = False,
    rebuild: bool = False,
    test: bool = True,
    sbom_dir: Path | None = None,
) -> list[Planned]:
    """Build, test and push what is missing, then tag everything; returns the images with digests."""
    planned = plan(registry, only)
    todo = [p for p in planned if rebuild or p.digest is None]
    if resolve_only and todo:
        missing = ", ".join(p.image.ref for p in todo)
        raise ConfigError(f"not in the registry yet: {missing}; publish them first (python ci/publish.py)")
    for p in planned:
        state = "build" if p in todo else f"reuse {p.digest}"
        print(f"publish: {p.image.key}: {p.image.ref}: {state}", file=sys.stderr, flush=True)
    for p in todo:
        label_args = {"VERSION": source.version or source.tags[0], "REVISION": source.sha}
        image = replace(p.image, args=p.image.args | {k: v for k, v in label_args.items() if k in p.image.args})
        with _timed(f"{p.image.key}: built"):
            try:
                images.build_image(engine, image, env=registry.env, extra_flags=registry.build_flags())
            except subprocess.CalledProcessError as exc:
                raise RegistryError(f"building {p.image.ref} failed (exit {exc.returncode}); see above") from None
        # The content tag was computed before the build copied the files: an edit in between would
        # put other files under this tag, and every later publish would reuse that image for it.
        if content_tag(p.image) != p.image.tag:
            raise RegistryError(
                f"{p.image.key}: its input files changed while it was being built, so it no longer matches "
                f"{p.image.tag}; nothing was pushed: publish again from a checkout that does not change"
            )
        p.built = True
    if test:
        for p in todo:
            with _timed(f"{p.image.key}: tested"):
                smoke_test(engine, p.image.ref, base=p.image.depends_on is None)
            if p.image.depends_on is not None:  # what it holds, from the image itself (run as the test is)
                p.baked = images.baked_files(engine, p.image.ref)
    for p in todo:
        with _timed(f"{p.image.key}: pushed"):
            p.digest = registry.push(p.image.ref)
        if sbom_dir is not None:
            p.sbom = write_sbom(engine, p.image.ref, sbom_dir / f"{p.image.key}.cdx.json", name=p.reference)
    for p in planned:
        # A reused image is measured when this engine holds it (a layer cache); else the run that built it did.
        with contextlib.suppress(RuntimeError):
            p.size = image_size(engine, p.image.ref)
    with _timed("tagged"):
        for p in planned:
            for tag in source.tags:
                registry.add_tag(p.repository, p.digest, tag)
    return planned


@contextmanager
def _timed(what: str) -> Iterator[None]:
    start = time.monotonic()
    yield
    print(f"publish: {what} in {time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)


def manifest(planned: list[Planned], source: Source, registry: str, manifest_path: Path) -> dict:
    """The manifest document: every image by repository@digest, with the tags it was given."""
    entries = {}
    for p in planned:
        sbom = os.path.relpath(p.sbom, manifest_path.parent) if p.sbom else None
        entries[p.image.key] = {
            "repository": p.repository,
            "digest": p.digest,
            "reference": p.reference,
            "content_tag": p.image.tag,
            "built": p.built,
            "sbom": sbom,
            "size": p.size,
            "weights": images.baked_weights(p.image),
            "weights_files": p.baked,
        }
    return {
        "schema": MANIFEST_SCHEMA,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "registry": registry,
        "source": {"sha": source.sha, "ref": source.ref, "version": source.version},
        "tags": list(source.tags),
        "images": entries,
    }


def settings(env: dict[str, str]) -> tuple[str, Source]:
    """The registry and the source, checked: a release must pin its base image by digest."""
    registry = env.get("TRAINKIT_REGISTRY", "").strip().rstrip("/")
    if not registry:
        raise ConfigError("TRAINKIT_REGISTRY is not set: set it to the registry to push to, e.g. myacr.azurecr.io")
    try:
        source = current_source(env)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    base = env.get("TRAINKIT_BASE_IMAGE", "")
    if source.is_release and "@sha256:" not in base:
        raise ConfigError(
            f"release {source.version} needs TRAINKIT_BASE_IMAGE pinned by digest (name@sha256:...); "
            f"it is {base or 'not set'}"
        )
    if bool(env.get("TRAINKIT_REGISTRY_USERNAME")) != bool(env.get("TRAINKIT_REGISTRY_PASSWORD")):
        raise ConfigError("set both TRAINKIT_REGISTRY_USERNAME and TRAINKIT_REGISTRY_PASSWORD, or neither")
    return registry, source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="docker", choices=("docker", "podman"))
    parser.add_argument(
        "--only", nargs="+", metavar="TRAINER", help="these trainers (`base`: the base alone, which is always included)"
    )
    parser.add_argument("--resolve-only", action="store_true", help="build nothing: every image must be published")
    parser.add_argument("--rebuild", action="store_true", help="build and push even what the registry has")
    parser.add_argument("--skip-tests", action="store_true", help="push without running the image tests")
    parser.add_argument("--manifest", type=Path, default=images.ROOT / "dist" / "images.json")
    parser.add_argument("--sbom-dir", type=Path, help="where package lists go (default: sbom/ beside the manifest)")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    try:
        registry_name, source = settings(env)
        insecure = env.get("TRAINKIT_REGISTRY_INSECURE", "") in ("1", "true", "yes")
        with Registry(args.engine, insecure=insecure) as registry:
            if env.get("TRAINKIT_REGISTRY_USERNAME"):
                host = registry_name.split("/", 1)[0]
                registry.login(host, env["TRAINKIT_REGISTRY_USERNAME"], env["TRAINKIT_REGISTRY_PASSWORD"])
            planned = publish(
                args.engine, registry, source, args.only,
                resolve_only=args.resolve_only, rebuild=args.rebuild, test=not args.skip_tests,
                sbom_dir=args.sbom_dir or args.manifest.parent / "sbom",
            )  # fmt: skip
    except ConfigError as exc:
        print(f"publish: error: {exc}", file=sys.stderr)
        return 2
    except (RegistryError, SmokeTestFailed, RuntimeError) as exc:
        print(f"publish: error: {exc}", file=sys.stderr)
        return 1
    images.write_json(args.manifest, manifest(planned, source, registry_name, args.manifest))
    for p in planned:
        print(f"{p.image.key}\t{p.reference}")
    print(f"publish: manifest written to {args.manifest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

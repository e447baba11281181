"""The one build definition of every image: the base, and one image per folder under trainers/.

    python ci/images.py list                     # images and their build settings, as JSON
    python ci/images.py bake                     # the same as a `docker buildx bake -f -` file
    python ci/images.py wheelhouse               # hash-checked wheels of docker/requirements.lock
    python ci/images.py build [--engine podman]  # build base then trainers (layers reused)

Names: $TRAINKIT_REGISTRY (default `localhost`) / trainkit-base and trainkit-<trainer>, tag
$TRAINKIT_TAG (default `dev`). $TRAINKIT_BASE_IMAGE overrides the base's FROM (pin a digest for
releases). Engine quirks (e.g. podman's `--isolation chroot` on VMs without cgroup v2) come from
$TRAINKIT_BUILD_FLAGS and stay out of the Dockerfiles.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELHOUSE = ROOT / "wheelhouse"
LOCK = ROOT / "docker" / "requirements.lock"


@dataclass(frozen=True)
class Image:
    """One image to build."""

    name: str
    tag: str
    context: str
    dockerfile: str
    args: dict[str, str] = field(default_factory=dict)
    depends_on: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"


def trainer_names() -> list[str]:
    """Every folder under trainers/ that holds a Dockerfile and a *_trainer.py."""
    return sorted(
        p.name for p in (ROOT / "trainers").iterdir() if (p / "Dockerfile").is_file() and any(p.glob("*_trainer.py"))
    )


def images() -> list[Image]:
    """The base image first, then one per trainer."""
    registry = os.environ.get("TRAINKIT_REGISTRY", "localhost").rstrip("/")
    tag = os.environ.get("TRAINKIT_TAG", "dev")
    revision = os.environ.get("TRAINKIT_REVISION") or _git("rev-parse", "HEAD") or "unknown"
    version = os.environ.get("TRAINKIT_VERSION", tag)
    source = os.environ.get("TRAINKIT_SOURCE", "") or _git("config", "--get", "remote.origin.url") or "unknown"
    base_args = {}
    if os.environ.get("TRAINKIT_BASE_IMAGE"):
        base_args["BASE_IMAGE"] = os.environ["TRAINKIT_BASE_IMAGE"]
    base = Image(f"{registry}/trainkit-base", tag, str(ROOT), str(ROOT / "docker" / "Dockerfile"), base_args)
    out = [base]
    for name in trainer_names():
        folder = ROOT / "trainers" / name
        args = {"BASE_IMAGE": base.ref, "TRAINER": name, "VERSION": version, "REVISION": revision, "SOURCE": source}
        out.append(Image(f"{registry}/trainkit-{name}", tag, str(folder), str(folder / "Dockerfile"), args, base.ref))
    return out


def bake() -> dict:
    """A buildx bake definition: `python ci/images.py bake | docker buildx bake -f - --load`."""
    targets = {}
    for image in images():
        key = image.name.rsplit("/", 1)[-1]
        target = {"context": image.context, "dockerfile": image.dockerfile, "tags": [image.ref], "args": image.args}
        if image.depends_on:
            # bake builds the base first and hands it over as a named context
            target["contexts"] = {image.depends_on: "target:trainkit-base"}
        targets[key] = target
    return {"group": {"default": {"targets": list(targets)}}, "target": targets}


def wheelhouse() -> None:
    """Download every wheel of the lock, hash-checked, into wheelhouse/ (the build installs offline)."""
    WHEELHOUSE.mkdir(exist_ok=True)
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--no-deps",
          "--require-hashes", "-r", str(LOCK), "-d", str(WHEELHOUSE)])  # fmt: skip


def build(engine: str) -> list[str]:
    """Build every image in order; returns their references."""
    if not any(WHEELHOUSE.glob("*.whl")):
        wheelhouse()
    flags = shlex.split(os.environ.get("TRAINKIT_BUILD_FLAGS", ""))
    built = []
    for image in images():
        command = [engine, "build", *flags, "-f", image.dockerfile, "-t", image.ref]
        for key, value in image.args.items():
            command += ["--build-arg", f"{key}={value}"]
        _run([*command, image.context])
        built.append(image.ref)
    return built


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _run(command: list[str]) -> None:
    print("+", shlex.join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True, stdout=sys.stderr)  # stdout is for our own results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("list", "bake", "wheelhouse", "build"))
    parser.add_argument("--engine", default="docker", help="docker or podman")
    args = parser.parse_args(argv)
    if args.command == "list":
        print(json.dumps([asdict(i) | {"ref": i.ref} for i in images()], indent=2))
    elif args.command == "bake":
        print(json.dumps(bake(), indent=2))
    elif args.command == "wheelhouse":
        wheelhouse()
    else:
        print("\n".join(build(args.engine)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: publishing only what changed, against rebuilding, testing and pushing everything, one run.

A copy of this checkout is published with ci/publish.py (podman) to a distribution registry on
127.0.0.1 started for the run (Debian's docker-registry), four times:
  first         an empty registry: every image built (from the local layer cache, if it holds them),
                tested and pushed
  no change     the same files again: every content tag is found, nothing is built or pushed
  one-line      a comment appended to trainers/skeleton/skeleton_trainer.py: that trainer alone
                is built, tested and pushed
  baseline      the same changed files with --rebuild: what a pipeline without content tags does on
                every commit (every image built, tested and pushed; the layer cache and the
                registry's blobs still spare it the unchanged layers, so this baseline is a kind one)
Printed: seconds, images built, blobs and megabytes the registry gained, and each run against the
baseline; then each image's uncompressed size and largest layers from the manifest, so a size
regression shows. Local tags it made and the registry are removed afterwards; layers stay in the cache.

    .venv/bin/python benchmarks/publish.py [--vm] [--smoke]   # --vm: podman as on the project's VMs (ci/podman)

--smoke runs the same four publishes in about a minute on stand-in images: a base of Debian and
Python alone (the checkout's docker/Dockerfile replaced) and the skeleton trainer, with the image
tests skipped (there is no trainkit to train with); it checks the benchmark works, not the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ci" / "podman"))
import vm  # noqa: E402  (ci/ is not a package: podman settings and a local registry)

TRAINER_FILE = Path("trainers/skeleton/skeleton_trainer.py")
SMOKE_BASE_DOCKERFILE = """\
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends python3 python-is-python3 \\
    && rm -rf /var/lib/apt/lists/*
COPY shared/trainkit /opt/trainkit/shared/trainkit
"""
SMOKE_FLAGS = ("--only", "skeleton", "--skip-tests")


@dataclass
class Result:
    name: str
    seconds: float
    built: list[str]
    blobs: int
    megabytes: float
    steps: dict[str, float]  # build / test / push seconds, as ci/publish.py reports them
    sizes: dict[str, dict | None]  # image -> the manifest's size entry (uncompressed bytes, largest layers)


def copy_checkout(target: Path) -> Path:
    """The repository's files (tracked and untracked, not ignored) in `target`; the wheelhouse linked."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    if (ROOT / "wheelhouse").is_dir():
        (target / "wheelhouse").symlink_to(ROOT / "wheelhouse", target_is_directory=True)
    return target


def blobs(store: Path) -> dict[str, int]:
    """Every blob the registry stores, with its size."""
    root = store / "docker" / "registry" / "v2" / "blobs" / "sha256"
    return {p.name: (p / "data").stat().st_size for p in root.glob("*/*") if (p / "data").is_file()}


def publish(name: str, checkout: Path, env: dict[str, str], store: Path, *args: str) -> Result:
    """Run ci/publish.py once and measure it; exits if it fails."""
    before = blobs(store)
    manifest = checkout / "dist" / f"{name}.json"
    command = [sys.executable, str(checkout / "ci" / "publish.py"), "--engine", "podman", "--manifest", str(manifest)]
    start = time.perf_counter()
    run = subprocess.run([*command, *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"publish ({name}) failed with exit {run.returncode}:\n{run.stderr[-4000:]}")
    added = {k: v for k, v in blobs(store).items() if k not in before}
    steps = {"built": 0.0, "tested": 0.0, "pushed": 0.0}
    for step, value in re.findall(r"^publish: [\w-]+: (built|tested|pushed) in ([\d.]+) s$", run.stderr, re.M):
        steps[step] += float(value)
    entries = json.loads(manifest.read_text())["images"]
    built = [k for k, v in entries.items() if v["built"]]
    sizes = {k: v.get("size") for k, v in entries.items()}
    return Result(name, seconds, built, len(added), sum(added.values()) / 1e6, steps, sizes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vm", action="store_true", help="podman settings for the project's VMs (ci/podman/vm.py)")
    parser.add_argument("--smoke", action="store_true", help="stand-in images, about a minute: checks the script")
    args = parser.parse_args(argv)
    flags = SMOKE_FLAGS if args.smoke else ()
    env = dict(os.environ)
    if args.vm:
        env = vm.environment()
    missing = [tool for tool in ("podman", "skopeo", "docker-registry") if shutil.which(tool) is None]
    if missing:
        print(f"publish benchmark: {', '.join(missing)} not installed: ci/podman/setup.sh installs them (or pass --vm)",
              file=sys.stderr)  # fmt: skip
        return 2

    with tempfile.TemporaryDirectory(prefix="trainkit-bench-publish-") as tmp:
        folder = Path(tmp)
        checkout = copy_checkout(folder / "checkout")
        if args.smoke:
            (checkout / "docker" / "Dockerfile").write_text(SMOKE_BASE_DOCKERFILE)
        with vm.local_registry(folder) as address:
            env |= {
                "TRAINKIT_REGISTRY": address,
                "TRAINKIT_REGISTRY_INSECURE": "1",
                "TRAINKIT_GIT_SHA": "be4c000000000000000000000000000000000001",
                "TRAINKIT_GIT_REF": "refs/heads/benchmark",
            }
            env.pop("TRAINKIT_REGISTRY_USERNAME", None)
            env.pop("TRAINKIT_REGISTRY_PASSWORD", None)
            store = folder / "store"
            try:
                results = [publish(name, checkout, env, store, *flags) for name in ("first", "no change")]
                trainer = checkout / TRAINER_FILE
                trainer.write_text(trainer.read_text() + "\n# benchmark: a one-line change\n")
                results.append(publish("one-line", checkout, env, store, *flags))
                results.append(publish("baseline", checkout, env, store, *flags, "--rebuild"))
            finally:
                listed = subprocess.run(
                    ["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True
                ).stdout.split()
                mine = [ref for ref in listed if ref.startswith(address + "/")]
                if mine:
                    subprocess.run(["podman", "rmi", "--force", *mine], capture_output=True)

    baseline = results[-1]
    descriptions = {
        "first": "empty registry",
        "no change": "same files again",
        "one-line": "a comment added to the skeleton trainer",
        "baseline": "same files, --rebuild: build, test, push all",
    }
    base = env.get("TRAINKIT_BASE_IMAGE", "the Dockerfile's default")
    what = "smoke: stand-in base and skeleton, no image tests" if args.smoke else "every image"
    print(f"\nci/publish.py with podman to a local registry ({what}), {os.cpu_count()} cores, FROM {base}")
    header = f"{'publish':<10} {'what':<46} {'built':<38} {'build s':>8} {'test s':>7} {'push s':>7}"
    print(f"{header} {'blobs':>6} {'MB':>8} {'seconds':>8} {'vs baseline':>12} {'vs first':>9}")
    for r in results:
        built = ", ".join(r.built) or "-"
        steps = f"{r.steps['built']:>8.1f} {r.steps['tested']:>7.1f} {r.steps['pushed']:>7.1f}"
        ratios = f"{r.seconds / baseline.seconds:>12.1%} {r.seconds / results[0].seconds:>9.1%}"
        sizes = f"{r.blobs:>6} {r.megabytes:>8.1f} {r.seconds:>8.1f}"
        print(f"{r.name:<10} {descriptions[r.name]:<46} {built:<38} {steps} {sizes} {ratios}")
    print(f"\n{'image':<12} {'GB':>6}  largest layers (MB: created by), from the manifest of '{baseline.name}'")
    for key, size in baseline.sizes.items():
        if size is None:
            print(f"{key:<12} {'?':>6}  (not measured: the engine does not hold it)")
            continue
        layers = "; ".join(
            f"{layer['bytes'] / 1e6:.1f}: {layer['created_by'][:60]}" for layer in size["largest_layers"]
        )
        print(f"{key:<12} {size['bytes'] / 1e9:>6.2f}  {layers}")
    change = results[2]
    print(
        f"\none-line trainer change: {change.seconds:.1f} s = {change.seconds / baseline.seconds:.1%} of the baseline, "
        f"{change.seconds / results[0].seconds:.1%} of the first publish"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The image test CI runs before it pushes: train the image's trainer on demo data made inside it.

It runs the image the way AzureML does (the entrypoint replaced by `bash -c`), as its non-root
user, with no network (trainers must not download weights), and checks that a model was written.
It trains from what the image baked (its default configuration); an image built with no weights
(TRAINKIT_WEIGHTS empty) trains from scratch, with `--set weights=`, which every trainer accepts.
The base image, which has no trainer, is checked for its tools and libraries instead: every trainkit
module must import (what the image leaves out, such as MLflow's server side, must not be needed).

    python ci/smoke.py IMAGE [--base] [--engine podman]   # global engine flags: $TRAINKIT_ENGINE_FLAGS
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

from images import engine_command

SCRIPT = """set -euo pipefail
trainkit demo-data /tmp/demo --images 8 --seed 1
from_scratch=()
if [ -z "${TRAINKIT_WEIGHTS_BAKED:-}" ]; then from_scratch=(--set weights=); fi
DATASTORE_NAME=demo_datastore trainkit train --imageset /tmp/demo/imageset --labelset /tmp/demo/labels.csv \\
    --output-dir /tmp/out --device cpu --set epochs=1 --set batch_size=2 --set image_size=64 --register-as smoke \\
    "${from_scratch[@]}"
test -s /tmp/out/model/MLmodel
test -s /tmp/out/metrics.json
echo "smoke test passed: $TRAINKIT_IMAGE"
"""

BASE_SCRIPT = """set -euo pipefail
test "$(id -u)" != 0
trainkit --version
python - <<'PY'
import importlib, pkgutil
import torch, torchvision, nvidia.dali, mlflow, azureml.mlflow, trainkit
names = [m.name for m in pkgutil.walk_packages(trainkit.__path__, "trainkit.")]
for name in names:
    importlib.import_module(name)
print(f"imported {len(names)} trainkit modules")
PY
echo "smoke test passed: base image"
"""


class SmokeTestFailed(Exception):
    """The image did not train on the demo data."""


def smoke_test(engine: str, ref: str, *, base: bool = False, timeout: float = 900) -> None:
    """Run the demo training inside `ref` (`base`: the base checks); raises SmokeTestFailed with its last lines."""
    command = [*engine_command(engine), "run", "--rm", "--network", "none", "--entrypoint", "bash", ref, "-c"]
    command.append(BASE_SCRIPT if base else SCRIPT)
    print("+", shlex.join(command[:-1]), "<smoke script>", file=sys.stderr, flush=True)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SmokeTestFailed(f"{ref}: the smoke test did not finish within {timeout:.0f} s") from None
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise SmokeTestFailed(f"{ref}: the smoke test exited {result.returncode}:\n{tail}")
    print(result.stdout.strip().splitlines()[-1], file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--base", action="store_true", help="IMAGE is the base image (no trainer)")
    parser.add_argument("--engine", default="docker", help="docker or podman")
    args = parser.parse_args(argv)
    try:
        smoke_test(args.engine, args.image, base=args.base)
    except SmokeTestFailed as exc:
        print(f"smoke: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How big an image is: its uncompressed size and largest layers, and what its bytes are spent on.

`image_size` reads the engine's own figures (what `docker images` shows) for the manifest and the
publish benchmark. `package_groups` runs a probe inside the image that adds up the files of every
installed Python distribution, by group, and puts the rest (the OS, Python itself) under "system".

    python ci/sizes.py IMAGE [IMAGE ...] [--engine podman]   # a table by group, each image against the first
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from images import engine_command

LARGEST_LAYERS = 3
# Runs inside the image with its own Python; prints {distribution name: bytes of its files}.
PROBE = """
import importlib.metadata as md, json, os, site
sizes = {}
for d in md.distributions():
    total = 0
    for f in d.files or ():
        try:
            total += os.path.getsize(d.locate_file(f))
        except OSError:
            pass
    sizes[d.metadata["Name"].lower().replace("_", "-")] = total
print(json.dumps(sizes))
"""
# (group, test on a lower-case distribution name), first match wins; unmatched: "other Python packages".
GROUPS: tuple[tuple[str, object], ...] = (
    ("torch, torchvision", lambda n: n in ("torch", "torchvision")),
    ("NVIDIA DALI", lambda n: n.startswith("nvidia-dali")),
    ("CUDA libraries (nvidia-*, cuda-*)", lambda n: n.startswith(("nvidia-", "cuda-"))),
    ("triton (torch.compile)", lambda n: n == "triton"),
    ("MLflow", lambda n: n.startswith("mlflow")),
    ("scipy, scikit-learn", lambda n: n in ("scipy", "scikit-learn")),
    ("pyarrow, pandas, numpy", lambda n: n in ("pyarrow", "pandas", "numpy")),
)
OTHER = "other Python packages"
SYSTEM = "system: Debian, Python, tools"


def _engine(engine: str, *args: str, timeout: float = 300) -> str:
    """The engine's stdout; RuntimeError when it fails or is not installed."""
    try:
        result = subprocess.run([*engine_command(engine), *args], capture_output=True, text=True, timeout=timeout)
    except OSError as exc:
        raise RuntimeError(f"{engine} cannot run: {exc}") from None
    if result.returncode != 0:
        raise RuntimeError(f"{engine} {args[0]} failed: {result.stderr.strip()[-500:]}")
    return result.stdout


def image_size(engine: str, ref: str) -> dict:
    """{"bytes": uncompressed size, "largest_layers": [{"bytes", "created_by"}, ...]} of a local image."""
    total = int(_engine(engine, "image", "inspect", "--format", "{{.Size}}", ref).strip())
    history = _engine(engine, "history", "--no-trunc", "--human=false", "--format", "{{json .}}", ref)
    layers = []
    # docker prints one object a line ("Size": "123" with --human=false); podman one array ("size": 123).
    for line in filter(str.strip, history.splitlines()):
        parsed = json.loads(line)
        for entry in parsed if isinstance(parsed, list) else [parsed]:
            size = int(entry.get("size", entry.get("Size", 0)) or 0)
            if size > 0:
                layers.append({"bytes": size, "created_by": " ".join(entry.get("CreatedBy", "").split())[:200]})
    layers.sort(key=lambda layer: -layer["bytes"])
    return {"bytes": total, "largest_layers": layers[:LARGEST_LAYERS]}


def package_groups(engine: str, ref: str) -> dict[str, int]:
    """Bytes by group (see GROUPS) of what `ref` holds, "system" being what no Python distribution owns."""
    probe = _engine(engine, "run", "--rm", "--network", "none", "--entrypoint", "python", ref, "-c", PROBE)
    groups: dict[str, int] = dict.fromkeys([name for name, _ in GROUPS] + [OTHER], 0)
    for name, size in json.loads(probe).items():
        group = next((g for g, matches in GROUPS if matches(name)), OTHER)  # type: ignore[operator]
        groups[group] += size
    groups[SYSTEM] = image_size(engine, ref)["bytes"] - sum(groups.values())
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+")
    parser.add_argument("--engine", default="docker", help="docker or podman")
    args = parser.parse_args(argv)
    measured = [package_groups(args.engine, ref) for ref in args.images]
    header = "| group | " + " | ".join(f"{ref} (GB)" for ref in args.images)
    if len(args.images) > 1:
        header += " | " + " | ".join(f"{ref} - {args.images[0]}" for ref in args.images[1:])
    print(header + " |")
    print("|---" * (2 * len(args.images)) + "|")
    for group in [*measured[0], "total"]:
        values = [sum(m.values()) if group == "total" else m[group] for m in measured]
        cells = [f"{v / 1e9:.2f}" for v in values] + [f"{(v - values[0]) / 1e9:+.2f}" for v in values[1:]]
        print(f"| {group} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

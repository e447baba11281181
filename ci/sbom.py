"""A package list (CycloneDX 1.5 JSON) of an image: every Python distribution and Debian package in it.

Read from inside the image, as it will run (the venv's installed distributions and dpkg's
database), so it lists what is there rather than what a lock file asked for. Scanners such as
Trivy or Grype read this format; CI also scans the pushed image itself (see the workflows).

    python ci/sbom.py IMAGE [--engine podman] [-o FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from images import engine_command, write_json

# Runs inside the image with its own Python; prints one JSON object.
PROBE = """
import importlib.metadata as md, json, subprocess
py = []
for d in md.distributions():
    meta = d.metadata
    py.append({"name": meta["Name"], "version": d.version,
               "license": meta.get("License-Expression") or meta.get("License") or ""})
deb = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\\t${Version}\\t${Architecture}\\n"],
                     capture_output=True, text=True, check=True).stdout
print(json.dumps({"python": py, "deb": [line.split("\\t") for line in deb.splitlines() if line]}))
"""


def probe(engine: str, ref: str) -> dict:
    """What is installed in `ref`: {"python": [{name, version, license}], "deb": [[name, version, arch]]}."""
    command = [*engine_command(engine), "run", "--rm", "--network", "none", "--entrypoint", "python", ref, "-c", PROBE]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"cannot list the packages of {ref}: {result.stderr.strip()[-500:]}")
    return json.loads(result.stdout)


def cyclonedx(ref: str, installed: dict) -> dict:
    """A CycloneDX 1.5 document for the image `ref` (name@digest when known) and its packages."""
    components = []
    for dist in sorted(installed["python"], key=lambda d: d["name"].lower()):
        name = dist["name"].lower().replace("_", "-")
        component = {"type": "library", "name": dist["name"], "version": dist["version"]}
        component["purl"] = f"pkg:pypi/{name}@{dist['version']}"
        if dist["license"] and len(dist["license"]) <= 100:  # some packages put the whole text here
            component["licenses"] = [{"license": {"name": dist["license"]}}]
        components.append(component)
    for name, version, arch in sorted(installed["deb"]):
        purl = f"pkg:deb/debian/{name}@{version}?arch={arch}"
        components.append({"type": "library", "name": name, "version": version, "purl": purl})
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "trainkit ci/sbom.py"}]},
            "component": {"type": "container", "name": ref, "bom-ref": ref},
        },
        "components": components,
    }


def write_sbom(engine: str, ref: str, path: Path, name: str | None = None) -> Path:
    """Probe `ref` and write its SBOM to `path` (complete or not at all); `name` is recorded as the image."""
    return write_json(path, cyclonedx(name or ref, probe(engine, ref)), indent=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--engine", default="docker", help="docker or podman")
    parser.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    args = parser.parse_args(argv)
    if args.output:
        write_sbom(args.engine, args.image, args.output)
    else:
        print(json.dumps(cyclonedx(args.image, probe(args.engine, args.image)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

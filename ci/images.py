"""The one build definition of every image: the base, and one image per folder under trainers/.

    python ci/images.py list                     # images and their build settings, as JSON
    python ci/images.py trainers [--azure]       # trainer names as a JSON list (an Azure Pipelines matrix)
    python ci/images.py inputs                   # each image's input files (what its content tag hashes)
    python ci/images.py bake                     # the same as a `docker buildx bake -f -` file
    python ci/images.py wheelhouse               # hash-checked wheels of every image's lock
    python ci/images.py build [--engine podman]  # build base then trainers (layers reused)

Names: $TRAINKIT_REGISTRY (default `localhost`) / trainkit-base and trainkit-<trainer>, tag
$TRAINKIT_TAG (default `dev`). $TRAINKIT_BASE_IMAGE overrides the base's FROM (pin a digest for
releases). Trainer images bake the pretrained weights their Dockerfile's `ARG WEIGHTS` names;
$TRAINKIT_WEIGHTS replaces that for every trainer (empty: bake none, for a runner that cannot reach
download.pytorch.org) and $TRAINKIT_WEIGHTS_URL names a mirror of torchvision's files. A trainer
whose folder holds a requirements.lock (what it adds to the base, from `ci/lock.py --trainer`)
gets its wheels as a named build context, `wheels` (wheelhouse/<trainer>/, downloaded here with
their hashes checked), so that its build installs them offline and its context stays its folder.
Engine quirks (e.g. podman's `--isolation chroot` on VMs without cgroup v2) come from
$TRAINKIT_BUILD_FLAGS (added to `build`) and $TRAINKIT_ENGINE_FLAGS (global flags, such as podman's
`--runtime`, added to every engine command) and stay out of the Dockerfiles.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELHOUSE = ROOT / "wheelhouse"
LOCK = ROOT / "docker" / "requirements.lock"
# Build arguments that only set labels: they do not change what an image runs, so they are left
# out of its content digest (a rebuild for a new commit alone would push nothing useful).
LABEL_ARGS = frozenset({"VERSION", "REVISION", "SOURCE"})
# Where baked weights come from (a mirror): their hashes are checked, so the image is the same.
MIRROR_ARGS = frozenset({"WEIGHTS_URL"})


@dataclass(frozen=True)
class Image:
    """One image to build. `key` is `base` or the trainer's name (the manifest's keys)."""

    key: str
    name: str
    tag: str
    context: str
    dockerfile: str
    args: dict[str, str] = field(default_factory=dict)
    depends_on: str | None = None
    lock: str | None = None  # the pinned, hashed wheels the build installs ...
    wheels: str | None = None  # ... from this folder (the base: in its context; a trainer: build context `wheels`)

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
    revision = os.environ.get("TRAINKIT_REVISION") or git("rev-parse", "HEAD") or "unknown"
    version = os.environ.get("TRAINKIT_VERSION", tag)
    source = os.environ.get("TRAINKIT_SOURCE", "") or git("config", "--get", "remote.origin.url") or "unknown"
    base_args = {}
    if os.environ.get("TRAINKIT_BASE_IMAGE"):
        base_args["BASE_IMAGE"] = os.environ["TRAINKIT_BASE_IMAGE"]
    base = Image("base", f"{registry}/trainkit-base", tag, str(ROOT), str(ROOT / "docker" / "Dockerfile"), base_args,
                 lock=str(LOCK), wheels=str(WHEELHOUSE))  # fmt: skip
    out = [base]
    for name in trainer_names():
        folder = ROOT / "trainers" / name
        args = {"BASE_IMAGE": base.ref, "TRAINER": name, "VERSION": version, "REVISION": revision, "SOURCE": source}
        args.update(weights_args())
        lock = folder / "requirements.lock"
        wheels = {"lock": str(lock), "wheels": str(WHEELHOUSE / name)} if lock.is_file() else {}
        out.append(Image(name, f"{registry}/trainkit-{name}", tag, str(folder), str(folder / "Dockerfile"), args,
                         base.ref, **wheels))  # fmt: skip
    return out


def weights_args() -> dict[str, str]:
    """Trainer images' WEIGHTS (set, even empty, it replaces every Dockerfile's default) and WEIGHTS_URL."""
    args = {}
    if "TRAINKIT_WEIGHTS" in os.environ:
        args["WEIGHTS"] = os.environ["TRAINKIT_WEIGHTS"]
    if os.environ.get("TRAINKIT_WEIGHTS_URL"):
        args["WEIGHTS_URL"] = os.environ["TRAINKIT_WEIGHTS_URL"]
    return args


def baked_weights(image: Image) -> list[str] | None:
    """The weights a trainer image bakes (its WEIGHTS argument, else its Dockerfile's default); None for the base."""
    if image.depends_on is None:
        return None
    if "WEIGHTS" in image.args:
        return image.args["WEIGHTS"].split()
    found = re.search(r"^ARG WEIGHTS=(.*)$", Path(image.dockerfile).read_text(), re.M)
    return found.group(1).split() if found else []


def baked_files(engine: str, ref: str) -> dict:
    """What a built trainer image holds, as its own `trainkit weights list --present --json` says: the
    torchvision files, and each Hugging Face checkpoint's commit and files' sha256 (recorded at bake)."""
    command = [*engine_command(engine), "run", "--rm", "--network", "none", "--entrypoint", "trainkit", ref,
               "weights", "list", "--present", "--json"]  # fmt: skip
    listed = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    return {"torchvision": [w["file"] for w in listed["torchvision"]], "hf": listed["hf"]}


def input_files(image: Image) -> list[Path]:
    """The files an image is made of: its Dockerfile and what its context sends, per its .dockerignore.

    The base's context is the repository root, whose .dockerignore lets in only what the Dockerfile
    copies; `wheelhouse/` is left out because docker/requirements.lock (an input) fixes its wheels
    by hash.
    """
    context = Path(image.context)
    rules = _dockerignore(context / ".dockerignore")
    tops = [context / p for negate, p in rules if negate and "*" not in p] if image.depends_on is None else [context]
    files = {Path(image.dockerfile)}
    for top in tops:
        if top.name == "wheelhouse":
            continue
        for path in [top] if top.is_file() else top.rglob("*"):
            rel = path.relative_to(context).as_posix()
            if path.is_file() and not _ignored(rel, rules):
                files.add(path)
    return sorted(files)


def content_digest(image: Image) -> str:
    """sha256 over the image's input files (path, exec bit, content) and its content-defining build args.

    Two builds with the same digest make images that run the same, so a registry that already holds
    `inputs-<digest>` needs no new build: this is how CI builds only what changed.
    """
    h = hashlib.sha256()
    for path in input_files(image):
        data = path.read_bytes()
        executable = int(os.access(path, os.X_OK))
        rel = path.relative_to(image.context).as_posix()
        h.update(f"file {rel} {executable} {hashlib.sha256(data).hexdigest()}\n".encode())
    for key in sorted(set(image.args) - LABEL_ARGS - MIRROR_ARGS):
        h.update(f"arg {key}={image.args[key]}\n".encode())
    return h.hexdigest()


def _dockerignore(path: Path) -> list[tuple[bool, str]]:
    """(negated, pattern) rules of a .dockerignore, in order."""
    if not path.is_file():
        return []
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            rules.append((negate, line.lstrip("!").strip("/")))
    return rules


def _ignored(rel: str, rules: list[tuple[bool, str]]) -> bool:
    """Docker's rule (the last matching pattern wins; a path matches when it or a parent folder does),
    loosened so that a pattern without a slash, like `__pycache__`, also matches that name at any depth."""
    parts = rel.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negate, pattern in rules:
        patterns = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        if any(fnmatch.fnmatchcase(c, p) or ("/" not in p and fnmatch.fnmatchcase(c.rsplit("/", 1)[-1], p))
               for c in candidates for p in patterns):  # fmt: skip
            ignored = not negate
    return ignored


def bake() -> dict:
    """A buildx bake definition: `python ci/images.py bake | docker buildx bake -f - --load`."""
    targets = {}
    for image in images():
        key = image.name.rsplit("/", 1)[-1]
        target = {"context": image.context, "dockerfile": image.dockerfile, "tags": [image.ref], "args": image.args}
        if image.depends_on:
            # bake builds the base first and hands it over as a named context
            target["contexts"] = {image.depends_on: "target:trainkit-base"}
            if image.wheels:
                target["contexts"]["wheels"] = image.wheels
        targets[key] = target
    return {"group": {"default": {"targets": list(targets)}}, "target": targets}


def wheelhouse(image: Image) -> None:
    """Download every wheel of the image's lock, hash-checked, into its wheel folder (the build installs offline)."""
    Path(image.wheels).mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--no-deps",
          "--require-hashes", "-r", image.lock, "-d", image.wheels])  # fmt: skip


def missing_wheels(image: Image) -> list[str]:
    """`name==version` pins of the image's lock that its wheel folder lacks (a changed lock needs new ones)."""
    if image.lock is None:
        return []
    have = {p.name.lower() for p in Path(image.wheels).glob("*.whl")}
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", Path(image.lock).read_text(), re.M)
    return [f"{name}=={v}" for name, v in pins
            if not any(w.startswith(f"{re.sub(r'[-_.]+', '_', name).lower()}-{v.lower()}-") for w in have)]  # fmt: skip


def build(engine: str) -> list[str]:
    """Build every image in order; returns their references."""
    built = []
    for image in images():
        build_image(engine, image)
        built.append(image.ref)
    return built


def build_image(engine: str, image: Image, env: dict[str, str] | None = None, extra_flags: list[str] = ()) -> None:
    """Build one image with `engine` (docker or podman), tagged `image.ref`.

    $TRAINKIT_BUILD_FLAGS and `extra_flags` are added; `env` (default: this process's) carries a
    registry login to the engine when the build pulls its FROM image.
    """
    if missing_wheels(image):
        wheelhouse(image)
    flags = [*shlex.split(os.environ.get("TRAINKIT_BUILD_FLAGS", "")), *extra_flags]
    if image.depends_on and image.wheels:
        flags += ["--build-context", f"wheels={image.wheels}"]
    command = [*engine_command(engine), "build", *flags, "-f", image.dockerfile, "-t", image.ref]
    for key, value in image.args.items():
        command += ["--build-arg", f"{key}={value}"]
    _run([*command, image.context], env)


def engine_command(engine: str) -> list[str]:
    """The engine's argv prefix: its name and the global flags from $TRAINKIT_ENGINE_FLAGS."""
    return [engine, *shlex.split(os.environ.get("TRAINKIT_ENGINE_FLAGS", ""))]


def git(*args: str) -> str:
    """`git ARGS` in the repository, stripped; empty when git or the repository is not there."""
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def write_json(path: Path, document: object, indent: int = 2) -> Path:
    """Write `path` complete or not at all (temp file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, indent=indent)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # no half-written temp file left beside the good one
        raise
    return path


def _run(command: list[str], env: dict[str, str] | None = None) -> None:
    print("+", shlex.join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True, stdout=sys.stderr, env=env)  # stdout is for our own results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("list", "trainers", "inputs", "bake", "wheelhouse", "build"))
    parser.add_argument("--engine", default="docker", help="docker or podman")
    parser.add_argument("--azure", action="store_true", help="trainers: as an Azure Pipelines matrix object")
    args = parser.parse_args(argv)
    if args.command == "list":
        print(json.dumps([asdict(i) | {"ref": i.ref} for i in images()], indent=2))
    elif args.command == "trainers":
        names = trainer_names()
        print(json.dumps({n: {"TRAINER": n} for n in names} if args.azure else names))
    elif args.command == "inputs":
        listing = {
            i.key: {"digest": content_digest(i), "files": [str(p.relative_to(i.context)) for p in input_files(i)]}
            for i in images()
        }
        print(json.dumps(listing, indent=2))
    elif args.command == "bake":
        print(json.dumps(bake(), indent=2))
    elif args.command == "wheelhouse":
        for image in images():
            if image.lock:
                wheelhouse(image)
    else:
        print("\n".join(build(args.engine)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

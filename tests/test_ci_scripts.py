"""The publishing scripts' logic, without a registry: tags, content digests, settings, the manifest."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from trainkit.errors import UserError
from trainkit.submit.image_manifest import load_image_manifest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ci"))

import images  # noqa: E402
import publish  # noqa: E402
from tags import sanitize, source_from  # noqa: E402

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("ref", "tags", "version"),
    [
        ("refs/heads/main", ("sha-0123456789ab", "main"), None),
        ("refs/heads/feature/New Loader", ("sha-0123456789ab", "feature-New-Loader"), None),
        ("refs/tags/v1.4.0", ("sha-0123456789ab", "1.4.0"), "1.4.0"),
        ("refs/tags/v2.0.0-rc.1", ("sha-0123456789ab", "2.0.0-rc.1"), "2.0.0-rc.1"),
        ("refs/tags/nightly", ("sha-0123456789ab", "nightly"), None),
        ("refs/pull/42/merge", ("sha-0123456789ab", "pr-42"), None),
        ("", ("sha-0123456789ab",), None),
    ],
)
def test_tags_follow_the_git_ref(ref: str, tags: tuple[str, ...], version: str | None) -> None:
    source = source_from(SHA, ref)
    assert source.tags == tags and source.version == version and source.is_release == (version is not None)


def test_tag_names_are_valid_docker_tags() -> None:
    for name in ["a/b", "..x", "-y", "ü" * 200, "x" * 300]:
        tag = sanitize(name)
        assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag), tag
    with pytest.raises(ValueError, match="not a git commit SHA"):
        source_from("main", "refs/heads/main")
    with pytest.raises(ValueError, match="not a git ref"):
        source_from(SHA, "main")


def test_settings_are_checked_before_anything_runs() -> None:
    base = {"TRAINKIT_GIT_SHA": SHA, "TRAINKIT_GIT_REF": "refs/heads/main"}
    with pytest.raises(publish.ConfigError, match="TRAINKIT_REGISTRY is not set"):
        publish.settings(base)
    registry, source = publish.settings(base | {"TRAINKIT_REGISTRY": "myacr.azurecr.io/"})
    assert registry == "myacr.azurecr.io" and source.tags[-1] == "main"
    release = base | {"TRAINKIT_REGISTRY": "r", "TRAINKIT_GIT_REF": "refs/tags/v1.0.0"}
    with pytest.raises(publish.ConfigError, match="pinned by digest"):
        publish.settings(release | {"TRAINKIT_BASE_IMAGE": "debian:bookworm-slim"})
    pinned = "debian@sha256:" + "a" * 64
    assert publish.settings(release | {"TRAINKIT_BASE_IMAGE": pinned})[1].version == "1.0.0"
    with pytest.raises(publish.ConfigError, match="both"):
        publish.settings(base | {"TRAINKIT_REGISTRY": "r", "TRAINKIT_REGISTRY_USERNAME": "ci"})


def test_publish_without_a_registry_exits_2_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINKIT_")}
    result = subprocess.run([sys.executable, str(ROOT / "ci" / "publish.py")], env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "publish: error: TRAINKIT_REGISTRY is not set: set it to the registry to push to, e.g. myacr.azurecr.io"
    ]


def _trainer(tmp_path: Path) -> images.Image:
    folder = tmp_path / "trainers" / "toy"
    (folder / "__pycache__").mkdir(parents=True)
    (folder / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY . /opt/trainkit/trainer/\n")
    (folder / ".dockerignore").write_text("Dockerfile\n.dockerignore\n__pycache__/\n*.pyc\n")
    (folder / "toy_trainer.py").write_text("TRAINER = None\n")
    args = {"BASE_IMAGE": "r/trainkit-base:inputs-1", "TRAINER": "toy", "VERSION": "1", "REVISION": "a"}
    return images.Image("toy", "r/trainkit-toy", "t", str(folder), str(folder / "Dockerfile"), args, "base")


def test_content_digest_changes_with_what_the_image_is_made_of(tmp_path: Path) -> None:
    image = _trainer(tmp_path)
    folder = Path(image.context)
    first = images.content_digest(image)
    assert [p.name for p in images.input_files(image)] == ["Dockerfile", "toy_trainer.py"]
    # Not part of the image: caches, and labels that only record provenance.
    (folder / "__pycache__" / "toy_trainer.cpython-311.pyc").write_bytes(b"\0")
    (folder / "stale.pyc").write_bytes(b"\0")
    assert images.content_digest(replace(image, args=image.args | {"VERSION": "2", "REVISION": "b"})) == first
    # Part of it: code, new files, the exec bit, the Dockerfile, the base it is built on.
    changes = [
        lambda: (folder / "toy_trainer.py").write_text("TRAINER = None  # tuned\n"),
        lambda: (folder / "weights.txt").write_text("x"),
        lambda: (folder / "toy_trainer.py").chmod(0o755),
        lambda: (folder / "Dockerfile").write_text((folder / "Dockerfile").read_text() + "ENV X=1\n"),
    ]
    seen = {first}
    for change in changes:
        change()
        seen.add(images.content_digest(image))
    seen.add(images.content_digest(replace(image, args=image.args | {"BASE_IMAGE": "r/trainkit-base:inputs-2"})))
    assert len(seen) == 1 + len(changes) + 1


def test_base_inputs_cover_everything_its_dockerfile_copies() -> None:
    base = images.images()[0]
    files = {p.relative_to(ROOT).as_posix() for p in images.input_files(base)}
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    sources = [s for line in re.findall(r"^COPY (.+) \S+$", dockerfile, re.M) for s in line.split()]
    assert sources, "no COPY found"
    for source in sources:
        assert any(f == source or f.startswith(source.rstrip("/") + "/") for f in files), source
    # The bind-mounted wheelhouse is fixed by the lock's hashes, which is an input.
    assert "docker/requirements.lock" in files and "docker/Dockerfile" in files
    assert not any("__pycache__" in f or f.startswith("wheelhouse") for f in files)


class _EmptyRegistry:
    """A registry that holds nothing and records pushes (tags are not checked here)."""

    def __init__(self) -> None:
        self.env: dict[str, str] = {}
        self.pushed: list[str] = []

    def digest(self, ref: str) -> None:
        return None

    def build_flags(self) -> list[str]:
        return []

    def push(self, ref: str) -> str:
        self.pushed.append(ref)
        return "sha256:" + "0" * 64

    def add_tag(self, repository: str, digest: str, tag: str) -> None:
        pass


def test_files_edited_during_a_build_stop_the_publish(monkeypatch: pytest.MonkeyPatch) -> None:
    """A content tag must name what the image holds: an edit while building pushes nothing."""
    edits = {"count": 0}
    monkeypatch.setattr(images, "content_digest", lambda image: f"{image.key}-{edits['count']}".ljust(64, "0"))
    monkeypatch.setattr(images, "build_image", lambda *args, **kwargs: edits.update(count=edits["count"] + 1))
    registry = _EmptyRegistry()
    with pytest.raises(publish.RegistryError, match=r"^base: its input files changed while it was being built"):
        publish.publish("podman", registry, source_from(SHA, "refs/heads/main"), ["skeleton"], test=False)
    assert registry.pushed == []
    # Unedited, the same publish goes through (the check is not what stops it).
    monkeypatch.setattr(images, "build_image", lambda *args, **kwargs: None)
    planned = publish.publish("podman", registry, source_from(SHA, "refs/heads/main"), ["skeleton"], test=False)
    assert [p.image.key for p in planned] == ["base", "skeleton"] and len(registry.pushed) == 2


def test_manifest_written_by_publish_is_read_by_trainkit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINKIT_REGISTRY", "myacr.azurecr.io")
    digest = "sha256:" + "ab" * 32
    planned = [
        publish.Planned(replace(image, tag="inputs-x"), digest, built=image.key == "detector")
        for image in images.images()
    ]
    path = tmp_path / "dist" / "images.json"
    source = source_from(SHA, "refs/tags/v1.2.3")
    images.write_json(path, publish.manifest(planned, source, "myacr.azurecr.io", path))
    loaded = load_image_manifest(path)
    assert loaded.trainers == images.trainer_names() and loaded.version == "1.2.3"
    assert loaded.image_for("detector").reference == f"myacr.azurecr.io/trainkit-detector@{digest}"
    assert loaded.tags == ("sha-0123456789ab", "1.2.3") and loaded.sha == SHA
    with pytest.raises(
        UserError, match=r"no image for trainer 'segmenter' \(published: classifier, detector, hf_detector, skeleton\)"
    ):
        loaded.image_for("segmenter")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(schema="other"), "field 'schema' is 'other'"),
        (lambda d: d["images"]["detector"].update(digest="latest"), "images.detector.digest is 'latest'"),
        (lambda d: d["images"]["detector"].update(repository="r/x@sha256:1"), "images.detector.repository"),
        (lambda d: d.update(images={}), "field 'images' must be a non-empty object"),
    ],
)
def test_bad_manifests_are_named_field_by_field(tmp_path: Path, mutate, message: str) -> None:
    document = {
        "schema": "trainkit.images/v1",
        "images": {"detector": {"repository": "r/trainkit-detector", "digest": "sha256:" + "0" * 64}},
    }
    mutate(document)
    path = tmp_path / "images.json"
    path.write_text(json.dumps(document))
    with pytest.raises(UserError, match=re.escape(message)):
        load_image_manifest(path)


def test_missing_or_broken_manifest_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="image manifest not found"):
        load_image_manifest(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="not a readable JSON image manifest"):
        load_image_manifest(tmp_path / "bad.json")


@pytest.mark.parametrize(
    "history",
    [
        # podman 4: one JSON array, sizes as numbers
        json.dumps([{"CreatedBy": "CMD", "size": 0}, {"CreatedBy": "RUN pip  install", "size": 5000},
                    {"CreatedBy": "ADD rootfs", "size": 700}, {"CreatedBy": "COPY lock", "size": 20},
                    {"CreatedBy": "RUN apt-get", "size": 900}]),
        # docker: one JSON object a line, sizes as strings with --human=false
        "\n".join(json.dumps({"CreatedBy": c, "Size": s}) for c, s in
                  [("CMD", "0"), ("RUN pip  install", "5000"), ("ADD rootfs", "700"), ("COPY lock", "20"),
                   ("RUN apt-get", "900")]),
    ],
)  # fmt: skip
def test_image_size_reads_either_engines_history(monkeypatch: pytest.MonkeyPatch, history: str) -> None:
    import sizes

    answers = {"image": "6620\n", "history": history}
    monkeypatch.setattr(sizes, "_engine", lambda engine, *args, **kw: answers[args[0]])
    measured = sizes.image_size("podman", "r/x:1")
    assert measured["bytes"] == 6620
    assert [(la["bytes"], la["created_by"]) for la in measured["largest_layers"]] == [
        (5000, "RUN pip install"),
        (900, "RUN apt-get"),
        (700, "ADD rootfs"),
    ]


def test_the_manifest_records_sizes_where_the_engine_has_the_image(monkeypatch: pytest.MonkeyPatch) -> None:
    import sizes

    monkeypatch.setenv("TRAINKIT_REGISTRY", "myacr.azurecr.io")

    def engine(engine: str, *args: str, **kw) -> str:
        if args[-1].endswith(":inputs-skeleton"):
            raise RuntimeError("no such image")  # reused, and not in this engine's store
        return "1000\n" if args[0] == "image" else json.dumps([{"CreatedBy": "RUN x", "size": 900}])

    monkeypatch.setattr(sizes, "_engine", engine)
    registry = _EmptyRegistry()
    monkeypatch.setattr(registry, "digest", lambda ref: "sha256:" + "1" * 64 if "skeleton" in ref else None)
    monkeypatch.setattr(images, "build_image", lambda *args, **kwargs: None)
    monkeypatch.setattr(publish, "content_tag", lambda image: f"inputs-{image.key}")
    planned = publish.publish("podman", registry, source_from(SHA, "refs/heads/main"), ["skeleton"], test=False)
    entries = publish.manifest(planned, source_from(SHA, "refs/heads/main"), "r", Path("dist/images.json"))["images"]
    assert entries["base"]["size"] == {"bytes": 1000, "largest_layers": [{"bytes": 900, "created_by": "RUN x"}]}
    assert entries["skeleton"]["size"] is None

"""Publishing for real: ci/publish.py against a distribution registry (Debian's docker-registry) on
127.0.0.1 that demands a password, with podman as the engine.

One module-scoped publish; then: every tag resolves to the manifest's digest and pulls back, the
pulled detector trains on the demo data, a second publish pushes nothing, a trainer change pushes
only that trainer's layer, and the password is nowhere it should not be.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import vm

from trainkit.data.demo import write_demo_dataset
from trainkit.submit.image_manifest import load_image_manifest

ROOT = Path(__file__).resolve().parents[1]
SHA = "5eed0000000000000000000000000000000000c1"
REF = "refs/heads/feature/publish-test"
TAGS = ["sha-5eed00000000", "feature-publish-test"]

pytestmark = [pytest.mark.container, pytest.mark.slow]


@dataclass
class Registry:
    address: str
    storage: Path
    user: str
    password: str

    def blobs(self) -> set[str]:
        """Every blob the registry stores (layers, configs and manifests)."""
        root = self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256"
        return {p.name for p in root.glob("*/*") if (p / "data").is_file()} if root.is_dir() else set()

    def blob(self, digest: str) -> bytes:
        return (self.storage / "docker/registry/v2/blobs/sha256" / digest[:2] / digest / "data").read_bytes()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, podman_env: dict[str, str]) -> Registry:
    """A registry on 127.0.0.1 with htpasswd (bcrypt) authentication; stopped and deleted afterwards."""
    import bcrypt

    folder = tmp_path_factory.mktemp("registry")
    user, password = "ci-publisher", secrets.token_urlsafe(18)
    (folder / "htpasswd").write_text(f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()}\n")
    with vm.local_registry(folder, folder / "htpasswd") as address:
        yield Registry(address, folder / "store", user, password)


@dataclass
class Run:
    code: int
    out: str
    err: str


def run_publish(podman_env: dict[str, str], registry: Registry, root: Path, manifest: Path, *args: str) -> Run:
    env = {
        **podman_env,
        "TRAINKIT_REGISTRY": registry.address,
        "TRAINKIT_REGISTRY_USERNAME": registry.user,
        "TRAINKIT_REGISTRY_PASSWORD": registry.password,
        "TRAINKIT_REGISTRY_INSECURE": "1",
        "TRAINKIT_GIT_SHA": SHA,
        "TRAINKIT_GIT_REF": REF,
    }
    command = [sys.executable, str(root / "ci" / "publish.py"), "--engine", "podman", "--manifest", str(manifest)]
    result = subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=2400)
    return Run(result.returncode, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> dict[str, str]:
    """An auth file for the test's own podman/skopeo commands (the publish runs log in by themselves)."""
    folder = tmp_path_factory.mktemp("test-auth")
    env = {**os.environ, "REGISTRY_AUTH_FILE": str(folder / "auth.json")}
    subprocess.run(
        ["podman", "login", "--tls-verify=false", "-u", registry.user, "--password-stdin", registry.address],
        input=registry.password, text=True, env=env, check=True, capture_output=True,
    )  # fmt: skip
    return env


@pytest.fixture(scope="module")
def first(podman_env: dict[str, str], registry: Registry, tmp_path_factory: pytest.TempPathFactory):
    """The first publish of every image; the images it tagged locally are removed afterwards."""
    auth_dirs = set(Path(tempfile.gettempdir()).glob("trainkit-auth-*"))
    manifest = tmp_path_factory.mktemp("dist") / "images.json"
    run = run_publish(podman_env, registry, ROOT, manifest)
    assert run.code == 0, run.err[-5000:]
    yield run, manifest, auth_dirs
    refs = subprocess.run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True)
    mine = [r for r in refs.stdout.split() if r.startswith(registry.address)]
    subprocess.run(["podman", "rmi", "--force", *mine], capture_output=True)


TRAINERS = ("classifier", "detector", "hf_detector", "skeleton")


def test_every_tag_resolves_to_the_manifest_digest_and_pulls_back(first, registry: Registry, session) -> None:
    run, path, _ = first
    manifest = load_image_manifest(path)
    document = json.loads(path.read_text())
    assert set(manifest.images) == {"base", *TRAINERS}
    assert document["tags"] == TAGS and all(entry["built"] for entry in document["images"].values())
    printed = dict(line.split("\t") for line in run.out.splitlines())
    for key, image in manifest.images.items():
        assert printed[key] == image.reference
        assert image.repository == f"{registry.address}/trainkit-{key}"
        for tag in [*TAGS, document["images"][key]["content_tag"]]:
            pulled = subprocess.run(
                ["podman", "pull", "--tls-verify=false", f"{image.repository}:{tag}"],
                env=session, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            assert pulled.returncode == 0, pulled.stderr
            digests = subprocess.run(
                ["podman", "image", "inspect", "--format", "{{json .RepoDigests}}", f"{image.repository}:{tag}"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            assert image.reference in json.loads(digests), (tag, digests)
    # What each trainer image holds of weights, read from the image itself: here nothing (TRAINKIT_WEIGHTS is
    # empty), where a baked checkpoint's commit and sha256 would be.
    nothing = {"torchvision": [], "hf": {}}
    assert {k: e["weights_files"] for k, e in document["images"].items()} == {
        "base": None,
        **{trainer: nothing for trainer in TRAINERS},
    }
    # A package list for each image built, as CycloneDX, holding what the base installs.
    sbom = json.loads((path.parent / document["images"]["detector"]["sbom"]).read_text())
    names = {c["name"].lower() for c in sbom["components"]}
    assert sbom["bomFormat"] == "CycloneDX" and {"torch", "nvidia-dali-cuda130", "trainkit", "python3"} <= names
    assert sbom["metadata"]["component"]["name"] == manifest.image_for("detector").reference


def test_pulled_detector_trains_on_the_demo_data(first, podman_env, session, tmp_path: Path) -> None:
    manifest = load_image_manifest(first[1])
    data = write_demo_dataset(tmp_path / "demo", images=8, seed=3)
    out = tmp_path / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    command = [
        "podman", *podman_env["TRAINKIT_ENGINE_FLAGS"].split(), "run", "--rm", "-v", f"{data.root}:/data:ro",
        "-v", f"{out}:/outputs", manifest.image_for("detector").reference, "train", "--imageset",
        "/data/imageset_studio", "--labelset", "/data/labels.csv", "--output-dir", "/outputs", "--device", "cpu",
        "--set", "epochs=1", "--set", "batch_size=2", "--set", "image_size=64", "--set", "weights=",
    ]  # fmt: skip
    # These VMs bake no weights (TRAINKIT_WEIGHTS is empty): the manifest says so, and the run starts afresh.
    assert manifest.image_for("detector").weights == ()
    result = subprocess.run(command, env=session, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "model" / "MLmodel").is_file()


def test_second_publish_with_no_change_pushes_nothing(first, podman_env, registry: Registry, tmp_path: Path) -> None:
    before = registry.blobs()
    again = run_publish(podman_env, registry, ROOT, tmp_path / "images.json")
    assert again.code == 0, again.err[-3000:]
    assert registry.blobs() == before
    assert again.err.count(": reuse sha256:") == 5 and " build" not in again.err
    old, new = json.loads(first[1].read_text())["images"], json.loads((tmp_path / "images.json").read_text())["images"]
    assert {k: v["digest"] for k, v in old.items()} == {k: v["digest"] for k, v in new.items()}
    assert not any(entry["built"] for entry in new.values())


def _copy_checkout(target: Path) -> Path:
    """The repository's files (tracked and untracked, not ignored) in `target`; the wheelhouse linked."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True,
        check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / "wheelhouse").symlink_to(ROOT / "wheelhouse", target_is_directory=True)
    return target


def test_a_trainer_change_pushes_only_that_trainers_layer(first, podman_env, registry: Registry, tmp_path) -> None:
    checkout = _copy_checkout(tmp_path / "checkout")
    trainer = checkout / "trainers" / "skeleton" / "skeleton_trainer.py"
    trainer.write_text(trainer.read_text() + "\n# tuned\n")
    before = registry.blobs()
    manifest = tmp_path / "images.json"
    run = run_publish(podman_env, registry, checkout, manifest)
    assert run.code == 0, run.err[-3000:]
    assert run.err.count(": reuse sha256:") == 4 and "skeleton: " in run.err and ": build" in run.err
    images = json.loads(manifest.read_text())["images"]
    assert [k for k, v in images.items() if v["built"]] == ["skeleton"]
    added = registry.blobs() - before
    # What was pushed: the new image's manifest, its config, and exactly one layer: the trainer's.
    new_manifest = json.loads(registry.blob(images["skeleton"]["digest"].split(":")[1]))
    layers = [layer["digest"].split(":")[1] for layer in new_manifest["layers"]]
    config = new_manifest["config"]["digest"].split(":")[1]
    assert added == {images["skeleton"]["digest"].split(":")[1], config, layers[-1]}
    assert set(layers[:-1]) <= before
    old = json.loads(first[1].read_text())["images"]
    for unchanged in ("base", "classifier", "detector", "hf_detector"):
        assert images[unchanged]["digest"] == old[unchanged]["digest"]
    assert images["skeleton"]["digest"] != old["skeleton"]["digest"]


def test_the_password_is_in_no_log_file_or_image(first, registry: Registry) -> None:
    run, manifest, auth_dirs_before = first
    secret, basic = registry.password, base64.b64encode(f"{registry.user}:{registry.password}".encode()).decode()
    assert secret not in run.out + run.err
    for path in manifest.parent.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text()
    for ref in load_image_manifest(manifest).images.values():
        for what in (["image", "inspect"], ["history", "--no-trunc"]):
            shown = subprocess.run(["podman", *what, ref.reference], capture_output=True, text=True, check=True).stdout
            assert secret not in shown
    # The login was in a private auth file that is gone; the user's own auth files never saw it.
    assert set(Path(tempfile.gettempdir()).glob("trainkit-auth-*")) == auth_dirs_before
    for default in [Path(os.environ.get("XDG_RUNTIME_DIR", "/run/user/0")) / "containers" / "auth.json",
                    Path("/run/containers/0/auth.json"), Path.home() / ".docker" / "config.json"]:  # fmt: skip
        if default.is_file():
            assert basic not in default.read_text() and secret not in default.read_text()


def test_an_image_that_fails_its_test_is_not_pushed(first, podman_env, registry: Registry, tmp_path) -> None:
    checkout = _copy_checkout(tmp_path / "checkout")
    trainer = checkout / "trainers" / "skeleton" / "skeleton_trainer.py"
    trainer.write_text(trainer.read_text().replace("def build_model(", "def build_model_renamed(", 1))
    before = registry.blobs()
    run = run_publish(podman_env, registry, checkout, tmp_path / "images.json")
    assert run.code == 1, run.err[-3000:]
    errors = [line for line in run.err.splitlines() if line.startswith("publish: error:")]
    assert len(errors) == 1 and "trainkit-skeleton" in errors[0] and "smoke test exited" in errors[0]
    assert registry.blobs() == before and not (tmp_path / "images.json").exists()

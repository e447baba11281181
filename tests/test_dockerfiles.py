"""The build definition, read without building: lint, discovery of trainers, the lock's hashes."""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = [ROOT / "docker" / "Dockerfile", *sorted((ROOT / "trainers").glob("*/Dockerfile"))]


def test_hadolint_clean() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run([str(hadolint), *map(str, DOCKERFILES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_trainer_folder_is_an_image(tmp_path: Path) -> None:
    listed = json.loads(subprocess.run([sys.executable, str(ROOT / "ci" / "images.py"), "list"],
                                       capture_output=True, text=True, check=True).stdout)  # fmt: skip
    names = [image["name"].split("/")[-1] for image in listed]
    trainers = sorted(p.parent.name for p in (ROOT / "trainers").glob("*/*_trainer.py"))
    assert names == ["trainkit-base"] + [f"trainkit-{t}" for t in trainers]
    for image in listed[1:]:
        assert image["args"]["BASE_IMAGE"] == listed[0]["ref"] and image["context"].endswith(image["args"]["TRAINER"])
    bake = json.loads(subprocess.run([sys.executable, str(ROOT / "ci" / "images.py"), "bake"],
                                     capture_output=True, text=True, check=True).stdout)  # fmt: skip
    assert bake["group"]["default"]["targets"] == names


def test_lock_pins_every_package_with_a_hash() -> None:
    text = (ROOT / "docker" / "requirements.lock").read_text()
    entries = re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+) \\\n    --hash=sha256:([0-9a-f]{64})$", text, re.M)
    names = {name.lower() for name, _, _ in entries}
    assert {"torch", "torchvision", "nvidia-dali-cuda130", "mlflow-skinny", "azureml-mlflow", "pandas"} <= names
    # What the image does not run stays out: torch.compile's triton, MLflow's server side and what it pulls in.
    assert not names & {"triton", "mlflow", "flask", "gunicorn", "scikit-learn", "scipy"}
    assert ("torch", "2.14.1") in {(n.lower(), v) for n, v, _ in entries}
    assert len(entries) == text.count("--hash=")


def test_trainer_images_copy_only_their_folder() -> None:
    for dockerfile in DOCKERFILES[1:]:
        text = dockerfile.read_text()
        assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
        assert re.findall(r"^COPY (.*)$", text, re.M) == [". /opt/trainkit/trainer/"]
        assert "ENV TRAINKIT_TRAINER=/opt/trainkit/trainer" in text


def test_trainer_images_bake_what_their_defaults_start_from(monkeypatch) -> None:
    """Each Dockerfile's ARG WEIGHTS is its trainer's default `weights`, baked before its code is copied."""
    sys.path.insert(0, str(ROOT / "ci"))
    import images

    from trainkit.params import parse_params
    from trainkit.training.discovery import load_trainer

    monkeypatch.delenv("TRAINKIT_WEIGHTS", raising=False)
    for image in images.images()[1:]:
        text = Path(image.dockerfile).read_text()
        assert text.index("trainkit weights download ${WEIGHTS}") < text.index("COPY . /opt/trainkit/trainer/")
        default = parse_params(load_trainer(image.context).trainer.Params, {}).weights
        assert images.baked_weights(image) == ([default.removeprefix("torchvision:")] if default else []), image.key
    monkeypatch.setenv("TRAINKIT_WEIGHTS", "")
    assert {images.baked_weights(image) == [] for image in images.images()[1:]} == {True}

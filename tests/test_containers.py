"""The images, built and run for real with podman, as a user runs them with `docker run`.

Podman on these VMs needs the settings of the `podman_env` fixture (conftest.py); the Dockerfiles
know nothing of them. Skipped where podman is missing, except in CI, where that is a failure.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import vm

from trainkit.data.demo import DemoDataset, write_demo_dataset
from trainkit.weights import ENV_WEIGHTS_URL

ROOT = Path(__file__).resolve().parents[1]
RUNC = ROOT / "ci" / "podman" / "runc"
TAG = "citest"
# The detector fine-tunes COCO by default; these VMs cannot download it, so its image here bakes none.
QUICK = ["--device", "cpu", "--set", "epochs=1", "--set", "batch_size=2", "--set", "image_size=64", "--set", "weights="]

pytestmark = [pytest.mark.container, pytest.mark.slow]


@pytest.fixture(scope="session")
def images(podman_env: dict[str, str]) -> dict[str, str]:
    """Build the base and every trainer image once per session; remove them afterwards."""
    env = {**podman_env, "TRAINKIT_REGISTRY": "localhost", "TRAINKIT_TAG": TAG}
    built = subprocess.run(
        [sys.executable, str(ROOT / "ci" / "images.py"), "build", "--engine", "podman"],
        env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-4000:]
    refs = built.stdout.split()
    yield {ref.split("/")[-1].split(":")[0].removeprefix("trainkit-"): ref for ref in refs}
    subprocess.run(["podman", "rmi", "--force", *refs], capture_output=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> DemoDataset:
    return write_demo_dataset(tmp_path_factory.mktemp("container-demo") / "demo", images=8, seed=2)


def podman(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", "--runtime", str(RUNC), *args], capture_output=True, text=True, timeout=timeout)


def writable(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)  # the image runs as uid 1000, as a user's `docker run` would
    return path


def train_args(data: DemoDataset, out: Path, *, studio: bool) -> list[str]:
    """Mounts (data read-only, outputs read-write) and, for the datastore layout, DATASTORE_NAME."""
    env = [] if studio else ["-e", f"DATASTORE_NAME={data.datastore_name}"]
    mounts = ["-v", f"{data.root}:/data:ro", "-v", f"{out}:/outputs"]
    return [*mounts, *env]


@pytest.mark.parametrize("studio", [False, True], ids=["datastore-folder", "ml-studio"])
def test_detector_image_trains_on_mounted_data(images, data: DemoDataset, tmp_path: Path, studio: bool) -> None:
    out = writable(tmp_path / "out")
    imageset = "/data/imageset_studio" if studio else "/data/imageset"
    result = podman(
        "run", "--rm", *train_args(data, out, studio=studio), images["detector"],
        "train", "--imageset", imageset, "--labelset", "/data/labels.csv", "--output-dir", "/outputs", *QUICK,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "model" / "MLmodel").is_file() and (out / "metrics.json").is_file()
    assert json.loads((out / "run.json").read_text())["trainer"] == "detector"
    assert (out / "metrics.json").stat().st_uid == 1000  # written by the image's non-root user


def test_images_run_as_non_root_with_python_and_bash(images) -> None:
    for ref in images.values():
        result = podman(
            "run", "--rm", "--entrypoint", "bash", ref, "-c", "id -u && python --version && trainkit --version"
        )
        assert result.returncode == 0, result.stderr
        uid, python, version = result.stdout.split("\n")[:3]
        assert uid == "1000" and python.startswith("Python 3.11") and version.startswith("trainkit ")


def test_bad_dataset_exits_2_with_one_line(images, data: DemoDataset, tmp_path: Path) -> None:
    out = writable(tmp_path / "out")
    result = podman(
        "run", "--rm", *train_args(data, out, studio=True), "-e", "DATASTORE_NAME=main_datastore", images["detector"],
        "train", "--imageset", "/data/imageset", "--labelset", "/data/labels.csv", "--output-dir", "/outputs", *QUICK,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("trainkit: error:")]
    assert len(errors) == 1 and "has no folder 'main_datastore'" in errors[0] and "DATASTORE_NAME" in errors[0]
    assert (out / "failure.txt").read_text().strip() == errors[0].removeprefix("trainkit: error: ")


def test_image_runs_as_azureml_runs_it_and_finds_the_datastore_folder(images, data: DemoDataset, tmp_path) -> None:
    """AzureML runs the job's command with bash, not the ENTRYPOINT; DATASTORE_NAME left unset."""
    out = writable(tmp_path / "out")
    command = (
        "cd /tmp && trainkit train --imageset /data/imageset --labelset /data/labels.csv --output-dir /outputs "
        + " ".join(QUICK)
    )
    result = podman(
        "run", "--rm", "-v", f"{data.root}:/data:ro", "-v", f"{out}:/outputs", "--entrypoint", "bash",
        images["detector"], "-c", command,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"image paths found under datastore folder '{data.datastore_name}'" in result.stderr
    assert (out / "model" / "MLmodel").is_file()


def test_docker_stop_leaves_a_checkpoint_and_a_second_run_resumes(images, data: DemoDataset, tmp_path: Path) -> None:
    out = writable(tmp_path / "out")
    name = f"trainkit-stop-{os.getpid()}"
    command = [
        *train_args(data, out, studio=True), images["skeleton"], "train", "--imageset", "/data/imageset_studio",
        "--labelset", "/data/labels.csv", "--output-dir", "/outputs", "--log-every", "1", "--checkpoint-every", "2",
        "--device", "cpu", "--set", "batch_size=2", "--set", "image_size=64", "--set", "max_steps=200",
    ]  # fmt: skip
    assert podman("run", "-d", "--name", name, *command).returncode == 0
    try:
        deadline = time.monotonic() + 300
        while "step 3:" not in podman("logs", name).stderr:
            assert time.monotonic() < deadline, podman("logs", name).stderr[-3000:]
            time.sleep(0.5)
        assert podman("stop", "-t", "120", name).returncode == 0
        code = podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
        assert code == "3", podman("logs", name).stderr[-3000:]
    finally:
        podman("rm", "-f", name)
    assert (out / "checkpoints" / "last.pt").is_file()
    # A resumed run may train for a different length: stop early this time.
    resumed = podman("run", "--rm", *command[:-2], "--set", "max_steps=6", "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming at step" in resumed.stderr


def test_metrics_and_model_reach_a_real_mlflow_server(images, data: DemoDataset, tmp_path: Path) -> None:
    port = vm.free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import mlflow

        uri = f"http://127.0.0.1:{port}"
        vm.wait_for_port(port, server, 120)
        out = writable(tmp_path / "out")
        result = podman(
            "run", "--rm", "--network", "host",
            "-e", f"MLFLOW_TRACKING_URI={uri}", "-e", "MLFLOW_EXPERIMENT_NAME=served",
            *train_args(data, out, studio=True), images["detector"], "train", "--imageset", "/data/imageset_studio",
            "--labelset", "/data/labels.csv", "--output-dir", "/outputs", *QUICK,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        mlflow.set_tracking_uri(uri)
        runs = mlflow.search_runs(experiment_names=["served"], output_format="list")
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        assert "train/loss" in runs[0].data.metrics
        logged = mlflow.search_logged_models(experiment_ids=[runs[0].info.experiment_id], output_format="list")
        assert logged and logged[0].source_run_id == runs[0].info.run_id
        assert type(mlflow.pytorch.load_model(logged[0].model_uri)).__name__ == "FasterRCNN"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_trainer_images_bake_weights_in_a_layer_code_changes_reuse(
    images, podman_env: dict[str, str], weights_server, tmp_path: Path
) -> None:
    buffer = io.BytesIO()
    torch.save({"layer.weight": torch.ones(2, 2)}, buffer)
    body = buffer.getvalue()
    name = f"team-weights-{hashlib.sha256(body).hexdigest()[:10]}.pth"
    weights_server.files = {name: body}
    mirror = os.environ[ENV_WEIGHTS_URL]
    context = tmp_path / "skeleton"
    shutil.copytree(ROOT / "trainers" / "skeleton", context)
    tags = []

    def build(tag: str, *args: str) -> subprocess.CompletedProcess:
        tags.append(f"localhost/trainkit-bake:{tag}")
        command = [
            "podman", *podman_env["TRAINKIT_ENGINE_FLAGS"].split(), "build",
            *podman_env["TRAINKIT_BUILD_FLAGS"].split(), "-t", tags[-1], "--build-arg", f"BASE_IMAGE={images['base']}",
            *args, str(context),
        ]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=600)

    try:
        first = build("one", "--build-arg", f"WEIGHTS={mirror}{name}")
        assert first.returncode == 0, first.stderr[-3000:]
        listed = podman("run", "--rm", "--entrypoint", "bash", tags[-1], "-c",
                        'ls "$TORCH_HOME/hub/checkpoints"; echo "$TRAINKIT_WEIGHTS_BAKED"')  # fmt: skip
        assert listed.stdout.split() == [name, f"{mirror}{name}"], listed.stderr
        # A code change reuses the weights layer: with the server gone, a new download would fail.
        (context / "skeleton_trainer.py").write_text((context / "skeleton_trainer.py").read_text() + "# changed\n")
        weights_server.files = {}
        second = build("two", "--build-arg", f"WEIGHTS={mirror}{name}")
        assert second.returncode == 0, second.stderr[-3000:]
        # torchvision's name from a mirror that serves other bytes: the build stops, naming the hash check.
        small = "MobileNet_V3_Small_Weights.IMAGENET1K_V1"
        weights_server.files = {"mobilenet_v3_small-047dcff4.pth": body}
        third = build("three", "--build-arg", f"WEIGHTS={small}", "--build-arg", f"WEIGHTS_URL={mirror}")
        assert third.returncode != 0
        assert f"trainkit: error: {small}: {mirror}mobilenet_v3_small-047dcff4.pth invalid hash value" in third.stderr
    finally:
        subprocess.run(["podman", "rmi", "--force", *tags], capture_output=True)

"""The images, built and run for real with podman, as a user runs them with `docker run`.

Podman on these VMs needs the settings of the `podman_env` fixture (conftest.py); the Dockerfiles
know nothing of them. Skipped where podman is missing, except in CI, where that is a failure.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import vm
import yaml

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


def test_hf_detector_image_adds_transformers_alone_and_fine_tunes_offline(images, data: DemoDataset, tmp_path) -> None:
    from hf_tiny import tiny_checkpoint

    checkpoint = tiny_checkpoint("rt_detr", tmp_path / "checkpoint", queries=84)
    for path in checkpoint.iterdir():
        path.chmod(0o644)  # safetensors writes 0600: the image's user 1000 must read it, as a user's mount allows
    checkpoint.chmod(0o755)
    base = podman("run", "--rm", "--entrypoint", "python", images["base"], "-c", "import transformers")
    assert base.returncode == 1 and "No module named 'transformers'" in base.stderr  # the base stays without
    check = "import os, transformers; print(transformers.__version__, os.environ['HF_HUB_OFFLINE'])"
    versions = podman("run", "--rm", "--entrypoint", "python", images["hf_detector"], "-c", check)
    assert versions.returncode == 0, versions.stderr
    version, offline = versions.stdout.split()
    assert tuple(map(int, version.split(".")[:2])) >= (5, 18) and offline == "1"
    out = writable(tmp_path / "out")
    result = podman(
        "run", "--rm", "--network", "none", *train_args(data, out, studio=True), "-v", f"{checkpoint}:/checkpoint:ro",
        images["hf_detector"], "train", "--imageset", "/data/imageset_studio", "--labelset", "/data/labels.csv",
        "--output-dir", "/outputs", "--device", "cpu", "--set", "weights=/checkpoint", "--set", "image_size=64",
        "--set", "batch_size=2", "--set", "max_steps=2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "model" / "MLmodel").is_file() and (out / "model.onnx").is_file()
    assert "every tensor loaded but the class layers" in result.stderr


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
    stopped_at = torch.load(out / "checkpoints" / "last.pt", weights_only=False)["step"]
    # A resumed run may train for a different length: a few steps past the stop this time.
    resumed = podman("run", "--rm", *command[:-2], "--set", f"max_steps={stopped_at + 3}", "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming at step {stopped_at}" in resumed.stderr


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


# An AzureML job's exact command, in its image, where AzureML puts things.
#
# `trainkit submit --dry-run` writes the job YAML; here the YAML's command runs as AzureML's common
# runtime runs a command job: with bash (not the image's ENTRYPOINT), in the job's working directory
# `/mnt/azureml/cr/j/<job>/exe/wd` (whose `outputs/` AzureML uploads afterwards), inputs mounted
# read-only and outputs read-write under `/mnt/azureml/cr/j/<job>/cap/data-capability/wd/`
# (`INPUT_<name>` for inputs, the output's name for outputs; a `uri_file` input is the file inside
# its mount), `${{inputs.*}}` / `${{outputs.*}}` replaced by those paths, and the environment
# variables the platform sets: the job's own, AZUREML_*, AZURE_ML_INPUT_* / AZURE_ML_OUTPUT_*, and
# MLflow's run (here a local store, as the workspace's tracking server is out of reach). A job with a
# PyTorch distribution runs the command once per process with the launcher's RANK, LOCAL_RANK,
# WORLD_SIZE, MASTER_ADDR and MASTER_PORT. A preemption restart is the same job again: a fresh
# working directory, the same checkpoint mount and MLflow run.

JOB = "trainkit-ci-job"
CAPABILITY = f"/mnt/azureml/cr/j/{JOB}/cap/data-capability/wd"
WORKING_DIR = f"/mnt/azureml/cr/j/{JOB}/exe/wd"
STORE = "/mnt/trainkit-mlflow"  # where this test's MLflow store is mounted (AzureML's is a server)
MASTER_PORT = 6105  # the port AzureML's PyTorch launcher gives rank 0
JOB_QUICK = ["--set", "batch_size=2", "--set", "image_size=64", "--set", "epochs=2"]


def pinned(images: dict[str, str], trainer: str) -> str:
    """The trainer image as a job names it: repository@sha256:digest (podman knows local images by it)."""
    ref = images[trainer]
    digest = podman("image", "inspect", "--format", "{{.Digest}}", ref).stdout.strip()
    assert digest.startswith("sha256:"), digest
    return f"{ref.rsplit(':', 1)[0]}@{digest}"


def dry_run(run_cli, tmp_path: Path, image: str, data: DemoDataset, *extra: object) -> dict:
    """The job YAML `trainkit submit --dry-run` writes for the demo pair, read back (run from the
    repository root, where trainers/skeleton lets submit check the hyperparameters)."""
    folder = tmp_path / "job"
    result = run_cli(
        "submit", "--trainer", "skeleton", "--image", image, "--labelset", data.labels_csv,
        "--imageset", data.imageset_datastore, "--datastore-name", data.datastore_name, "--compute", "cpu-cluster",
        "--dry-run", folder, *JOB_QUICK, *extra,
    )  # fmt: skip
    assert result.code == 0, result.err
    [spec] = sorted(folder.glob("job-*.yml"))
    return yaml.safe_load(spec.read_text())


def mlflow_run(store: Path) -> str:
    """A run in a local store, as AzureML creates the job's run before the command starts."""
    import mlflow

    store.mkdir(parents=True, exist_ok=True)
    client = mlflow.MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.create_experiment("trainkit-skeleton", artifact_location=f"file://{STORE}/artifacts")
    run_id = client.create_run(experiment).info.run_id
    for path in [store, *store.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)  # the image's user (uid 1000) writes it
    return run_id


def azureml_command(job: dict, host: dict[str, Path]) -> tuple[list[str], list[str], str]:
    """(mounts, environment, command) for podman, from the job's YAML and the host folders standing for
    its inputs and outputs."""
    mounts, env, paths = [], dict(job.get("environment_variables") or {}), {}
    for name, spec in job["inputs"].items():
        source = Path(spec["path"])
        mount = f"{CAPABILITY}/INPUT_{name}"
        folder = source if spec["type"] != "uri_file" else source.parent
        mounts += ["-v", f"{folder}:{mount}:ro"]
        paths[f"inputs.{name}"] = mount if spec["type"] != "uri_file" else f"{mount}/{source.name}"
        env[f"AZURE_ML_INPUT_{name}"] = paths[f"inputs.{name}"]
    for name, spec in job["outputs"].items():
        assert spec["mode"] == "rw_mount"
        mount = f"{CAPABILITY}/{name}"
        mounts += ["-v", f"{writable(host[name])}:{mount}"]
        paths[f"outputs.{name}"] = env[f"AZURE_ML_OUTPUT_{name}"] = mount
    mounts += ["-v", f"{writable(host['wd'])}:{WORKING_DIR}", "-v", f"{host['store']}:{STORE}"]
    command = re.sub(r"\$\{\{\s*([\w.]+)\s*\}\}", lambda m: shlex.quote(paths[m.group(1)]), job["command"])
    assert "${{" not in command
    env |= {
        "AZUREML_RUN_ID": host["run_id"], "AZUREML_ARM_SUBSCRIPTION": "00000000-0000-0000-0000-000000000000",
        "AZUREML_ARM_RESOURCEGROUP": "rg", "AZUREML_ARM_WORKSPACE_NAME": "ws",
        "AZUREML_ARM_PROJECT_NAME": job["experiment_name"], "AZUREML_CR_EXECUTION_WORKING_DIR_PATH": WORKING_DIR,
        "MLFLOW_TRACKING_URI": f"sqlite:///{STORE}/mlflow.db", "MLFLOW_RUN_ID": host["run_id"],
        "MLFLOW_EXPERIMENT_NAME": job["experiment_name"],
    }  # fmt: skip
    return mounts, [a for k, v in env.items() for a in ("-e", f"{k}={v}")], command


def launched(job: dict, command: str) -> str:
    """The command as AzureML's PyTorch launcher runs it on one node: once per process, each with its
    rank; without a distribution, once."""
    processes = (job.get("distribution") or {}).get("process_count_per_instance", 1)
    if processes == 1:
        return command
    world = processes * job["resources"].get("instance_count", 1)
    launcher = (
        f"WORLD_SIZE={world} LOCAL_WORLD_SIZE={processes} NODE_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT={MASTER_PORT}"
    )
    ranks = [f"RANK={r} LOCAL_RANK={r} {launcher} {command} & pids+=($!)" for r in range(processes)]
    wait = 'code=0; for p in "${pids[@]}"; do wait "$p" || code=$?; done; exit $code'
    return "pids=(); " + "; ".join(ranks) + "; " + wait


def run_job(job: dict, host: dict, *, detach: str = "") -> object:
    mounts, env, command = azureml_command(job, host)
    shm = ["--shm-size", job["resources"]["shm_size"]] if job["resources"].get("shm_size") else []
    args = [*(["-d", "--name", detach] if detach else ["--rm"]), *mounts, *env, *shm, "-w", WORKING_DIR,
            "--entrypoint", "bash", job["environment"]["image"], "-c", launched(job, command)]  # fmt: skip
    return podman("run", *args, timeout=900)


def test_the_job_command_trains_in_its_image_and_a_restart_resumes(
    images, data, run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    image = pinned(images, "skeleton")
    long = ("--set", "epochs=100", "--set", "max_steps=400", "--", "--checkpoint-every", "2", "--log-every", "1")
    job = dry_run(run_cli, tmp_path, image, data, *long)
    assert job["environment"]["image"] == image
    host = {"checkpoints": tmp_path / "checkpoints", "wd": tmp_path / "wd", "store": tmp_path / "store"}
    host["run_id"] = mlflow_run(host["store"])
    name = f"trainkit-azureml-{os.getpid()}"
    assert run_job(job, host, detach=name).returncode == 0
    try:  # preempted: the node vanishes once a checkpoint is on the output mount
        deadline = time.monotonic() + 600
        while not (host["checkpoints"] / "last.pt").is_file() or "step 5:" not in podman("logs", name).stderr:
            assert time.monotonic() < deadline, podman("logs", name).stderr[-3000:]
            time.sleep(0.5)
        podman("kill", "--signal", "KILL", name)
        podman("wait", name)
    finally:
        podman("rm", "-f", name)
    assert not (host["wd"] / "outputs" / "model").exists()
    from trainkit.training.checkpoint import load_latest_checkpoint

    saved = load_latest_checkpoint(host["checkpoints"])["step"]  # the last whole one: a kill may tear one
    # The restart: the same job, a fresh working directory, the checkpoint mount as it was; told to stop
    # a few steps on (wherever the kill landed) rather than after its 400.
    host["wd"], end = tmp_path / "wd-restart", saved + 4
    short = {**job, "command": job["command"].replace("max_steps=400", f"max_steps={end}")}
    restarted = run_job(short, host)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert f"resuming at step {saved}" in restarted.stderr, restarted.stderr[-3000:]
    outputs = host["wd"] / "outputs"  # what AzureML uploads as the job's outputs
    assert (outputs / "model" / "MLmodel").is_file()
    assert json.loads((outputs / "metrics.json").read_text())["step"] == end
    assert json.loads((outputs / "run.json").read_text())["mlflow_run_id"] == host["run_id"]
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{host['store'] / 'mlflow.db'}")
    steps = [m.step for m in client.get_metric_history(host["run_id"], "train/loss")]
    assert max(steps) == end and min(steps) < saved, steps  # one MLflow run across the restart


def test_a_distributed_job_runs_one_process_per_rank(
    images, data, run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    job = dry_run(run_cli, tmp_path, pinned(images, "skeleton"), data, "--processes-per-node", "2",
                  "--set", "max_steps=4")  # fmt: skip
    assert job["distribution"] == {"type": "pytorch", "process_count_per_instance": 2}
    host = {"checkpoints": tmp_path / "checkpoints", "wd": tmp_path / "wd", "store": tmp_path / "store"}
    host["run_id"] = mlflow_run(host["store"])
    result = run_job(job, host)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processes, batch 2 each: global batch 4" in result.stderr
    outputs = host["wd"] / "outputs"
    assert (outputs / "model" / "MLmodel").is_file() and json.loads((outputs / "metrics.json").read_text())["step"] == 4
    assert sorted(p.name for p in host["checkpoints"].glob("*.pt")) == ["last.pt", "previous.pt"]

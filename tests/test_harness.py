"""The harness end to end on the CPU: real training, MLflow, checkpoints, SIGTERM and SIGKILL resume."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from trainkit.data.demo import DemoDataset

ROOT = Path(__file__).resolve().parents[1]
SKELETON = ROOT / "trainers" / "skeleton"
DETECTOR = ROOT / "trainers" / "detector"
CLASSIFIER = ROOT / "trainers" / "classifier"
TRAINKIT = Path(sys.executable).with_name("trainkit")

pytestmark = pytest.mark.slow


def train_command(demo: DemoDataset, out: Path, trainer: Path, *extra: object) -> list[str]:
    return [
        str(TRAINKIT), "train", "--trainer", str(trainer),
        "--imageset", str(demo.imageset_studio), "--labelset", str(demo.labels_csv),
        "--output-dir", str(out), "--device", "cpu", *map(str, extra),
    ]  # fmt: skip


def run(command: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": "", "TRAINKIT_TRAINER": ""}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["model"]


def assert_evaluate_agrees(demo: DemoDataset, out: Path, scratch: Path, val_fraction: float, batch_size: int) -> None:
    """`trainkit evaluate` of a run's saved model on the run's validation images reports exactly the
    validation metrics the run wrote for that model: one evaluator, fed the same way, for both."""
    from trainkit.data.dataset import DataConfig, DatasetOptions, DatasetPair, load_dataset

    data = load_dataset(DataConfig(DatasetPair(demo.imageset_studio, demo.labels_csv), val_fraction=val_fraction,
                                   options=DatasetOptions(datastore_name="")))  # fmt: skip
    labels = pd.read_csv(demo.labels_csv)
    val = labels[labels["image_url"].isin(set(data.val.image_urls.tolist()))]
    assert len(val) == len(data.val)
    val.to_csv(scratch / "val.csv", index=False)
    result = run([str(TRAINKIT), "evaluate", "--model", str(out), "--imageset", str(demo.imageset_studio),
                  "--labelset", str(scratch / "val.csv"), "--datastore-name", "", "--device", "cpu",
                  "--batch-size", str(batch_size), "--output-dir", str(scratch / "evaluated")])  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((scratch / "evaluated" / "metrics.json").read_text())
    trained = json.loads((out / "metrics.json").read_text())
    assert trained["val"] and {name: evaluated[name] for name in trained["val"]} == trained["val"]
    assert evaluated["confusion_matrix"] == trained["confusion_matrix"]


def test_detector_trains_logs_to_mlflow_and_reloads(demo: DemoDataset, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run(
        train_command(demo, out, DETECTOR, "--set", "weights=", "--set", "epochs=1", "--set", "max_steps=3",
                      "--set", "batch_size=2", "--set", "image_size=96", "--log-every", 1,
                      "--register-as", "demo-detector")
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for name in (
        "run.json",
        "metrics.json",
        "class_map.json",
        "model/MLmodel",
        "checkpoints/last.pt",
        "plots/train_loss.png",
    ):
        assert (out / name).is_file(), name
    assert list((out / "plots").glob("val_*.png"))

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["trainkit"], output_format="list")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert {"train/loss", "val/map", "val/map_50"} <= set(runs[0].data.metrics)
    assert runs[0].data.params["hp.max_steps"] == "3"
    history = mlflow.MlflowClient().get_metric_history(runs[0].info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2, 3]
    (version,) = mlflow.MlflowClient().search_model_versions("name='demo-detector'")
    model = mlflow.pytorch.load_model(f"models:/demo-detector/{version.version}")
    model.eval()
    with torch.no_grad():
        prediction = model([torch.rand(3, 96, 96)])[0]
    assert set(prediction) == {"boxes", "labels", "scores"}
    local = mlflow.pytorch.load_model(str(out / "model"))
    assert type(local).__name__ == "FasterRCNN"
    # The registered model is the deployable one too: its pyfunc answers as AutoML does.
    served = mlflow.pyfunc.load_model(f"models:/demo-detector/{version.version}")
    [row] = served.predict(pd.DataFrame({"image": [str(sorted(demo.imageset_studio.rglob("*.jpg"))[0])]}),
                           params={"min_score": 0.0}).to_dict("records")  # fmt: skip
    assert set(row) == {"filename", "boxes"} and all(0 <= b["box"]["topX"] <= 1 for b in row["boxes"])
    assert "model.onnx" in [a.path for a in mlflow.MlflowClient().list_artifacts(runs[0].info.run_id)]
    import onnx

    onnx.checker.check_model(str(out / "model.onnx"))


@pytest.mark.parametrize("trainer", [SKELETON, DETECTOR], ids=["skeleton", "detector"])
def test_a_detection_trainer_trains_on_tiles_and_its_model_predicts_on_them(
    trainer: Path, demo: DemoDataset, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    scratch = ("--set", "weights=") if trainer == DETECTOR else ()
    result = run(train_command(demo, out, trainer, *scratch, "--set", "epochs=1", "--set", "batch_size=4",
                               "--set", "image_size=64", "--set", "tile_grid=2x2", "--set", "tile_overlap=0.2",
                               "--val-fraction", 0.2, "--log-every", 1))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    steps = json.loads((out / "metrics.json").read_text())["step"]
    train_images = json.loads((out / "run.json").read_text())["train_images"]
    assert steps == math.ceil(train_images * 5 / 4)  # an epoch: every tile and whole image once
    settings = json.loads((out / "model" / "artifacts" / "settings.json").read_text())
    assert settings["tiling"]["grid"] == [2, 2] and settings["tiling"]["overlap"] == 0.2
    assert list((out / "plots").glob("val_*.png"))
    predicted = run([str(TRAINKIT), "predict", "--model", str(out), "--imageset", str(demo.imageset_studio),
                     "--datastore-name", "", "--output-dir", str(tmp_path / "pred"), "--draw", "0"])  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert json.loads((tmp_path / "pred" / "predict.json").read_text())["images"] == 12
    assert_evaluate_agrees(demo, out, tmp_path, 0.2, 4)  # on tiles, as the run validated


def test_classifier_trains_on_object_crops_with_its_own_metrics(demo: DemoDataset, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run(
        train_command(demo, out, CLASSIFIER, "--set", "epochs=2", "--set", "batch_size=8", "--set", "image_size=64",
                      "--val-fraction", "0.3", "--log-every", 1)
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 1: val accuracy" in result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    classes = json.loads((out / "class_map.json").read_text())["classes"]
    val = metrics["val"]
    assert 0 <= val["accuracy"] <= 1 and {"macro_precision", "macro_recall", "macro_f1"} <= set(val)
    assert any(key.startswith("recall_class/") for key in val)
    confusion = metrics["confusion_matrix"]["rows_truth_columns_predicted"]
    assert len(confusion) == len(classes) == 3 and all(len(row) == 3 for row in confusion)
    run_info = json.loads((out / "run.json").read_text())
    from trainkit.data.dataset import DataConfig, DatasetOptions, DatasetPair, load_dataset

    data = load_dataset(DataConfig(DatasetPair(demo.imageset_studio, demo.labels_csv), val_fraction=0.3,
                                   options=DatasetOptions(datastore_name="")))  # fmt: skip
    assert run_info["val_images"] == len(data.val)
    assert sum(map(sum, confusion)) == data.val.num_objects  # every validation crop counted once
    for name in ("confusion_matrix.png", "val_accuracy.png", "val_macro_f1.png", "train_loss.png"):
        assert (out / "plots" / name).is_file(), name
    assert_evaluate_agrees(demo, out, tmp_path, 0.3, 8)
    import mlflow

    model = mlflow.pytorch.load_model(str(out / "model")).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 3)


def test_loss_decreases_when_overfitting_a_tiny_set(tmp_path: Path) -> None:
    from trainkit.data.demo import write_demo_dataset

    tiny = write_demo_dataset(tmp_path / "tiny", images=4, seed=3)
    out = tmp_path / "out"
    result = run(
        train_command(tiny, out, DETECTOR, "--val-fraction", 0, "--set", "weights=", "--set", "epochs=12",
                      "--set", "batch_size=4", "--set", "image_size=96", "--set", "lr=0.02", "--log-every", 1)
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    run_id = mlflow.search_runs(experiment_names=["trainkit"], output_format="list")[0].info.run_id
    losses = [
        m.value for m in sorted(mlflow.MlflowClient().get_metric_history(run_id, "train/loss"), key=lambda m: m.step)
    ]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3, losses


def wait_for_step(process: subprocess.Popen, log: Path, step: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f"step {step}:" in log.read_text():
            return
        if process.poll() is not None:
            raise AssertionError(f"training ended early ({process.returncode}):\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"no step {step} within {timeout}s")


def start(command: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_TRACKING_URI": "", "TRAINKIT_TRAINER": ""}
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


SETTINGS = ("--set", "epochs=2", "--set", "batch_size=2", "--set", "image_size=64", "--set", "seed=11",
            "--log-every", 1, "--checkpoint-every", 3)  # fmt: skip
# For runs stopped midway: 120 steps, so that a signal sent at step 5 (or a kill by step 20) lands in the
# middle of the run on any CPU, however fast, instead of after its end.
LONG = (*SETTINGS, "--set", "epochs=20", "--eval-every", 5)
LONG_STEPS = 120  # 11 training images, batches of 2, 20 epochs


# On tiles (2x2 + the whole image: 5 samples an image), 4 epochs are about as many steps as LONG's 20.
TILED = (*LONG, "--set", "tile_grid=2x2", "--set", "epochs=4")
TILED_STEPS = 4 * math.ceil(11 * 5 / 2)


@pytest.mark.parametrize(("settings", "steps"), [(LONG, LONG_STEPS), (TILED, TILED_STEPS)], ids=["whole", "tiles"])
def test_sigterm_checkpoints_and_resume_matches_an_uninterrupted_run(
    demo: DemoDataset, tmp_path: Path, settings: tuple, steps: int
) -> None:
    """Stopped mid-epoch and resumed, a run ends with the bit-identical model (on tiles too: the tile
    order is part of what resumes)."""
    straight = tmp_path / "straight"
    assert run(train_command(demo, straight, SKELETON, *settings)).returncode == 0
    total = torch.load(straight / "checkpoints" / "last.pt", weights_only=False)["step"]
    assert total == steps

    out, log = tmp_path / "stopped", tmp_path / "stopped.log"
    process = start(train_command(demo, out, SKELETON, *settings), log)
    wait_for_step(process, log, 5)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 3, log.read_text()[-3000:]
    assert "rerun with --resume auto" in log.read_text()
    assert (out / "failure.txt").read_text().startswith("preempted: stopped by SIGTERM")
    stopped_at = torch.load(out / "checkpoints" / "last.pt", weights_only=False)["step"]
    assert 5 <= stopped_at < total

    again = run(train_command(demo, out, SKELETON, *settings))
    assert again.returncode == 2 and "pass --resume auto" in again.stderr
    reason = (out / "failure.txt").read_text().strip()  # the same one line as stderr's error
    assert f"trainkit: error: {reason}" in again.stderr.splitlines()

    resumed = run(train_command(demo, out, SKELETON, *settings, "--resume", "auto"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming at step {stopped_at}" in resumed.stderr
    assert not (out / "failure.txt").exists()  # a success clears the last failure
    expected, got = final_weights(straight), final_weights(out)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["trainkit"], output_format="list")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # the same MLflow run, continued
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(runs[0].info.run_id, "train/loss")]
    assert sorted(steps) == list(range(1, total + 1))


def test_restart_with_an_empty_output_dir_resumes_from_the_checkpoint_dir(demo: DemoDataset, tmp_path: Path) -> None:
    """As AzureML restarts a preempted job: ./outputs is empty again; only the mounted output survives."""
    checkpoints = tmp_path / "mounted-checkpoints"
    first, log = tmp_path / "outputs-1", tmp_path / "first.log"
    command = [*train_command(demo, first, SKELETON, *LONG), "--checkpoint-dir", str(checkpoints)]
    process = start([*command, "--resume", "auto"], log)
    wait_for_step(process, log, 5)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 3, log.read_text()[-3000:]
    stopped_at = torch.load(checkpoints / "last.pt", weights_only=False)["step"]
    assert not (first / "checkpoints").exists()

    second = tmp_path / "outputs-2"  # a fresh, empty output folder, the same checkpoint folder
    command = [*train_command(demo, second, SKELETON, *LONG), "--checkpoint-dir", str(checkpoints)]
    resumed = run([*command, "--resume", "auto"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming at step {stopped_at}" in resumed.stderr
    assert torch.load(checkpoints / "last.pt", weights_only=False)["step"] == LONG_STEPS
    assert (second / "model" / "MLmodel").is_file() and (second / "metrics.json").is_file()


def test_sigkill_at_a_random_moment_still_resumes(demo: DemoDataset, tmp_path: Path) -> None:
    out, log = tmp_path / "killed", tmp_path / "killed.log"
    process = start(train_command(demo, out, SKELETON, *LONG), log)
    wait_for_step(process, log, random.randint(4, 20))
    time.sleep(random.uniform(0.0, 0.2))  # anywhere within a step: writing a checkpoint, or not
    assert process.poll() is None, "the run ended before it could be killed"
    process.kill()
    process.wait(timeout=60)
    resumed = run(train_command(demo, out, SKELETON, *LONG, "--resume", "auto"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming at step" in resumed.stderr
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=False)["step"] == LONG_STEPS


def test_a_torn_checkpoint_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    from trainkit.training.checkpoint import load_latest_checkpoint, save_checkpoint

    folder = tmp_path / "ck"
    save_checkpoint(folder, {"step": 1})
    save_checkpoint(folder, {"step": 2})
    assert load_latest_checkpoint(folder)["step"] == 2
    (folder / "last.pt").write_bytes((folder / "last.pt").read_bytes()[:50])
    assert load_latest_checkpoint(folder)["step"] == 1


def test_trackers_in_one_process_keep_their_own_stores(tmp_path: Path, monkeypatch) -> None:
    from trainkit.training.tracking import Tracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        tracker = Tracker(tmp_path / name, "exp", None)
        tracker.log_metrics({"m": 1.0}, 1)
        tracker.log_dict({"x": 1}, "x.json")
        tracker.end("FINISHED")
        assert os.environ.get("MLFLOW_TRACKING_URI") is None
    for name in ("a", "b"):
        assert (tmp_path / name / "mlflow.db").is_file()
        assert list((tmp_path / name / "mlruns").rglob("x.json"))
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()


def test_harness_warns_when_dev_shm_is_too_small(demo: DemoDataset, tmp_path: Path) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": "", "TRAINKIT_TRAINER": "", "LOCAL_WORLD_SIZE": "256"}
    command = [*train_command(demo, tmp_path / "out", SKELETON, *SETTINGS), "--set", "max_steps=1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    warning = next(line for line in result.stderr.splitlines() if "/dev/shm is" in line)
    assert "256 training process(es)" in warning and "--shm-size 256g" in warning


def test_trains_on_several_pairs_with_one_class_map(demo: DemoDataset, tmp_path: Path) -> None:
    from conftest import make_image, obj, write_labels

    make_image(tmp_path / "imgs2" / "more" / "p.png", (80, 60))
    labels2 = write_labels(
        tmp_path / "more.csv",
        [{"image_url": "more/p.png", "label": [obj("pentagon", 5, 40, 5, 40)], "label_confidence": [0.9]}],
    )
    out = tmp_path / "out"
    command = [
        str(TRAINKIT), "train", "--trainer", str(SKELETON), "--output-dir", str(out), "--device", "cpu",
        "--train-set", f"{demo.labels_csv}:{demo.imageset_studio}:", "--train-set", f"{labels2}:{tmp_path / 'imgs2'}",
        "--test-set", f"{labels2}:{tmp_path / 'imgs2'}", *map(str, SETTINGS), "--set", "max_steps=2",
    ]  # fmt: skip
    result = run(command)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "class_map.json").read_text())["classes"] == ["circle", "pentagon", "square", "triangle"]
    data = json.loads((out / "run.json").read_text())["config"]["data"]
    assert [p["name"] for p in data["train"]] == ["train 1", "train 2"] and len(data["val"]) == 1


def test_images_dali_refuses_train_through_pillow_and_unreadable_ones_are_named(tmp_path: Path) -> None:
    import shutil

    from trainkit.data.demo import write_demo_dataset

    demo = write_demo_dataset(tmp_path / "demo", images=8, seed=5)
    jpegs = sorted(demo.imageset_studio.rglob("*.jpg"))
    quirk, broken = jpegs[1], jpegs[3]
    data = quirk.read_bytes()
    quirk.write_bytes(data[:2] + b"\xff\x00" + data[2:])  # an FF00 "marker": Pillow reads it, DALI does not
    broken.write_bytes(broken.read_bytes()[: len(broken.read_bytes()) // 2])  # its header reads; its pixels do not
    settings = ("--datastore-name", "", "--val-fraction", "0", "--set", "epochs=1", "--set", "batch_size=4",
                "--set", "image_size=64")  # fmt: skip

    strict = run(train_command(demo, tmp_path / "strict", SKELETON, *settings))
    assert strict.returncode == 2, strict.stderr[-2000:]
    last = strict.stderr.strip().splitlines()[-1]
    assert f"{broken} cannot be decoded" in last and "--on-bad-row skip" in last and "internal error" not in last

    shutil.rmtree(tmp_path / "strict")
    out = tmp_path / "skip"
    result = run(train_command(demo, out, SKELETON, *settings, "--on-bad-row", "skip"))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["skipped_images"], metrics["cpu_decoded_images"]) == (1, 1)
    images = json.loads((out / "run.json").read_text())["images"]
    assert list(images["skipped"]) == [str(broken)] and list(images["decoded_on_cpu"]) == [str(quirk)]
    assert "1 images decoded with Pillow" in result.stderr
    # The decoding library's own lines stay out of the log; its reason is folded into trainkit's warning.
    assert all(line.startswith(("trainkit: ", "20")) for line in result.stderr.splitlines() if line.strip()), (
        result.stderr[-3000:]
    )
    assert f"image {quirk}: DALI cannot decode it (" in result.stderr and "Invalid marker" in result.stderr


def test_sigterm_while_starting_exits_3_with_a_failure_file(demo: DemoDataset, tmp_path: Path) -> None:
    slow = tmp_path / "slow_trainer.py"
    slow.write_text((SKELETON / "skeleton_trainer.py").read_text().replace(
        "GROUPS = 8", "import time\n\ntime.sleep(60)  # a slow start-up: imports, a mount\nGROUPS = 8", 1))  # fmt: skip
    out = tmp_path / "out"
    env = {**os.environ, "MLFLOW_TRACKING_URI": "", "TRAINKIT_TRAINER": ""}
    process = subprocess.Popen(train_command(demo, out, slow), env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(8)  # trainkit has started and is importing the trainer
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 3, err[-2000:]
    assert "stopped: SIGTERM outside the training loop" in (out / "failure.txt").read_text()
    assert "Traceback" not in err


def test_resuming_a_complete_run_says_so_and_adds_no_points(demo: DemoDataset, tmp_path: Path) -> None:
    import mlflow

    out = tmp_path / "out"
    first = run(train_command(demo, out, SKELETON, *SETTINGS))
    assert first.returncode == 0, first.stderr[-3000:]
    again = run(train_command(demo, out, SKELETON, *SETTINGS, "--resume", "auto"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "the checkpoint's run was complete (step" in again.stderr and "epoch 3" not in again.stderr
    client = mlflow.MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    [run_info] = client.search_runs([client.get_experiment_by_name("trainkit").experiment_id])
    for metric in ("train/loss", "val/map"):
        steps = [m.step for m in client.get_metric_history(run_info.info.run_id, metric)]
        assert len(steps) == len(set(steps)), (metric, steps)


EARLY = ("--val-fraction", "0.25", "--set", "epochs=5", "--set", "batch_size=2", "--set", "image_size=64",
         "--set", "seed=11", "--set", "patience=1", "--set", "min_delta=1.0", "--checkpoint-every", 2)  # fmt: skip


def test_early_stopping_keeps_the_best_model_and_resumes_to_the_same_decisions(demo: DemoDataset, tmp_path) -> None:
    import mlflow.pytorch

    # min_delta 1.0: no evaluation can beat the first, so patience 1 stops at the second, epoch 2 of 5.
    straight = tmp_path / "straight"
    result = run(train_command(demo, straight, SKELETON, *EARLY))
    assert result.returncode == 0, result.stderr[-3000:]
    best = json.loads((straight / "metrics.json").read_text())["best"]
    assert (best["monitor"], best["epoch"], best["stopped_early"]) == ("val/map", 1, True)
    assert best["stopped_at_step"] == 2 * best["step"] and "stopping early: val/map has not beaten" in result.stderr
    # The monitored metric's last MLflow point is the kept model's value (what a sweep reads for its objective).
    client = mlflow.MlflowClient(f"sqlite:///{straight / 'mlflow.db'}")
    [logged] = client.search_runs([client.get_experiment_by_name("trainkit").experiment_id])
    series = sorted((m.step, m.value) for m in client.get_metric_history(logged.info.run_id, "val/map"))
    final_step = json.loads((straight / "metrics.json").read_text())["step"]
    assert series[-1] == (final_step + 1, best["value"]) and series[-2][0] == final_step
    checkpoint = torch.load(straight / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    saved = mlflow.pytorch.load_model(str(straight / "model")).state_dict()
    assert all(torch.equal(saved[k], v) for k, v in checkpoint["best"]["weights"].items())  # the best, not the last
    assert any(not torch.equal(saved[k], v) for k, v in checkpoint["model"].items())

    # The same run stopped in the middle of epoch 2 and resumed: the same decisions, the same saved model.
    resumed, log = tmp_path / "resumed", tmp_path / "resumed.log"
    process = start(train_command(demo, resumed, SKELETON, *EARLY, "--log-every", 1), log)
    wait_for_step(process, log, best["step"] + 1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 3, log.read_text()[-3000:]
    second = run(train_command(demo, resumed, SKELETON, *EARLY, "--resume", "auto"))
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads((resumed / "metrics.json").read_text())["best"] == best
    again = mlflow.pytorch.load_model(str(resumed / "model")).state_dict()
    assert all(torch.equal(again[k], v) for k, v in saved.items())

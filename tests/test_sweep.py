"""`trainkit submit --sweep`: sweep jobs azure-ai-ml loads as SweepJob, and bad search spaces refused by key."""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import pytest
import yaml

from trainkit.submit.workspace import load_and_validate

ROOT = Path(__file__).resolve().parents[1]
DIGEST = "sha256:" + "9e" * 32


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "images.json"
    images = {k: {"repository": f"myacr.azurecr.io/trainkit-{k}", "digest": DIGEST}
              for k in ("base", "detector", "classifier")}  # fmt: skip
    path.write_text(json.dumps({"schema": "trainkit.images/v1", "images": images}))
    return path


@pytest.fixture
def sweep(run_cli, manifest: Path, monkeypatch: pytest.MonkeyPatch):
    """`trainkit submit --sweep ...` from the repository root (trainers/ there lets it check the trainer)."""
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("DATASTORE_NAME", raising=False)

    def run(*args: object, trainer: str = "detector"):
        return run_cli("submit", "--trainer", trainer, "--manifest", manifest, "--compute", "gpu-cluster",
                       "--pair", "azureml:labels:1", "azureml:images:1", "--sweep", *args)  # fmt: skip

    return run


def test_a_sweep_job_loads_as_sweep_job_with_its_policy_and_trial(sweep, tmp_path: Path) -> None:
    from azure.ai.ml.sweep import BanditPolicy, SweepJob

    result = sweep(
        "--set", "epochs=12", "--search", "lr=loguniform(1e-4, 1e-1)", "--search", "batch_size=choice(4, 8)",
        "--search", "image_size=quniform(256, 512, 64)", "--objective", "val/map_50",
        "--early-termination", "bandit:slack_factor=0.1,evaluation_interval=1,delay_evaluation=2",
        "--max-trials", "16", "--max-concurrent-trials", "4", "--timeout", "6h", "--trial-timeout", "90m",
        "--shm-size", "32g", "--dry-run", tmp_path / "jobs",
    )  # fmt: skip
    assert result.code == 0, result.err
    [path] = sorted((tmp_path / "jobs").glob("job-*.yml"))
    job = load_and_validate(path)
    assert isinstance(job, SweepJob)
    assert isinstance(job.early_termination, BanditPolicy) and job.early_termination.slack_factor == 0.1
    assert job.early_termination.delay_evaluation == 2
    assert job.objective.primary_metric == "val/map_50" and job.objective.goal == "maximize"
    assert job.limits.max_total_trials == 16 and job.limits.max_concurrent_trials == 4
    assert job.limits.timeout == 6 * 3600 and job.limits.trial_timeout == 90 * 60
    assert job.sampling_algorithm == "random"
    space = job.search_space
    assert math.isclose(space["lr"].min_value, math.log(1e-4)) and math.isclose(space["lr"].max_value, math.log(0.1))
    assert space["batch_size"].values == [4, 8] and space["image_size"].q == 64
    assert job.trial.environment.image == f"myacr.azurecr.io/trainkit-detector@{DIGEST}"
    assert job.trial.resources.shm_size == "32g" and job.compute == "gpu-cluster"
    assert job.tags["param.lr"] == "loguniform(0.0001, 0.1)"
    # The trial command, with AzureML's substitutions made, is a `trainkit train` line the trainer accepts.
    command = job.trial.command
    assert "--set lr=${{search_space.lr}}" in command and "--set monitor=val/map_50" in command
    sampled = {"lr": "0.0031", "batch_size": "8", "image_size": "320.0"}
    line = re.sub(r"\$\{\{search_space\.(\w+)\}\}", lambda m: sampled[m.group(1)], command)
    line = re.sub(r"\$\{\{(?:inputs|outputs)\.(\w+)\}\}", r"/mnt/\1", line)
    from trainkit.cli import build_parser
    from trainkit.config import train_config_from_args
    from trainkit.params import parse_params
    from trainkit.training.discovery import load_trainer

    config = train_config_from_args(build_parser().parse_args(shlex.split(line)[1:]))
    params = parse_params(load_trainer(str(ROOT / "trainers" / "detector")).trainer.Params, config.hyperparameters)
    assert (params.lr, params.batch_size, params.image_size, params.epochs) == (0.0031, 8, 320, 12)
    assert params.monitor == "val/map_50"


def test_grid_and_bayesian_sampling_and_the_classifier_objective(sweep, tmp_path: Path) -> None:
    grid = sweep("--search", "lr=choice(0.01,0.001)", "--sampling", "grid", "--dry-run", tmp_path / "grid",
                 trainer="classifier")  # fmt: skip
    assert grid.code == 0, grid.err
    spec = yaml.safe_load(next((tmp_path / "grid").glob("job-*.yml")).read_text())
    assert spec["sampling_algorithm"] == "grid" and spec["objective"] == {
        "goal": "maximize", "primary_metric": "val/accuracy"}  # the classifier's monitor  # fmt: skip
    bayes = sweep("--search", "lr=uniform(0.001,0.05)", "--sampling", "bayesian", "--max-trials", "8",
                  "--dry-run", tmp_path / "bayes")  # fmt: skip
    assert bayes.code == 0, bayes.err
    assert load_and_validate(next((tmp_path / "bayes").glob("job-*.yml"))).sampling_algorithm == "bayesian"


def test_a_sweep_searches_tile_grids_and_carries_the_tile_settings(sweep, tmp_path: Path) -> None:
    result = sweep("--search", "tile_grid=choice(none,2x2,3x2)", "--set", "tile_overlap=0.2", "--set", "tile_nms=0.5",
                   "--sampling", "grid", "--dry-run", tmp_path / "tiles")  # fmt: skip
    assert result.code == 0, result.err
    path = next((tmp_path / "tiles").glob("job-*.yml"))
    spec = yaml.safe_load(path.read_text())
    assert spec["search_space"]["tile_grid"] == {"type": "choice", "values": ["none", "2x2", "3x2"]}
    command = spec["trial"]["command"]
    assert "tile_grid=${{search_space.tile_grid}}" in command and "tile_overlap=0.2" in command, command
    assert "tile_nms=0.5" in command
    load_and_validate(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--search", "lrr=uniform(0.1,1)"], "unknown hyperparameter 'lrr'"),
        (["--search", "tile_grid=choice(3x2,3by2)"], "tile_grid '3by2': write COLUMNSxROWS"),
        (
            ["--search", "batch_size=uniform(2,16)"],
            "--search batch_size=uniform(2, 16): the trainer refuses batch_size=6.4563",
        ),
        (["--search", "epochs=choice(3,fast)"], "the trainer refuses epochs='fast'"),
        (["--search", "lr=uniform(0.1,0.01)"], "the lower bound 0.1 must be below the upper bound 0.01"),
        (["--search", "lr=loguniform(0,0.1)"], "the bounds must be above 0"),
        (["--search", "lr=normal(0,1)"], "unknown distribution 'normal'"),
        (["--search", "lr=uniform(0.1)"], "takes 2 number(s), got 1"),
        (["--search", "lr=choice(0.1)", "--search", "lr=choice(0.2)"], "--search lr: given twice"),
        (["--search", "lr=choice(0.1)", "--set", "lr=0.2"], "lr: both --set and --search"),
        (["--search", "lr=uniform(0.01,0.1)", "--sampling", "grid"], "grid sampling takes choice(...) only"),
        (["--search", "epochs=randint(9)", "--sampling", "bayesian"], "is not supported by Bayesian sampling"),
        (
            [
                "--search",
                "lr=choice(0.1)",
                "--sampling",
                "bayesian",
                "--early-termination",
                "median_stopping:delay_evaluation=2",
            ],
            "--sampling bayesian does not support --early-termination",
        ),
        (
            ["--search", "lr=choice(0.1)", "--early-termination", "bandit:evaluation_interval=1"],
            "give exactly one of slack_factor",
        ),
        (
            ["--search", "lr=choice(0.1)", "--early-termination", "bandit:slack_factor=0.1,slack_amount=0.2"],
            "give exactly one of slack_factor",
        ),
        (
            ["--search", "lr=choice(0.1)", "--early-termination", "bandit:slack_factor=0.1,patience=3"],
            "unknown setting 'patience=3'",
        ),
        (
            ["--search", "lr=choice(0.1)", "--early-termination", "truncation_selection:evaluation_interval=1"],
            "truncation_percentage must be 1 to 99",
        ),
        (["--search", "lr=choice(0.1)", "--objective", "val/mAP"], "--objective val/mAP: not a metric the detector"),
        (["--search", "lr=choice(0.1)", "--objective", "map"], "(did you mean val/map?)"),
        (["--search", "lr=choice(0.1)", "--objective", "val/map:minimize"], "use val/map:maximize"),
        (["--search", "lr=choice(0.1)", "--max-concurrent-trials", "30"], "--max-concurrent-trials must be 1 to"),
        (["--search", "lr=choice(0.1)", "--timeout", "soon"], "--timeout 'soon': expected a duration"),
        (["--search", "lr=choice(0.1)", "--grid", "epochs=1,2"], "--grid with --sweep"),
        (["--search", "lr=choice(0.1)", "--sdk", "v1"], "--sweep needs SDK v2"),
        ([], "--sweep needs at least one --search"),
    ],
)
def test_bad_sweeps_are_one_line_exit_2_naming_the_key(sweep, args: list[str], message: str) -> None:
    result = sweep(*args)
    assert result.code == 2, result.err
    errors = [line for line in result.err.splitlines() if line.startswith("trainkit: error:")]
    assert len(errors) == 1 and message in errors[0], result.err


def test_search_without_sweep_is_refused(run_cli, manifest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = run_cli("submit", "--trainer", "detector", "--manifest", manifest, "--compute", "c",
                     "--pair", "azureml:l:1", "azureml:i:1", "--search", "lr=choice(0.1)")  # fmt: skip
    assert result.code == 2 and "--search, --objective and --early-termination need --sweep" in result.err

"""`trainkit sweep-report`: an experiment's runs from MLflow, best first, with the hyperparameters that vary."""

from __future__ import annotations

from pathlib import Path

import mlflow


def test_runs_are_ranked_by_their_best_value(run_cli, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("shapes", artifact_location=(tmp_path / "artifacts").as_uri())
    for lr, value, epoch in (("0.01", 0.41, 7), ("0.002", 0.63, 12), ("0.1", None, None)):
        run = client.create_run(experiment, run_name=f"lr-{lr}")
        client.log_param(run.info.run_id, "hp.lr", lr)
        client.log_param(run.info.run_id, "hp.epochs", "20")  # the same in every run: not a column
        if value is not None:
            client.log_metric(run.info.run_id, "best/value", value)
            client.log_metric(run.info.run_id, "best/epoch", epoch)
        client.set_terminated(run.info.run_id, "FINISHED" if value is not None else "FAILED")
    result = run_cli("sweep-report", "--experiment", "shapes", "--tracking-uri", uri)
    assert result.code == 0, result.err
    lines = result.out.strip().splitlines()
    assert lines[0].split() == ["run", "state", "best/value", "best", "epoch", "lr"]
    assert [line.split() for line in lines[1:]] == [
        ["lr-0.002", "FINISHED", "0.6300", "12", "0.002"],
        ["lr-0.01", "FINISHED", "0.4100", "7", "0.01"],
        ["lr-0.1", "FAILED", "-", "-", "0.1"],
    ]
    missing = run_cli("sweep-report", "--experiment", "nope", "--tracking-uri", uri)
    assert missing.code == 2 and "no MLflow experiment 'nope'" in missing.err and "shapes" in missing.err


def test_seeded_runs_get_their_own_names_and_keep_the_seeded_random_state(tmp_path: Path, monkeypatch) -> None:
    import random

    from trainkit.training.tracking import Tracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    names = []
    for i in range(2):
        random.seed(7)  # as the harness seeds every run before it starts tracking
        tracker = Tracker(tmp_path / f"out{i}", "seeded", None)
        names.append(tracker.run.info.run_name)
        after = random.random()
        tracker.end("FINISHED")
        random.seed(7)
        assert after == random.random()  # the trainer's random stream is as it was
    assert names[0] != names[1]

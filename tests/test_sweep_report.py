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

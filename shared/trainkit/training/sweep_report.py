"""`trainkit sweep-report`: the runs of one experiment as a table, best first.

Reads MLflow (the platform's store, `MLFLOW_TRACKING_URI` or `--tracking-uri`; a sweep's trials are
runs of its experiment; so are several local `trainkit train` runs logged to one store): each run's
hyperparameters (`hp.*`, only those that differ between runs), its objective (by default
`best/value`, which every run with validation logs at its end), state and best epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainkit.errors import UserError


@dataclass(frozen=True)
class TrialRow:
    """One run: its name, state, objective, best epoch and hyperparameters."""

    run_id: str
    name: str
    state: str
    objective: float | None
    best_epoch: int | None
    params: dict[str, str]


def trial_rows(experiment: str, objective: str = "best/value", tracking_uri: str = "") -> list[TrialRow]:
    """The experiment's runs, best objective first (higher is better unless the name ends in `loss`),
    runs without the objective last."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri or None)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = ", ".join(e.name for e in client.search_experiments()[:10]) or "none"
        raise UserError(f"no MLflow experiment {experiment!r} in {client.tracking_uri} (there: {names})")
    rows = []
    for run in client.search_runs([found.experiment_id], max_results=5000):
        metrics, params = run.data.metrics, run.data.params
        epoch = metrics.get("best/epoch")
        rows.append(TrialRow(
            run.info.run_id, run.info.run_name or run.info.run_id[:8], run.info.status, metrics.get(objective),
            int(epoch) if epoch is not None else None,
            {k.removeprefix("hp."): v for k, v in params.items() if k.startswith("hp.")},
        ))  # fmt: skip
    lower = objective.rsplit("/", 1)[-1].endswith("loss")
    return sorted(rows, key=lambda r: (r.objective is None, (r.objective or 0.0) * (1 if lower else -1)))


def report_table(rows: list[TrialRow], objective: str = "best/value") -> str:
    """A plain-text table: run, state, objective, best epoch, then the hyperparameters that vary."""
    varying = sorted({k for r in rows for k in r.params if len({x.params.get(k) for x in rows}) > 1})
    header = ["run", "state", objective, "best epoch", *varying]
    body = [[r.name, r.state, f"{r.objective:.4f}" if r.objective is not None else "-",
             str(r.best_epoch) if r.best_epoch is not None else "-", *(r.params.get(k, "-") for k in varying)]
            for r in rows]  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in [header, *body])  # fmt: skip

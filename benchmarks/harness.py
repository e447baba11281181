"""Benchmark: the harness's training steps/s against a plain loop over the same model, data and batches.

Both use the same trainer (default: the skeleton detector), the same DALI loader and settings, on
the CPU. The plain loop is what an author would write by hand: loader -> to_float -> loss ->
backward -> the trainer's optimiser step. The harness adds AMP/scaler plumbing, LR schedule, metric windows, MLflow
logging every --log-every steps and checkpoints every --checkpoint-every steps. Its rate is read
from the MLflow timestamps of its logged steps (so start-up, evaluation and export are excluded,
as they are from the plain loop).

    .venv/bin/python benchmarks/harness.py [--trainer trainers/skeleton] [--steps 60] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from smoke import parse_args

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainer", default=str(ROOT / "trainers" / "skeleton"))
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    args = parse_args(parser, argv, images=8, steps=4, batch_size=2, image_size=64, log_every=2, repeats=1)
    os.environ["MLFLOW_TRACKING_URI"] = ""

    from trainkit.batch import to_float
    from trainkit.cli import build_parser
    from trainkit.config import train_config_from_args
    from trainkit.data.dataset import load_dataset_strict
    from trainkit.data.demo import write_demo_dataset
    from trainkit.loading.loader import create_loader
    from trainkit.params import parse_params
    from trainkit.training.discovery import load_trainer
    from trainkit.training.harness import run_training

    with tempfile.TemporaryDirectory() as tmp:
        demo = write_demo_dataset(Path(tmp) / "demo", images=args.images, seed=0)
        steps_per_epoch = -(-args.images // args.batch_size)
        epochs = -(-args.steps // steps_per_epoch)
        hp = {"epochs": epochs, "max_steps": args.steps, "batch_size": args.batch_size, "image_size": args.image_size}
        argv_train = [
            "train", "--trainer", args.trainer, "--imageset", str(demo.imageset_studio),
            "--labelset", str(demo.labels_csv), "--val-fraction", "0", "--device", "cpu",
            "--output-dir", str(Path(tmp) / "out"), "--log-every", str(args.log_every),
            "--checkpoint-every", str(args.checkpoint_every),
            *[item for key, value in hp.items() for item in ("--set", f"{key}={value}")],
        ]  # fmt: skip
        config = train_config_from_args(build_parser().parse_args(argv_train))
        loaded = load_trainer(config.trainer)
        trainer = loaded.trainer
        params = parse_params(trainer.Params, config.hyperparameters)
        dataset = load_dataset_strict(config.data)

        def plain_loop() -> float:
            """Steps/s from the end of the first logged window to the last step, as the harness is read."""
            torch.manual_seed(params.seed)
            model = trainer.build_model(params, dataset.class_map)
            optimizer = trainer.configure_optimizer(model, params)  # the trainer's own, as the harness uses
            loader = create_loader(dataset.train, trainer.loader_config(params, True), "cpu")
            step, started = 0, time.perf_counter()
            model.train()
            while step < args.steps:
                for batch in loader:
                    loss = trainer.loss(model, to_float(batch.images, trainer.mean, trainer.std), batch)["loss"]
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    step += 1
                    if step == args.log_every:
                        started = time.perf_counter()
                    if step >= args.steps:
                        break
            return (args.steps - args.log_every) / (time.perf_counter() - started)

        def harness(rep: int) -> float:
            from mlflow import MlflowClient

            run_config = replace(config, output_dir=Path(tmp) / f"out{rep}", experiment=f"bench{rep}")
            if run_training(run_config, dataset, loaded) != 0:
                raise SystemExit(f"the harness run failed: see {run_config.output_dir / 'failure.txt'}")
            # The run's own record names its store: the harness forgets the store it set once the run ends.
            run = json.loads((run_config.output_dir / "run.json").read_text())
            client = MlflowClient(tracking_uri=run["mlflow_tracking_uri"])
            history = client.get_metric_history(run["mlflow_run_id"], "train/loss")
            first, last = min(history, key=lambda m: m.step), max(history, key=lambda m: m.step)
            return (last.step - first.step) / ((last.timestamp - first.timestamp) / 1000)

        # Alternate the two and keep each one's best, so a noisy neighbour hurts neither more.
        plain_rates, harness_rates = [], []
        for rep in range(args.repeats):
            plain_rates.append(plain_loop())
            harness_rates.append(harness(rep))
        plain_rate, harness_rate = max(plain_rates), max(harness_rates)

    setup = f"{args.images} demo images, batch {args.batch_size}, {args.image_size}px, {args.steps} steps"
    print(f"\n{Path(args.trainer).name} trainer, {setup}, CPU ({os.cpu_count()} cores), torch {torch.__version__}")
    runs = f"plain {[round(r, 3) for r in plain_rates]}, harness {[round(r, 3) for r in harness_rates]}"
    print(f"best of {args.repeats} alternating runs each (all runs: {runs})")
    print(f"{'loop':<44} {'steps/s':>8} {'vs plain':>9}")
    print(f"{'plain loop (loader, loss, backward, step)':<44} {plain_rate:>8.3f} {1.0:>8.2f}x")
    label = f"harness (log every {args.log_every}, ckpt every {args.checkpoint_every})"
    print(f"{label:<44} {harness_rate:>8.3f} {harness_rate / plain_rate:>8.2f}x")
    print(f"harness overhead: {(1 - harness_rate / plain_rate):.1%} (target < 5%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

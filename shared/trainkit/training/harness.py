"""The training harness: everything every model needs, around the few methods a trainer supplies.

Device and AMP, seeding, the DALI loader, epochs and steps, LR schedule, gradient clipping,
progress, MLflow tracking, atomic checkpoints with `--resume auto`, SIGTERM handling (finish the
step, checkpoint, exit 3), evaluation, plots and the outputs folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import random
import signal
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import trainkit
from trainkit.atomic import write_json_atomic
from trainkit.batch import LoaderConfig, to_float
from trainkit.config import TrainConfig
from trainkit.contract import ExitCode
from trainkit.data.dataset import Dataset
from trainkit.errors import Stopped, UserError
from trainkit.inference.devices import resolve_device
from trainkit.inference.package import build_model_dir
from trainkit.inference.predictor import Predictor
from trainkit.inference.settings import ModelSettings
from trainkit.loading.distributed import Shard, local_processes, local_rank
from trainkit.loading.loader import DaliLoader, create_loader
from trainkit.params import CommonParams, describe, params_to_dict, parse_params
from trainkit.tasks import Evaluator
from trainkit.training.best import BestModel
from trainkit.training.checkpoint import (
    Position,
    checkpoint_files,
    has_checkpoints,
    load_latest_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from trainkit.training.curves import plot_curves
from trainkit.training.ddp import ProcessGroup
from trainkit.training.discovery import LoadedTrainer
from trainkit.training.folder_lock import hold_folder
from trainkit.training.outputs import StagedOutputs
from trainkit.training.parameters import count_parameters
from trainkit.training.shm import shm_bytes, shm_warning
from trainkit.training.tracking import NullTracker, Tracker
from trainkit.training.validation import validate

log = logging.getLogger(__name__)

# Hyperparameters a resumed run may change: how long to train, not what is trained.
RESUMABLE_CHANGES = frozenset({"epochs", "max_steps"})


class _StopFlag:
    """Set by SIGTERM; the loop checks it after each step."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> _StopFlag:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if not self.requested:
            log.warning("SIGTERM: finishing this step, then checkpointing and stopping")
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGTERM, self._previous)


@dataclass
class _State:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None  # mixed precision's type (the trainer's), None: off
    position: Position
    group: ProcessGroup
    train_model: torch.nn.Module | None = None  # the model wrapped for distributed training, else the model
    evaluation: Evaluator | None = None  # the latest validation in this process


def run_training(config: TrainConfig, dataset: Dataset, loaded: LoadedTrainer) -> int:
    """Train `loaded.trainer` on `dataset` as `config` says; returns the exit code (0, or 3 when stopped).

    Under torchrun or AzureML's PyTorch distribution every rank runs this; rank 0 alone tracks,
    checkpoints and writes the outputs.
    """
    group = ProcessGroup.from_env()
    device = resolve_device(config.device, local_rank())
    group.start(device)
    if not group.is_main:
        logging.getLogger("trainkit").setLevel(logging.WARNING)  # rank 0 reports for all
    try:
        with contextlib.ExitStack() as held:
            if group.is_main:  # rank 0 writes for all
                for folder in _written_folders(config):
                    held.enter_context(hold_folder(folder))
            return _run(config, dataset, loaded, group, device)
    finally:
        group.stop()


def _written_folders(config: TrainConfig) -> list[Path]:
    """The output folder, and the checkpoint folder when it lies elsewhere (an AzureML mounted output)."""
    folders = [config.output_dir]
    checkpoints = config.checkpoint_dir
    if checkpoints is not None and not checkpoints.resolve().is_relative_to(config.output_dir.resolve()):
        folders.append(checkpoints)
    return folders


def _run(config: TrainConfig, dataset: Dataset, loaded: LoadedTrainer, group: ProcessGroup, device) -> int:
    trainer = loaded.trainer
    params = parse_params(trainer.Params, config.hyperparameters)
    amp_dtype = trainer.amp_dtype(device) if params.amp and device.type == "cuda" else None
    amp = amp_dtype is not None
    output_dir, checkpoint_dir = config.output_dir, config.checkpoint_dir or config.output_dir / "checkpoints"
    if group.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = _checkpoint_to_resume(config, checkpoint_dir, params, dataset)

    random.seed(params.seed)
    np.random.seed(params.seed)
    torch.manual_seed(params.seed)
    shard = Shard(group.rank, group.world)
    shm_problem = shm_warning(shm_bytes(), local_processes())
    if shm_problem:
        log.warning(shm_problem)
    policy = config.data.options.on_bad_row
    train_loader = create_loader(
        dataset.train, _with_policy(trainer.loader_config(params, True), policy), device, shard
    )
    val_loader = None
    if dataset.val is not None and len(dataset.val):
        # Every rank evaluates the whole validation set: no rank waits on another's share.
        val_loader = create_loader(dataset.val, _with_policy(trainer.loader_config(params, False), policy), device)
    steps_per_epoch = len(train_loader)
    tiles = trainer.loader_config(params, False).tiles
    if tiles is not None:
        trained_on = f"{len(train_loader.epoch_order(0))} windows an epoch" if params.tile_train else "whole images"
        log.info("tiles: %s; training on %s, validating on tiles", describe(tiles), trained_on)
    total_steps = params.epochs * steps_per_epoch
    if params.max_steps:
        total_steps = min(total_steps, params.max_steps)

    model = trainer.build_model(params, dataset.class_map).to(device)
    parameters = count_parameters(model)
    log.info(parameters.describe())
    optimizer = trainer.configure_optimizer(model, params)
    state = _State(
        model=model,
        optimizer=optimizer,
        scheduler=trainer.configure_scheduler(optimizer, params, total_steps),
        scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
        amp_dtype=amp_dtype,
        position=Position(0, 0, 0),
        group=group,
    )
    best = BestModel(params.monitor or trainer.monitor, params.patience, params.min_delta)
    if params.patience and val_loader is None:
        raise UserError("hyperparameter 'patience' needs a validation set: pass --val-fraction, --val-labelset "
                        "or --test-set, or leave patience at 0")  # fmt: skip
    if checkpoint is not None and checkpoint.get("best"):
        best.load_state_dict(checkpoint["best"])
    # A checkpoint of a run that had finished: nothing left to train; its outputs are written again.
    complete = checkpoint is not None and (
        checkpoint["epoch"] >= params.epochs
        or bool(params.max_steps and checkpoint["step"] >= params.max_steps)
        or best.stopped_at is not None
    )
    if checkpoint is not None:
        _restore(state, checkpoint)
        position = state.position
        if complete:
            log.info("the checkpoint's run was complete (step %d, %d epochs): writing its outputs again",
                     position.step, min(position.epoch, params.epochs))  # fmt: skip
        else:
            log.info("resuming at step %d (epoch %d of %d, batch %d)", position.step, position.epoch + 1,
                     params.epochs, position.batch)  # fmt: skip
    # Wrapped after restoring, so that every rank starts from the same weights (DDP broadcasts rank 0's).
    state.train_model = group.wrap(model)
    if group.distributed:
        world, batch = group.world, params.batch_size
        log.info("%d processes, batch %d each: global batch %d", world, batch, world * batch)

    run_id = checkpoint.get("mlflow_run_id") if checkpoint else None
    tracker = Tracker(output_dir, config.experiment, run_id) if group.is_main else NullTracker()
    # run.json and class_map.json go into the output folder with the model at the end (see
    # training.outputs); MLflow has them from the start.
    run_info = {**_run_info(config, loaded, params, dataset, tracker, device), "parameters": parameters.to_json()}
    tracker.log_params({
        **{f"hp.{k}": v for k, v in params_to_dict(params).items()},
        "trainer": trainer.name,
        "model.parameters": parameters.total,
        "model.trainable_parameters": parameters.trainable,
    })  # fmt: skip
    tracker.log_dict(run_info, "run.json")
    tracker.log_dict(dataset.class_map.to_json(), "class_map.json")
    if config.data_report and group.is_main and checkpoint is None:  # a resumed run wrote it when it started
        _data_report(dataset, output_dir, tracker)

    def save(position: Position) -> None:
        state.position = position
        if not group.is_main:
            return
        save_checkpoint(
            checkpoint_dir,
            {
                "model": state.model.state_dict(),
                "optimizer": state.optimizer.state_dict(),
                "scheduler": state.scheduler.state_dict(),
                "scaler": state.scaler.state_dict(),
                "step": position.step,
                "epoch": position.epoch,
                "batch": position.batch,
                "rng": rng_state(),
                "mlflow_run_id": tracker.run_id,
                "classes": list(dataset.class_map.names),
                "params": params_to_dict(params),
                "history": dict(history),
                "best": best.state_dict(),
            },
        )

    history: dict[str, list[tuple[int, float]]] = defaultdict(list, checkpoint.get("history", {}) if checkpoint else {})
    started = time.perf_counter()
    evaluation: Evaluator | None = None
    try:
        with _StopFlag() as stop:
            finished = _train_loop(
                trainer,
                state,
                params,
                train_loader,
                val_loader,
                dataset,
                tracker,
                config,
                stop,
                save,
                history,
                total_steps,
                best,
            )
            if not finished:
                tracker.end("KILLED")
                log.warning("stopped at step %d; rerun with --resume auto to continue", state.position.step)
                return ExitCode.PREEMPTED
            if val_loader is not None:
                evaluation = _final_evaluation(trainer, state, val_loader, dataset, amp, tracker, history, best,
                                               complete)  # fmt: skip
        if group.is_main:
            seconds = time.perf_counter() - started
            images = _image_problems(train_loader, val_loader)
            if images["skipped"] or images["decoded_on_cpu"]:
                run_info = {**run_info, "images": images}
            _finish(trainer, loaded, state, params, dataset, tracker, config, history, evaluation, seconds, run_info,
                    best if val_loader is not None else None, complete)  # fmt: skip
            if config.label_issues and val_loader is not None and trainer.task.reviews_labels:
                _label_review(config, dataset, device, tracker, state.position.step)
    except Stopped:
        tracker.end("KILLED")  # as a SIGTERM in the loop: stopped, not failed
        raise
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")
    return ExitCode.OK


def _with_policy(loader_config: LoaderConfig, policy: str) -> LoaderConfig:
    return replace(loader_config, on_bad_row=policy)


def _final_evaluation(trainer, state: _State, val_loader: DaliLoader, dataset: Dataset, amp: bool, tracker,
                      history, best: BestModel, complete: bool) -> Evaluator:  # fmt: skip
    """The evaluation of the model `train` saves: the final weights' (offered to `best`), then, when an
    earlier evaluation was better, the best weights are loaded and evaluated again for the pictures."""
    step = state.position.step
    if best.last_step != step:
        # A complete run's final validation is in its MLflow run already: not a second point.
        logged = NullTracker() if complete else tracker
        state.evaluation = _validate(trainer, state.model, val_loader, dataset, amp, logged, history, step)
        best.update(state.evaluation.metrics, step, state.position.epoch, state.model)
    evaluation = state.evaluation
    if best.weights is not None and best.step != step:
        state.model.load_state_dict(best.weights)
        log.info("keeping the best model: %s %.4f at epoch %d (step %d), not the last", best.monitor, best.value,
                 best.epoch, best.step)  # fmt: skip
        evaluation = None
    if evaluation is None:  # the best weights, or a resumed run's already counted evaluation: for the pictures
        evaluation = _validate(trainer, state.model, val_loader, dataset, amp, NullTracker(), defaultdict(list), step)
    return evaluation


def _checkpoint_to_resume(config: TrainConfig, folder: Path, params: CommonParams, dataset: Dataset) -> dict | None:
    if config.resume == "never":
        if has_checkpoints(folder):
            raise UserError(
                f"{folder} holds checkpoints of an earlier run; pass --resume auto to continue it, "
                "or choose a new --output-dir / --checkpoint-dir"
            )
        return None
    checkpoint = load_latest_checkpoint(folder)
    if checkpoint is None and has_checkpoints(folder):
        # Starting afresh would overwrite them: they may be a long run's only copy, torn by a full disk.
        names = ", ".join(str(p) for p in checkpoint_files(folder))
        raise UserError(
            f"--resume auto: no checkpoint in {folder} is readable ({names}); move them away (or restore "
            "them) to start a new run, or pass --resume never with a new --output-dir / --checkpoint-dir"
        )
    if checkpoint is None:
        log.info("no checkpoint in %s: starting a new run", folder)
        return None
    if tuple(checkpoint["classes"]) != dataset.class_map.names:
        raise UserError(
            f"the checkpoint in {folder} was trained on classes {checkpoint['classes']}, "
            f"not {list(dataset.class_map.names)}; start a new --output-dir"
        )
    current = params_to_dict(params)
    for key, value in checkpoint["params"].items():
        if key not in RESUMABLE_CHANGES and current.get(key) != value:
            raise UserError(
                f"the checkpoint in {folder} was made with {key}={value!r}, this run has {current.get(key)!r}; "
                "resume with the same hyperparameters or start a new --output-dir"
            )
    return checkpoint


def _restore(state: _State, checkpoint: dict[str, Any]) -> None:
    state.model.load_state_dict(checkpoint["model"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.scheduler.load_state_dict(checkpoint["scheduler"])
    state.scaler.load_state_dict(checkpoint["scaler"])
    set_rng_state(checkpoint["rng"])
    state.position = Position(checkpoint["step"], checkpoint["epoch"], checkpoint["batch"])


def _train_loop(
    trainer,
    state: _State,
    params: CommonParams,
    train_loader: DaliLoader,
    val_loader: DaliLoader | None,
    dataset: Dataset,
    tracker: Tracker,
    config: TrainConfig,
    stop: _StopFlag,
    save,
    history,
    total_steps: int,
    best: BestModel,
) -> bool:
    """Run epochs from state.position; True when training completed (or stopped early), False when
    stopped by SIGTERM."""
    model, device, group = state.model, train_loader.device, state.group
    train_model = state.train_model or model
    amp = state.amp_dtype is not None
    step = state.position.step
    progress = _Progress(total_steps, step, config.log_every)
    for epoch in range(state.position.epoch, params.epochs):
        batch_index = state.position.batch if epoch == state.position.epoch else 0
        train_loader.resume(epoch, batch_index)
        train_model.train()
        window: dict[str, list[float]] = defaultdict(list)
        tick = time.perf_counter()
        for batch in train_loader:
            data_time = time.perf_counter() - tick
            with torch.autocast(device.type, dtype=state.amp_dtype, enabled=amp):
                losses = trainer.loss(train_model, to_float(batch.images, trainer.mean, trainer.std), batch)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise UserError(
                    f"the loss became {loss.item()} at step {step + 1}; lower the learning rate (--set lr=...)"
                )
            state.optimizer.zero_grad(set_to_none=True)
            state.scaler.scale(loss).backward()
            if params.grad_clip:
                state.scaler.unscale_(state.optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip)
            state.scaler.step(state.optimizer)
            state.scaler.update()
            state.scheduler.step()
            step += 1
            batch_index += 1
            for name, value in losses.items():
                window[f"train/{name}"].append(float(value.detach()))
            window["time/data_s"].append(data_time)
            window["time/step_s"].append(time.perf_counter() - tick)
            stopping = group.any(stop.requested)  # every rank stops at the same step
            if step % config.log_every == 0 or step == total_steps or stopping:
                means = group.mean({name: float(np.mean(values)) for name, values in window.items()})
                means["train/lr"] = state.optimizer.param_groups[0]["lr"]
                tracker.log_metrics(means, step)
                history["train_loss"].append((step, means["train/loss"]))
                progress.update(step, epoch, params.epochs, means)
                window.clear()
            done = bool(params.max_steps) and step >= params.max_steps
            if stopping or done or (config.checkpoint_every and step % config.checkpoint_every == 0):
                save(Position(step, epoch, batch_index))
            if stopping:
                progress.close()
                return False
            if done:
                progress.close()
                return True
            tick = time.perf_counter()
        early = False
        if val_loader is not None and (epoch + 1) % config.eval_every == 0 and epoch + 1 < params.epochs:
            evaluation = _validate(trainer, model, val_loader, dataset, amp, tracker, history, step)
            state.evaluation = evaluation
            summary = ", ".join(f"{name} {evaluation.metrics[name]:.4f}" for name in trainer.summary_metrics)
            log.info("epoch %d: val %s", epoch + 1, summary)
            early = best.update(evaluation.metrics, step, epoch + 1, model)
        # After the evaluation, so that the checkpoint holds the decisions it led to.
        save(Position(step, epoch + 1, 0))
        if early:
            log.info("stopping early: %s has not beaten %.4f (epoch %d) for %d evaluations", best.monitor,
                     best.value, best.epoch, best.patience)  # fmt: skip
            progress.close()
            return True
        if group.any(stop.requested):
            return False
    progress.close()
    return True


def _validate(
    trainer,
    model: torch.nn.Module,
    val_loader: DaliLoader,
    dataset: Dataset,
    amp: bool,
    tracker: Tracker | NullTracker,
    history: dict[str, list[tuple[int, float]]],
    step: int,
) -> Evaluator:
    """Evaluate on the validation set: every metric to the tracker, the summary metrics to the curves."""
    evaluation = validate(trainer, model, val_loader, dataset.class_map, amp)
    tracker.log_metrics({f"val/{k}": v for k, v in evaluation.metrics.items()}, step)
    for name in trainer.summary_metrics:
        history[f"val_{name}"].append((step, evaluation.metrics[name]))
    return evaluation


def _finish(
    trainer,
    loaded: LoadedTrainer,
    state: _State,
    params,
    dataset: Dataset,
    tracker: Tracker,
    config: TrainConfig,
    history,
    evaluation: Evaluator | None,
    seconds: float,
    run_info: dict,
    best: BestModel | None,
    complete: bool,
) -> None:
    output_dir = config.output_dir
    # A complete run's final points are in its MLflow run already (its model may not be: it is logged).
    points = NullTracker() if complete else tracker
    images = run_info.get("images", {"skipped": {}, "decoded_on_cpu": {}})
    plots = output_dir / "plots"
    plot_curves(history, plots)
    if evaluation is not None:
        evaluation.draw(plots)
    metrics = {
        "step": state.position.step,
        "epoch": state.position.epoch,
        "train_loss": history["train_loss"][-1][1] if history.get("train_loss") else None,
        "val": evaluation.metrics if evaluation is not None else None,
        **(evaluation.details if evaluation is not None else {}),
        "seconds": round(seconds, 1),
        "skipped_images": len(images["skipped"]),
        "cpu_decoded_images": len(images["decoded_on_cpu"]),
        **({"best": best.summary()} if best is not None else {}),
    }
    if best is not None and best.value is not None:
        found = {"best/value": best.value, "best/step": best.step, "best/epoch": best.epoch,
                 "best/stopped_early": float(best.stopped_at is not None)}  # fmt: skip
        points.log_metrics(found, state.position.step)
        if best.step != best.last_step:
            # The monitored metric's last point is the kept model's value (one step after the last
            # evaluation's), so what a sweep reads last for its objective describes the saved model.
            points.log_metrics({best.monitor: best.value}, state.position.step + 1)
    points.log_metrics({"data/skipped_images": len(images["skipped"]),
                         "data/cpu_decoded_images": len(images["decoded_on_cpu"])}, state.position.step)  # fmt: skip
    exported = trainer.export(state.model, params, dataset.class_map)
    settings = ModelSettings.of(trainer, loaded.module.__name__, params)
    outputs = StagedOutputs(output_dir)
    try:
        write_json_atomic(outputs.path("run.json"), run_info)
        dataset.class_map.save(outputs.path("class_map.json"))
        write_json_atomic(outputs.path("metrics.json"), metrics)
        build_model_dir(outputs.path("model"), exported, settings, dataset.class_map, loaded.source)
        if trainer.exports_onnx:
            _export_onnx(Predictor(trainer, exported, dataset.class_map, settings, torch.device("cpu")),
                         outputs.path("model.onnx"))  # fmt: skip
        outputs.publish()
    finally:
        outputs.discard()
    model_uri = tracker.log_model(output_dir / "model", config.register_as)
    if (output_dir / "model.onnx").exists():
        log.info("ONNX model: %s", output_dir / "model.onnx")
        tracker.log_artifact(output_dir / "model.onnx")
    tracker.log_artifacts(plots, "plots")
    tracker.log_dict(metrics, "metrics.json")
    log.info("model: %s (MLflow %s, tracking %s)", output_dir / "model", model_uri, tracker.tracking_uri)
    if config.register_as:
        log.info("registered as %r", config.register_as)


def _data_report(dataset: Dataset, output_dir: Path, tracker: Tracker) -> None:
    """`validate --report`'s report of the run's data, in OUTPUT_DIR/data_report and the MLflow run; the
    checks' counts are logged as params (data/checks.*), so runs can be compared on them."""
    from trainkit.data.checks import CheckOptions
    from trainkit.data.report import dataset_checks, dataset_splits
    from trainkit.data.visual_report import write_report

    checks = dataset_checks(dataset, CheckOptions())
    report = write_report(dataset_splits(dataset), checks, output_dir / "data_report").parent
    write_json_atomic(report / "checks.json", checks.to_json())
    found = ", ".join(f"{name.replace('_', ' ')} {n}" for name, n in checks.counts().items() if n)
    log.info("data report: %s (checks: %s)", report / "report.html", found or "nothing found")
    tracker.log_params({f"data/checks.{name}": n for name, n in checks.counts().items()})
    tracker.log_artifacts(report, "data_report")


def _label_review(config: TrainConfig, dataset: Dataset, device: torch.device, tracker: Tracker, step: int) -> None:
    """The saved model against the validation labels, which it did not learn from: `evaluate
    --label-issues`'s label_issues.csv and drawings in the output folder and the MLflow run."""
    from trainkit.inference.evaluate import review_labels

    try:
        counts, files = review_labels(config.output_dir / "model", dataset.val, config.output_dir, device)
    except Exception as exc:  # the model and its outputs are complete: a failed review costs the run nothing
        log.warning(
            "the label review failed (%s: %s); the model is complete; run `trainkit evaluate --label-issues` on the "
            "validation set to retry", type(exc).__name__, " ".join(str(exc).split())[:300],
        )  # fmt: skip
        return
    if not files:
        return
    tracker.log_metrics({f"label_issues/{kind}": n for kind, n in counts.items()}, step)
    tracker.log_artifact(files[0])
    if len(files) > 1:
        tracker.log_artifacts(files[1].parent, "label_issues")


def _image_problems(train_loader: DaliLoader, val_loader: DaliLoader | None) -> dict[str, dict[str, str]]:
    """Files left out (under --on-bad-row skip) and files DALI could not decode but Pillow could,
    path -> reason, over the whole run; logged once here, and reported in run.json and metrics.json."""
    loaders = [loader for loader in (train_loader, val_loader) if loader is not None]
    skipped = {path: why for loader in loaders for path, why in loader.skipped.items()}
    on_cpu = {path: why for loader in loaders for path, why in loader.decoded_on_cpu.items()}
    if skipped:
        log.warning("%d images left out as unreadable (listed in run.json)", len(skipped))
    if on_cpu:
        log.info("%d images decoded with Pillow, which DALI's decoder refused (listed in run.json)", len(on_cpu))
    return {"skipped": skipped, "decoded_on_cpu": on_cpu}


def _export_onnx(predictor: Predictor, path: Path) -> Path | None:
    """model.onnx beside the MLflow model. A failure here costs the run nothing: the MLflow model is
    complete, so it is a warning saying how to retry, not a failed run."""
    from trainkit.inference.onnx_export import export_onnx

    try:
        written = export_onnx(predictor, path)
    except Exception as exc:  # any exporter failure: the trained model itself is safe
        log.warning(
            "ONNX export failed (%s: %s); the MLflow model is complete; retry with `trainkit export`, or set "
            "exports_onnx = False on the trainer", type(exc).__name__, " ".join(str(exc).split())[:300],
        )  # fmt: skip
        return None
    return written


def _run_info(config: TrainConfig, loaded: LoadedTrainer, params, dataset: Dataset, tracker: Tracker, device) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"trainkit": trainkit.__version__, "python": platform.python_version()}
    for name in ("torch", "torchvision", "nvidia-dali-cuda130", "mlflow", "torchmetrics"):
        with contextlib.suppress(PackageNotFoundError):
            versions[name] = version(name)
    return {
        "trainer": loaded.trainer.name,
        "trainer_source": str(loaded.source) if loaded.source else loaded.module.__name__,
        "config": config.to_json(),
        "hyperparameters": params_to_dict(params),
        "classes": list(dataset.class_map.names),
        "train_images": len(dataset.train),
        "val_images": len(dataset.val) if dataset.val is not None else 0,
        "split": dataset.split,
        "device": str(device),
        "versions": versions,
        "image": os.environ.get("TRAINKIT_IMAGE", ""),
        "image_digest": os.environ.get("TRAINKIT_IMAGE_DIGEST", ""),
        "mlflow_run_id": tracker.run_id,
        "mlflow_tracking_uri": tracker.tracking_uri,
        "argv": sys.argv,
    }


class _Progress:
    """A tqdm bar on a terminal; plain log lines every `log_every` steps elsewhere (AzureML logs)."""

    def __init__(self, total: int, start: int, log_every: int) -> None:
        self._bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)
        self._last = start

    def update(self, step: int, epoch: int, epochs: int, means: dict[str, float]) -> None:
        text = (
            f"loss {means['train/loss']:.4f} lr {means['train/lr']:.3g} "
            f"data {means['time/data_s']:.3f}s step {means['time/step_s']:.3f}s"
        )
        if self._bar is not None:
            self._bar.update(step - self._last)
            self._bar.set_postfix_str(f"epoch {epoch + 1}/{epochs} {text}")
        else:
            log.info("epoch %d/%d step %d: %s", epoch + 1, epochs, step, text)
        self._last = step

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

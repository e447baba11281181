"""The training harness: everything every model needs, around the few methods a trainer supplies.

A run goes through its steps top to bottom (`_run`): prepare (hyperparameters, the checkpoint to
resume, seeds), loaders, model and optimiser state (restored from the checkpoint), tracking, the
training loop (epochs and steps, AMP, gradient clipping, progress, validation, the best model and
early stopping, atomic checkpoints, SIGTERM: finish the step, checkpoint, exit 3), the final
validation and the outputs. What a run does besides training (the data report, ONNX export, the
model in MLflow, the label review) are hooks on it (training.hooks); its state lives in one
`Run` (training.run).
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
from dataclasses import replace
from pathlib import Path

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
)
from trainkit.training.curves import plot_curves
from trainkit.training.ddp import ProcessGroup
from trainkit.training.discovery import LoadedTrainer
from trainkit.training.folder_lock import hold_folder
from trainkit.training.hooks import RunHook, run_hooks
from trainkit.training.outputs import StagedOutputs
from trainkit.training.parameters import count_parameters
from trainkit.training.run import Run, TrainingState
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
    run = _prepare(config, dataset, loaded, group, device)
    _make_loaders(run)
    _make_state(run)
    _start_tracking(run)
    hooks = run_hooks(run) if group.is_main else []
    if run.checkpoint is None:  # a resumed run's hooks started when it first began
        for hook in hooks:
            hook.started(run)
    try:
        with _StopFlag() as stop:
            started = time.perf_counter()
            if not _train_loop(run, stop):
                run.tracker.end("KILLED")
                log.warning("stopped at step %d; rerun with --resume auto to continue", run.state.position.step)
                return ExitCode.PREEMPTED
            if run.val_loader is not None:
                run.evaluation = _final_evaluation(run)
            run.seconds = time.perf_counter() - started
        if group.is_main:
            _finish(run, hooks)
    except Stopped:
        run.tracker.end("KILLED")  # as a SIGTERM in the loop: stopped, not failed
        raise
    except BaseException:
        run.tracker.end("FAILED")
        raise
    run.tracker.end("FINISHED")
    return ExitCode.OK


def _prepare(config: TrainConfig, dataset: Dataset, loaded: LoadedTrainer, group: ProcessGroup, device) -> Run:
    """The typed hyperparameters, the output folder, the checkpoint to resume (checked against this
    run), the seeds and the shared-memory check."""
    trainer = loaded.trainer
    params = parse_params(trainer.Params, config.hyperparameters)
    amp_dtype = trainer.amp_dtype(device) if params.amp and device.type == "cuda" else None
    checkpoint_dir = config.checkpoint_dir or config.output_dir / "checkpoints"
    if group.is_main:
        config.output_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = _checkpoint_to_resume(config, checkpoint_dir, params, dataset)
    random.seed(params.seed)
    np.random.seed(params.seed)
    torch.manual_seed(params.seed)
    shm_problem = shm_warning(shm_bytes(), local_processes())
    if shm_problem:
        log.warning(shm_problem)
    return Run(config, dataset, loaded, group, device, params, checkpoint_dir, checkpoint, amp_dtype)


def _make_loaders(run: Run) -> None:
    """The training loader (this process's shard) and the validation loader (the whole set, on every
    rank: no rank waits on another's share), and the run's length in steps."""
    trainer, params, policy = run.trainer, run.params, run.config.data.options.on_bad_row
    shard = Shard(run.group.rank, run.group.world)
    run.train_loader = create_loader(
        run.dataset.train, _with_policy(trainer.loader_config(params, True), policy), run.device, shard
    )
    if run.dataset.val is not None and len(run.dataset.val):
        val_config = _with_policy(trainer.loader_config(params, False), policy)
        run.val_loader = create_loader(run.dataset.val, val_config, run.device)
    tiles = trainer.loader_config(params, False).tiles
    if tiles is not None:
        windows = f"{len(run.train_loader.epoch_order(0))} windows an epoch" if params.tile_train else "whole images"
        log.info("tiles: %s; training on %s, validating on tiles", describe(tiles), windows)
    run.total_steps = params.epochs * len(run.train_loader)
    if params.max_steps:
        run.total_steps = min(run.total_steps, params.max_steps)


def _make_state(run: Run) -> None:
    """The model, optimiser, schedule and scaler, the best-model keeper, restored from the checkpoint
    to resume; then wrapped for distributed training."""
    trainer, params = run.trainer, run.params
    model = trainer.build_model(params, run.dataset.class_map).to(run.device)
    run.info["parameters"] = count_parameters(model)
    log.info(run.info["parameters"].describe())
    optimizer = trainer.configure_optimizer(model, params)
    run.state = TrainingState(
        model=model,
        optimizer=optimizer,
        scheduler=trainer.configure_scheduler(optimizer, params, run.total_steps),
        scaler=torch.amp.GradScaler(run.device.type, enabled=run.amp_dtype == torch.float16),
        position=Position(0, 0, 0),
        train_model=model,
    )
    run.best = BestModel(params.monitor or trainer.monitor, params.patience, params.min_delta)
    if params.patience and run.val_loader is None:
        raise UserError("hyperparameter 'patience' needs a validation set: pass --val-fraction, --val-labelset "
                        "or --test-set, or leave patience at 0")  # fmt: skip
    checkpoint = run.checkpoint
    if checkpoint is not None:
        if checkpoint.get("best"):
            run.best.load_state_dict(checkpoint["best"])
        # A checkpoint of a run that had finished: nothing left to train; its outputs are written again.
        run.complete = (
            checkpoint["epoch"] >= params.epochs
            or bool(params.max_steps and checkpoint["step"] >= params.max_steps)
            or run.best.stopped_at is not None
        )
        run.state.restore(checkpoint)
        position = run.state.position
        if run.complete:
            log.info("the checkpoint's run was complete (step %d, %d epochs): writing its outputs again",
                     position.step, min(position.epoch, params.epochs))  # fmt: skip
        else:
            log.info("resuming at step %d (epoch %d of %d, batch %d)", position.step, position.epoch + 1,
                     params.epochs, position.batch)  # fmt: skip
        run.history.update(checkpoint.get("history", {}))
    # Wrapped after restoring, so that every rank starts from the same weights (DDP broadcasts rank 0's).
    run.state.train_model = run.group.wrap(model)
    if run.group.distributed:
        world, batch = run.group.world, params.batch_size
        log.info("%d processes, batch %d each: global batch %d", world, batch, world * batch)


def _start_tracking(run: Run) -> None:
    """The MLflow run (rank 0; resumed when the checkpoint names it), its parameters, run.json and the
    class map."""
    if not run.group.is_main:
        return
    run_id = run.checkpoint.get("mlflow_run_id") if run.checkpoint else None
    run.tracker = Tracker(run.output_dir, run.config.experiment, run_id)
    parameters = run.info.pop("parameters")
    # run.json and class_map.json go into the output folder with the model at the end (see
    # training.outputs); MLflow has them from the start.
    run.info = {**_run_info(run.config, run.loaded, run.params, run.dataset, run.tracker, run.device),
                "parameters": parameters.to_json()}  # fmt: skip
    run.tracker.log_params({
        **{f"hp.{k}": v for k, v in params_to_dict(run.params).items()},
        "trainer": run.trainer.name,
        "model.parameters": parameters.total,
        "model.trainable_parameters": parameters.trainable,
    })  # fmt: skip
    run.tracker.log_dict(run.info, "run.json")
    run.tracker.log_dict(run.dataset.class_map.to_json(), "class_map.json")


def _with_policy(loader_config: LoaderConfig, policy: str) -> LoaderConfig:
    return replace(loader_config, on_bad_row=policy)


def _save(run: Run, position: Position) -> None:
    """Checkpoint the run at `position` (rank 0 writes; every rank records the position)."""
    run.state.position = position
    if not run.group.is_main:
        return
    state = run.state
    save_checkpoint(
        run.checkpoint_dir,
        {
            "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "scaler": state.scaler.state_dict(),
            "step": position.step,
            "epoch": position.epoch,
            "batch": position.batch,
            "rng": rng_state(),
            "mlflow_run_id": run.tracker.run_id,
            "classes": list(run.dataset.class_map.names),
            "params": params_to_dict(run.params),
            "history": dict(run.history),
            "best": run.best.state_dict(),
        },
    )


def _final_evaluation(run: Run) -> Evaluator:
    """The evaluation of the model `train` saves: the final weights' (offered to `best`), then, when an
    earlier evaluation was better, the best weights are loaded and evaluated again for the pictures."""
    state, best = run.state, run.best
    step = state.position.step
    if best.last_step != step:
        # A complete run's final validation is in its MLflow run already: not a second point.
        logged = NullTracker() if run.complete else run.tracker
        run.latest = _validate(run, logged, run.history, step)
        best.update(run.latest.metrics, step, state.position.epoch, state.model)
    evaluation = run.latest
    if best.weights is not None and best.step != step:
        state.model.load_state_dict(best.weights)
        log.info("keeping the best model: %s %.4f at epoch %d (step %d), not the last", best.monitor, best.value,
                 best.epoch, best.step)  # fmt: skip
        evaluation = None
    if evaluation is None:  # the best weights, or a resumed run's already counted evaluation: for the pictures
        evaluation = _validate(run, NullTracker(), defaultdict(list), step)
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


def _train_loop(run: Run, stop: _StopFlag) -> bool:
    """Run epochs from the state's position; True when training completed (or stopped early), False
    when stopped by SIGTERM."""
    trainer, params, config, state, group = run.trainer, run.params, run.config, run.state, run.group
    train_loader, tracker, best = run.train_loader, run.tracker, run.best
    model, train_model, device = state.model, state.train_model, train_loader.device
    step = state.position.step
    progress = _Progress(run.total_steps, step, config.log_every)
    for epoch in range(state.position.epoch, params.epochs):
        batch_index = state.position.batch if epoch == state.position.epoch else 0
        train_loader.resume(epoch, batch_index)
        train_model.train()
        window: dict[str, list[float]] = defaultdict(list)
        tick = time.perf_counter()
        for batch in train_loader:
            data_time = time.perf_counter() - tick
            with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.amp):
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
            if step % config.log_every == 0 or step == run.total_steps or stopping:
                means = group.mean({name: float(np.mean(values)) for name, values in window.items()})
                means["train/lr"] = state.optimizer.param_groups[0]["lr"]
                tracker.log_metrics(means, step)
                run.history["train_loss"].append((step, means["train/loss"]))
                progress.update(step, epoch, params.epochs, means)
                window.clear()
            done = bool(params.max_steps) and step >= params.max_steps
            if stopping or done or (config.checkpoint_every and step % config.checkpoint_every == 0):
                _save(run, Position(step, epoch, batch_index))
            if stopping:
                progress.close()
                return False
            if done:
                progress.close()
                return True
            tick = time.perf_counter()
        early = False
        if run.val_loader is not None and (epoch + 1) % config.eval_every == 0 and epoch + 1 < params.epochs:
            run.latest = evaluation = _validate(run, tracker, run.history, step)
            summary = ", ".join(f"{name} {evaluation.metrics[name]:.4f}" for name in trainer.summary_metrics)
            log.info("epoch %d: val %s", epoch + 1, summary)
            early = best.update(evaluation.metrics, step, epoch + 1, model)
        # After the evaluation, so that the checkpoint holds the decisions it led to.
        _save(run, Position(step, epoch + 1, 0))
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
    run: Run, tracker: Tracker | NullTracker, history: dict[str, list[tuple[int, float]]], step: int
) -> Evaluator:
    """Evaluate the model on the validation set at `step`: every metric to `tracker`, the summary metrics
    to `history`'s curves."""
    evaluation = validate(run.trainer, run.state.model, run.val_loader, run.dataset.class_map, run.amp)
    tracker.log_metrics({f"val/{k}": v for k, v in evaluation.metrics.items()}, step)
    for name in run.trainer.summary_metrics:
        history[f"val_{name}"].append((step, evaluation.metrics[name]))
    return evaluation


def _finish(run: Run, hooks: list[RunHook]) -> None:
    """The curves and pictures, metrics.json, and the output set (run.json, class_map.json, metrics.json,
    the MLflow model and what the hooks stage), published together; then the hooks' end."""
    state, tracker, evaluation = run.state, run.tracker, run.evaluation
    # A complete run's final points are in its MLflow run already (its model may not be: it is logged).
    points = NullTracker() if run.complete else tracker
    images = _image_problems(run.train_loader, run.val_loader)
    if images["skipped"] or images["decoded_on_cpu"]:
        run.info = {**run.info, "images": images}
    plots = run.output_dir / "plots"
    plot_curves(run.history, plots)
    if evaluation is not None:
        evaluation.draw(plots)
    best = run.best if run.val_loader is not None else None
    metrics = {
        "step": state.position.step,
        "epoch": state.position.epoch,
        "train_loss": run.history["train_loss"][-1][1] if run.history.get("train_loss") else None,
        "val": evaluation.metrics if evaluation is not None else None,
        **(evaluation.details if evaluation is not None else {}),
        "seconds": round(run.seconds, 1),
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
    exported = run.trainer.export(state.model, run.params, run.dataset.class_map)
    settings = ModelSettings.of(run.trainer, run.loaded.module.__name__, run.params)
    outputs = StagedOutputs(run.output_dir)
    try:
        write_json_atomic(outputs.path("run.json"), run.info)
        run.dataset.class_map.save(outputs.path("class_map.json"))
        write_json_atomic(outputs.path("metrics.json"), metrics)
        build_model_dir(outputs.path("model"), exported, settings, run.dataset.class_map, run.loaded.source)
        for hook in hooks:
            hook.stage(run, outputs, exported, settings)
        outputs.publish()
    finally:
        outputs.discard()
    tracker.log_artifacts(plots, "plots")
    tracker.log_dict(metrics, "metrics.json")
    for hook in hooks:
        hook.finished(run)


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

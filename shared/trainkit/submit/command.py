"""`trainkit submit`: command-line options -> SubmitConfig -> job specs -> (dry run | AzureML)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from trainkit.contract import ExitCode
from trainkit.errors import UserError
from trainkit.submit.spec import DatasetPairRef, SubmitConfig, grid_points, job_specs, parse_grid, sweep_specs
from trainkit.submit.sweep import (
    SAMPLINGS,
    SweepConfig,
    check_objective,
    parse_duration,
    parse_early_termination,
    parse_objective,
    parse_search,
)
from trainkit.weights import is_named, named_weights

if TYPE_CHECKING:
    from trainkit.params import CommonParams

log = logging.getLogger("trainkit")
DEFAULT_MANIFEST = Path("dist") / "images.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The submit command's options."""
    g = p.add_argument_group("what runs")
    g.add_argument("--trainer", default="", help="trainer name (its image comes from --manifest) or trainer folder")
    g.add_argument(
        "--manifest",
        type=Path,
        default=Path(os.environ.get("TRAINKIT_IMAGE_MANIFEST") or DEFAULT_MANIFEST),
        help="the publish manifest (ci/publish.py; env TRAINKIT_IMAGE_MANIFEST)",
    )
    g.add_argument("--image", default="", help="an image pinned by digest (REPOSITORY@sha256:...), not from --manifest")
    g = p.add_argument_group("data (one pair; --pair repeated: one job per pair; --train-pair/--test-pair: one job)")
    g.add_argument("--imageset", default="", help="image set: azureml:NAME:VERSION, datastore/cloud URI, local folder")
    g.add_argument("--labelset", default="", help="label set: azureml:NAME:VERSION, URI, or local file/folder")
    g.add_argument("--pair", nargs=2, action="append", default=[], metavar=("LABELSET", "IMAGESET"))
    g.add_argument(
        "--train-pair", nargs=2, action="append", default=[], metavar=("LABELSET", "IMAGESET"),
        help="a training pair of one job holding several (repeatable; the predecessor's train_sets)",
    )  # fmt: skip
    g.add_argument(
        "--test-pair", nargs=2, action="append", default=[], metavar=("LABELSET", "IMAGESET"),
        help="a validation pair of that job (repeatable; the predecessor's test_sets)",
    )  # fmt: skip
    g.add_argument(
        "--labelset-type", choices=("auto", "uri_file", "uri_folder", "mltable"), default="auto",
        help="input type of the label sets (auto: from the path; registered assets: mltable)",
    )  # fmt: skip
    g.add_argument(
        "--datastore-name", default=os.environ.get("DATASTORE_NAME", ""),
        help="image sets' datastore folder, passed to the job as DATASTORE_NAME (env DATASTORE_NAME)",
    )  # fmt: skip
    g = p.add_argument_group("hyperparameters (checked against the trainer's typed parameters)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="one hyperparameter (repeatable)")
    g.add_argument("--params", type=Path, metavar="FILE", help="hyperparameters from a JSON object file")
    g.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="one job per value (repeatable)")
    g.add_argument(
        "--weights", default="", metavar="REF",
        help="starting weights: azureml:MODEL:VERSION (a registered model), a local file or folder (uploaded), "
        "a URI, or torchvision:NAME (baked into the image)",
    )  # fmt: skip
    g.add_argument(
        "--weights-type", choices=("auto", "mlflow_model", "custom_model", "uri_file", "uri_folder"), default="auto",
        help="input type of --weights (auto: mlflow_model for a registered model, else from the path)",
    )  # fmt: skip
    g.add_argument(
        "--class-map", default="", metavar="REF",
        help="fix the classes and their ids (as for train): a local file or run folder (uploaded), a URI or an asset",
    )  # fmt: skip
    g = p.add_argument_group("sweep: one AzureML sweep job instead (SDK v2; see trainkit.submit.sweep)")
    g.add_argument("--sweep", action="store_true", help="submit a sweep job over --search")
    g.add_argument(
        "--search", action="append", default=[], metavar="KEY=DIST",
        help="choice(a,b,...), uniform(lo,hi), loguniform(lo,hi), quniform(lo,hi,q) or randint(n) (repeatable)",
    )  # fmt: skip
    g.add_argument("--sampling", choices=SAMPLINGS, default="random", help="how trials pick values")
    g.add_argument(
        "--objective", default="", metavar="METRIC[:GOAL]",
        help="the metric trials are ranked by, as logged (default: the trainer's monitor, e.g. val/map:maximize)",
    )  # fmt: skip
    g.add_argument(
        "--early-termination", default="", metavar="POLICY:K=V,...",
        help="bandit:slack_factor=0.1,evaluation_interval=1,delay_evaluation=2, median_stopping:..., "
        "truncation_selection:truncation_percentage=20,...",
    )  # fmt: skip
    g.add_argument("--max-trials", type=int, default=20, metavar="N", help="trials in all")
    g.add_argument("--max-concurrent-trials", type=int, metavar="N", help="trials at once (default: AzureML's)")
    g.add_argument("--timeout", default="", metavar="T", help="the whole sweep's limit: seconds, or 90m, 6h, 1d")
    g.add_argument("--trial-timeout", default="", metavar="T", help="each trial's limit: seconds, or 90m, 6h, 1d")
    g = p.add_argument_group("where and how")
    g.add_argument("--experiment", default="", help="AzureML experiment (default trainkit-<trainer>)")
    g.add_argument("--compute", default="", help="compute cluster name")
    g.add_argument("--instance-type", default="", help="VM size for serverless compute (when no --compute)")
    g.add_argument("--instance-count", type=int, default=1, metavar="N", help="nodes")
    g.add_argument("--processes-per-node", type=int, default=1, metavar="N", help="processes per node")
    g.add_argument("--low-priority", action="store_true", help="serverless spot capacity; jobs resume after preemption")
    g.add_argument("--shm-size", default="16g", help="/dev/shm size for the loader")
    g.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="job tag (repeatable)")
    g.add_argument("--dry-run", type=Path, metavar="DIR", help="write the job YAML files to DIR and check them offline")
    g.add_argument(
        "--sdk", choices=("v2", "v1"), default="v2",
        help="v1: azureml-core (retired; the submit-v1 extra) for workspaces that still run it",
    )  # fmt: skip
    g = p.add_argument_group("workspace (else env AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP, AZUREML_WORKSPACE_NAME)")
    g.add_argument("--subscription", default="")
    g.add_argument("--resource-group", default="")
    g.add_argument("--workspace", default="")
    g.add_argument("--workspace-config", type=Path, metavar="FILE", help="the workspace's config.json")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: more `trainkit train` options")


def config_from_args(args: argparse.Namespace) -> SubmitConfig:
    """Resolve the trainer's image, read and check the hyperparameters, and collect the dataset pairs."""
    from trainkit.config import load_params_file, parse_set_options

    name, folder = _trainer(args.trainer, args.image)
    if args.image:
        image, baked = args.image, None
    else:
        from trainkit.submit.image_manifest import load_image_manifest

        published = load_image_manifest(args.manifest).image_for(name)
        image, baked = published.reference, published.weights
    fixed = {**(load_params_file(args.params) if args.params else {}), **parse_set_options(args.set)}
    weights = args.weights
    if is_named(weights):
        # Baked into the image, not an input: the job names them, as `--set weights=` would.
        _check_baked(weights, baked, image, "--weights")
        if "weights" in fixed:
            raise UserError("weights given twice: pass --weights, or --set weights=..., not both")
        fixed["weights"], weights = weights, ""
    grid = parse_grid(args.grid)
    _check_params(name, folder, grid_points(fixed, grid), baked, image)
    pairs = [DatasetPairRef(labelset, imageset) for labelset, imageset in args.pair]
    if args.imageset or args.labelset:
        if not (args.imageset and args.labelset):
            raise UserError("give both --imageset and --labelset (or --pair LABELSET IMAGESET)")
        pairs.insert(0, DatasetPairRef(args.labelset, args.imageset))
    tags = {}
    for item in args.tag:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--tag {item!r}: expected KEY=VALUE")
        tags[key] = value
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    return SubmitConfig(
        trainer=name, image=image, pairs=tuple(pairs), experiment=args.experiment or f"trainkit-{name}",
        compute=args.compute, instance_type=args.instance_type, labelset_type=args.labelset_type,
        datastore_name=args.datastore_name, hyperparameters=fixed, grid=grid, instance_count=args.instance_count,
        processes_per_node=args.processes_per_node, low_priority=args.low_priority, shm_size=args.shm_size,
        tags=tags, train_args=tuple(train_args),
        train_pairs=tuple(DatasetPairRef(labels, images) for labels, images in args.train_pair),
        test_pairs=tuple(DatasetPairRef(labels, images) for labels, images in args.test_pair),
        weights=weights, weights_type=args.weights_type, class_map=args.class_map, baked_weights=baked,
    )  # fmt: skip


def _check_baked(spec: str, baked: tuple[str, ...] | None, image: str, where: str) -> None:
    """torchvision's weights `spec` must be in the image, when its manifest says what the image holds."""
    name = named_weights(spec).name
    if baked is None:
        log.warning("%s %s: the image manifest does not say what %s baked; not checked", where, name, image)
    elif name not in baked:
        raise UserError(
            f"{where} {spec}: not baked into {image} (it holds: {', '.join(baked) or 'no weights'}); build the "
            f"trainer's image with --build-arg WEIGHTS='{name}' (ci/publish.py: TRAINKIT_WEIGHTS='{name}') and "
            "publish it, or pass the weights file as --weights FILE"
        )


def check_baked_params(params: CommonParams, baked: tuple[str, ...] | None, image: str) -> None:
    """Every torchvision weights the hyperparameters name (an arch's COCO default included, as the
    trainer resolved it) must be baked into the job's image: a job never downloads them."""
    for field in dataclasses.fields(params):
        value = getattr(params, field.name)
        if isinstance(value, str) and is_named(value):
            _check_baked(value, baked, image, f"hyperparameter {field.name!r} =")


def _trainer(spec: str, image: str) -> tuple[str, Path | None]:
    """(trainer name, its local folder if there is one, for checking hyperparameters)."""
    if not spec:
        match = re.search(r"/trainkit-([a-z0-9_.-]+)@", image)
        if not match:
            raise UserError("no trainer: pass --trainer NAME (the manifest gives its image) or --image")
        spec = match.group(1)
    path = Path(spec)
    if path.is_dir():
        return path.resolve().name, path
    if "/" in spec:
        raise UserError(f"--trainer {spec}: no such trainer folder")
    folder = Path("trainers") / spec
    return spec, folder if folder.is_dir() else None


def _check_params(
    name: str, folder: Path | None, points: list[dict[str, object]], baked: tuple[str, ...] | None, image: str
) -> None:
    if folder is None:
        log.warning("hyperparameters of %s not checked before submitting: no trainers/%s folder here", name, name)
        return
    from trainkit.params import parse_params
    from trainkit.training.discovery import load_trainer

    params = load_trainer(str(folder)).trainer.Params
    for point in points:
        check_baked_params(parse_params(params, point), baked, image)


def sweep_from_args(args: argparse.Namespace, config: SubmitConfig) -> SweepConfig:
    """The sweep options, checked: every searched key at every value the sampler can reach against the
    trainer's typed hyperparameters, the objective against the metrics it logs."""
    if args.sdk == "v1":
        raise UserError("--sweep needs SDK v2 (azure-ai-ml): SDK v1 support ended on 2026-06-30; drop --sdk v1")
    name, folder = _trainer(args.trainer, args.image)
    search = parse_search(args.search)
    trainer = None
    if folder is not None:
        from trainkit.training.discovery import load_trainer

        trainer = load_trainer(str(folder)).trainer
    metric, goal = parse_objective(args.objective, trainer.monitor if trainer else "val/map")
    sweep = SweepConfig(
        search=tuple(search), objective=metric, goal=goal, sampling=args.sampling,
        early_termination=parse_early_termination(args.early_termination), max_trials=args.max_trials,
        max_concurrent_trials=args.max_concurrent_trials, timeout=parse_duration(args.timeout, "--timeout"),
        trial_timeout=parse_duration(args.trial_timeout, "--trial-timeout"),
    )  # fmt: skip
    sweep.check()
    if trainer is None:
        log.warning("search space and objective of %s not checked before submitting: no trainers/%s folder here",
                    name, name)  # fmt: skip
        return sweep
    check_objective(metric, trainer.metric_names(), name)
    from trainkit.params import parse_params

    for distribution in search:
        for value in distribution.reachable():
            try:
                params = parse_params(trainer.Params, {**config.hyperparameters, distribution.key: value})
                check_baked_params(params, config.baked_weights, config.image)
            except UserError as exc:
                raise UserError(f"--search {distribution.key}={sweep.describe(distribution.key)}: the trainer "
                                f"refuses {distribution.key}={value!r}: {exc}") from None  # fmt: skip
    return sweep


def run(args: argparse.Namespace) -> int:
    """The `trainkit submit` command."""
    from trainkit.submit.workspace import find_workspace, load_and_validate, submit, write_specs

    config = config_from_args(args)
    sweeping = args.sweep
    if not sweeping and (args.search or args.objective or args.early_termination):
        raise UserError("--search, --objective and --early-termination need --sweep (one sweep job); for a job "
                        "per value use --grid KEY=V1,V2")  # fmt: skip
    if sweeping:
        specs = sweep_specs(config, sweep_from_args(args, config))
    elif args.sdk == "v1":
        return _run_v1(args, config)
    else:
        specs = job_specs(config)
    if args.dry_run:
        paths = write_specs(specs, args.dry_run)
        for path in paths:
            load_and_validate(path)
            print(path)
        kind = "sweep job" if sweeping else "job"
        log.info("%d %s(s) written and checked by azure-ai-ml; nothing submitted", len(paths), kind)
        return ExitCode.OK
    workspace = find_workspace(args.subscription, args.resource_group, args.workspace, args.workspace_config)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="trainkit-jobs-") as folder:
        # Every job is checked before the first is sent.
        jobs = [load_and_validate(path) for path in write_specs(specs, Path(folder))]
        for name, url in submit(jobs, workspace):
            print(f"{name}\t{url}")
    return ExitCode.OK


def _run_v1(args: argparse.Namespace, config: SubmitConfig) -> int:
    import tempfile

    from trainkit.submit import v1
    from trainkit.submit.workspace import find_workspace

    with tempfile.TemporaryDirectory(prefix="trainkit-v1-") as scratch:
        # v1 snapshots a source folder into every run; the image holds all the code, so it is empty.
        source = (args.dry_run or Path(scratch)) / "source"
        source.mkdir(parents=True, exist_ok=True)
        jobs = v1.run_configs(config, source)
        if args.dry_run:
            for path in v1.save(jobs, args.dry_run):
                print(path)
            log.info("%d SDK v1 run configuration(s) written; nothing submitted", len(jobs))
            return ExitCode.OK
        found = find_workspace(args.subscription, args.resource_group, args.workspace, args.workspace_config)
        from azureml.core import Workspace

        workspace = Workspace(found.subscription_id, found.resource_group, found.name)
        for run_id, url in v1.submit(jobs, workspace, config.experiment):
            print(f"{run_id}\t{url}")
    return ExitCode.OK

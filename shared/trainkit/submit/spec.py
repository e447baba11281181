"""AzureML SDK v2 command-job specifications for a `SubmitConfig`: one job per dataset pair and grid point.

Each job runs the fixed entrypoint in the trainer's image, pinned by digest:

    trainkit train --imageset ${{inputs.imageset}} --labelset ${{inputs.labelset}} --output-dir outputs
                   --checkpoint-dir ${{outputs.checkpoints}} --resume auto --set key=value ...

AzureML uploads `./outputs` as the job's artifacts. Checkpoints go to a read-write mounted output
instead, because a preempted job restarts with an empty `./outputs` but the same mounted output: the
restarted process resumes from there (`--resume auto` starts fresh when it is empty). MLflow is
the platform's (it sets MLFLOW_TRACKING_URI and the run). `resources.shm_size` gives the loader
shared memory (the platform's default is 2 GB). With several instances or processes per node the
job has a PyTorch distribution: AzureML starts the command once per process with RANK, WORLD_SIZE,
LOCAL_RANK and MASTER_ADDR/PORT set, and the harness trains with DDP (batch_size is per process).
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trainkit.errors import UserError
from trainkit.submit.refs import (
    JobInput,
    class_map_input,
    imageset_input,
    labelset_input,
    mounted_prefix,
    weights_input,
)
from trainkit.submit.sweep import SweepConfig, sweep_spec

SCHEMA_URL = "https://azuremlschemas.azureedge.net/latest/commandJob.schema.json"
_DIGEST_REF = re.compile(r"^[a-z0-9.-]+(?::\d+)?(?:/[a-z0-9._-]+)+@sha256:[0-9a-f]{64}$")
_SHM = re.compile(r"^\d+[kmg]?$")
# An argument holding AzureML's ${{inputs.x}} placeholders, e.g. weights=${{inputs.weights}}.
_PLACEHOLDER = re.compile(r"(?:[\w.=:-]*\$\{\{(?:inputs|outputs|search_space)\.\w+\}\})+")


@dataclass(frozen=True)
class DatasetPairRef:
    """One (label set, image set) pair as the user wrote them (see trainkit.submit.refs)."""

    labelset: str
    imageset: str


@dataclass(frozen=True)
class SubmitConfig:
    """Everything a submission needs; built from the command line or by Python callers."""

    trainer: str
    image: str  # repository@sha256:...
    pairs: tuple[DatasetPairRef, ...]  # one job per pair
    experiment: str
    compute: str = ""  # a compute cluster; empty: serverless (then instance_type)
    instance_type: str = ""
    labelset_type: str = "auto"
    datastore_name: str = ""
    hyperparameters: Mapping[str, object] = field(default_factory=dict)
    grid: Sequence[tuple[str, Sequence[object]]] = ()
    instance_count: int = 1
    processes_per_node: int = 1
    low_priority: bool = False
    shm_size: str = "16g"
    tags: Mapping[str, str] = field(default_factory=dict)
    train_args: Sequence[str] = ()  # more `trainkit train` options, e.g. --min-confidence 0.5
    train_pairs: tuple[DatasetPairRef, ...] = ()  # all in one job, with test_pairs as its validation
    test_pairs: tuple[DatasetPairRef, ...] = ()
    # Starting weights handed to the job as an input (see trainkit.submit.refs); torchvision's named
    # weights are baked into the image and go in `hyperparameters` instead.
    weights: str = ""
    weights_type: str = "auto"
    class_map: str = ""  # --class-map for every job: an input the command names (see refs.class_map_input)
    # The named weights the image holds, as its publish manifest says; None: not said (nothing checked).
    baked_weights: tuple[str, ...] | None = None

    def check(self) -> None:
        """Reject what can be known to fail before anything is sent."""
        if not _DIGEST_REF.match(self.image):
            raise UserError(
                f"image {self.image!r} is not pinned by digest (REPOSITORY@sha256:...); "
                "take it from the publish manifest (--trainer) or pass --image REPOSITORY@sha256:DIGEST"
            )
        if self.train_pairs and self.pairs:
            raise UserError("use --pair (a job per pair) or --train-pair/--test-pair (one job), not both")
        if self.test_pairs and not self.train_pairs:
            raise UserError("--test-pair needs at least one --train-pair")
        if not self.pairs and not self.train_pairs:
            raise UserError("no dataset: pass --imageset and --labelset, --pair LABELSET IMAGESET, or --train-pair")
        if not self.experiment.strip():
            raise UserError("--experiment is empty: name the AzureML experiment the jobs go to")
        if self.instance_count < 1 or self.processes_per_node < 1:
            raise UserError("--instance-count and --processes-per-node must be at least 1")
        if not _SHM.match(self.shm_size.lower()):
            raise UserError(f"--shm-size {self.shm_size}: expected a size such as 16g or 512m")
        if self.low_priority and self.compute:
            raise UserError(
                f"--low-priority with --compute {self.compute}: on a cluster, low priority is the cluster's tier; "
                "create it with tier low_priority, or leave out --compute to run serverless on spot capacity"
            )
        if not self.compute and not self.instance_type:
            raise UserError("no compute: pass --compute CLUSTER, or --instance-type VM_SIZE for serverless compute")
        varied = {key for key, _ in self.grid}
        if self.weights and ("weights" in self.hyperparameters or "weights" in varied):
            raise UserError("weights given twice: pass --weights, or --set/--grid weights=..., not both")


def grid_points(fixed: Mapping[str, object], grid: Sequence[tuple[str, Sequence[object]]]) -> list[dict[str, object]]:
    """Every combination of the grid's values, each over the fixed hyperparameters (grid wins)."""
    keys = [key for key, _ in grid]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise UserError(f"--grid {sorted(duplicates)[0]}: given twice; list all its values in one --grid")
    for key, values in grid:
        if not values:
            raise UserError(f"--grid {key}: no values; write --grid {key}=V1,V2")
    return [{**fixed, **dict(zip(keys, combo, strict=True))} for combo in itertools.product(*(v for _, v in grid))]


@dataclass(frozen=True)
class _Data:
    """What one job reads: its inputs, the `trainkit train` options naming them, tags and a short name."""

    inputs: dict[str, JobInput]
    args: list[str]
    tags: dict[str, str]
    name: str


def _data_units(config: SubmitConfig, base: Path | None) -> list[_Data]:
    """One unit per --pair (a job each), or one unit holding every train and test pair (one job); each
    with the weights input when there is one."""
    units = _dataset_units(config, base)
    if config.class_map:
        found = class_map_input(config.class_map, base)
        units = [
            _Data({**unit.inputs, "class_map": found}, [*unit.args, "--class-map", "${{inputs.class_map}}"],
                  {**unit.tags, "trainkit.class_map": config.class_map}, unit.name)
            for unit in units
        ]  # fmt: skip
    if not config.weights:
        return units
    found = weights_input(config.weights, config.weights_type, base)
    return [
        _Data({**unit.inputs, "weights": found}, [*unit.args, "--set", "weights=${{inputs.weights}}"],
              {**unit.tags, "trainkit.weights": config.weights}, unit.name)
        for unit in units
    ]  # fmt: skip


def _bad_rows_fail(config: SubmitConfig) -> bool:
    """Whether the job's `trainkit train` stops at a bad row (its default), or skips such rows."""
    args = list(config.train_args)
    skip = any(a == "--on-bad-row=skip" for a in args) or any(
        a == "--on-bad-row" and args[i + 1 : i + 2] == ["skip"] for i, a in enumerate(args))  # fmt: skip
    return not skip


def _dataset_units(config: SubmitConfig, base: Path | None) -> list[_Data]:
    if not config.train_pairs:
        units = []
        for pair in config.pairs:
            inputs = {
                "imageset": imageset_input(pair.imageset, base),
                "labelset": labelset_input(pair.labelset, config.labelset_type, base, _bad_rows_fail(config)),
            }
            args = ["--imageset", "${{inputs.imageset}}", "--labelset", "${{inputs.labelset}}"]
            prefix = mounted_prefix(pair.imageset)
            if prefix:
                args += ["--image-url-prefix", prefix]
            tags = {"trainkit.labelset": pair.labelset, "trainkit.imageset": pair.imageset}
            units.append(_Data(inputs, args, tags, _short(pair.labelset)))
        return units
    inputs, args, tags = {}, [], {}
    for kind, pairs in (("train", config.train_pairs), ("test", config.test_pairs)):
        for i, pair in enumerate(pairs, 1):
            labels, images = f"{kind}_labelset_{i}", f"{kind}_imageset_{i}"
            inputs[labels] = labelset_input(pair.labelset, config.labelset_type, base, _bad_rows_fail(config))
            inputs[images] = imageset_input(pair.imageset, base)
            args += [f"--{kind}-set", f"${{{{inputs.{labels}}}}}:${{{{inputs.{images}}}}}"]
            tags[f"trainkit.{kind}_set_{i}"] = f"{pair.labelset} {pair.imageset}"
    prefixes = {mounted_prefix(pair.imageset) for pair in (*config.train_pairs, *config.test_pairs)}
    if len(prefixes) > 1:
        raise UserError(
            f"the image sets mount different datastore folders ({', '.join(sorted(map(repr, prefixes)))}); image_url "
            "URIs are read with one --image-url-prefix per job: submit such pairs as separate jobs (--pair)"
        )
    if prefixes - {""}:
        args += ["--image-url-prefix", prefixes.pop()]
    name = f"{len(config.train_pairs)} train + {len(config.test_pairs)} test sets"
    return [_Data(inputs, args, tags, name)]


def job_specs(config: SubmitConfig, base: Path | None = None) -> list[dict]:
    """The command-job YAML documents (as dicts), one per data unit and grid point, in that order."""
    config.check()
    points = grid_points(config.hyperparameters, config.grid)
    varied = [key for key, _ in config.grid]
    return [_command_job(config, data, params, varied) for data in _data_units(config, base) for params in points]


def sweep_specs(config: SubmitConfig, sweep: SweepConfig, base: Path | None = None) -> list[dict]:
    """The sweep-job YAML documents (as dicts), one per data unit: each trial is the command job above,
    with `--set KEY=${{search_space.KEY}}` for every searched key and `monitor` set to the objective."""
    config.check()
    sweep.check()
    if config.grid:
        raise UserError("--grid with --sweep: search a list with --search KEY=choice(a,b) (and --sampling grid)")
    given = sorted(set(config.hyperparameters) & {d.key for d in sweep.search})
    if given:
        raise UserError(f"{given[0]}: both --set and --search; keep one")
    monitor = config.hyperparameters.get("monitor", sweep.objective)
    if monitor != sweep.objective:
        raise UserError(f"--set monitor={monitor} and --objective {sweep.objective}: the trials keep their best "
                        "model by the objective; leave monitor out")  # fmt: skip
    params = {**config.hyperparameters, "monitor": sweep.objective, **sweep.placeholders()}
    specs = []
    for data in _data_units(config, base):
        job = _command_job(config, data, params, [])
        job["display_name"] = f"{job['display_name']} sweep {sweep.objective}"[:255]
        job["tags"].update({f"param.{d.key}": sweep.describe(d.key) for d in sweep.search})
        specs.append(sweep_spec(job, sweep))
    return specs


def _command_job(config: SubmitConfig, data: _Data, params: Mapping[str, object], varied: Sequence[str]) -> dict:
    command = [
        "trainkit", "train", *data.args,
        "--output-dir", "outputs", "--checkpoint-dir", "${{outputs.checkpoints}}", "--resume", "auto",
    ]  # fmt: skip
    for key, value in params.items():
        command += ["--set", f"{key}={value_text(value)}"]
    command += list(config.train_args)
    tags = {
        "trainkit.trainer": config.trainer,
        "trainkit.image": config.image,
        **data.tags,
        **{f"param.{k}": value_text(v) for k, v in params.items()},
        **config.tags,
    }
    point = point_text(params, varied)
    spec: dict = {
        "$schema": SCHEMA_URL,
        "type": "command",
        "display_name": " ".join(filter(None, [config.trainer, data.name, point]))[:255],
        "experiment_name": config.experiment,
        # Placeholders stay unquoted (AzureML substitutes them before the shell runs); the rest is quoted.
        "command": " ".join(a if _PLACEHOLDER.fullmatch(a) else shlex.quote(a) for a in command),
        "environment": {"image": config.image},
        "inputs": {name: job_input.as_yaml() for name, job_input in data.inputs.items()},
        "outputs": {"checkpoints": {"type": "uri_folder", "mode": "rw_mount"}},
        "resources": {"instance_count": config.instance_count, "shm_size": config.shm_size},
        "tags": tags,
    }
    if config.datastore_name:
        spec["environment_variables"] = {"DATASTORE_NAME": config.datastore_name}
    if config.compute:
        spec["compute"] = f"azureml:{config.compute}"
    else:
        spec["resources"]["instance_type"] = config.instance_type
    if config.low_priority:
        spec["queue_settings"] = {"job_tier": "spot"}
    if config.instance_count * config.processes_per_node > 1:
        spec["distribution"] = {"type": "pytorch", "process_count_per_instance": config.processes_per_node}
    return spec


def value_text(value: object) -> str:
    """A hyperparameter as `--set key=VALUE` writes it (text as is, everything else as JSON)."""
    return value if isinstance(value, str) else json.dumps(value)


def point_text(params: Mapping[str, object], varied: Sequence[str]) -> str:
    """A grid point in a job's display name: `key=value` for each hyperparameter the grid varies."""
    return " ".join(f"{key}={value_text(params[key])}" for key in varied)


def _short(ref: str) -> str:
    return ref.rstrip("/").rsplit("/", 1)[-1].removeprefix("azureml:")


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[object]]]:
    """`--grid key=v1,v2` (or key=[json list]) options; each value is read as JSON when it parses."""
    from trainkit.config import parse_set_options

    grid = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not raw:
            raise UserError(f"--grid {item!r}: expected key=v1,v2,... e.g. --grid lr=0.01,0.001")
        if raw.lstrip().startswith("["):
            try:
                values = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise UserError(f"--grid {item!r}: not a JSON list ({exc})") from None
        else:
            values = [parse_set_options([f"{key}={v}"])[key.strip()] for v in raw.split(",")]
        parse_set_options([f"{key}=0"])  # checks the key's spelling
        grid.append((key.strip(), list(values)))
    return grid

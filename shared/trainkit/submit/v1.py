"""AzureML SDK v1 (azureml-core) for workspaces that still run it: `trainkit submit --sdk v1`.

SDK v1 is retired (support ended 2026-06-30) and azureml-core pins older core packages, so it is an
optional extra (`pip install 'trainkit[submit-v1]'`) installed where jobs are submitted, never in
the training images. The job is the same as SDK v2's: the trainer's image pinned by digest as an
environment with user-managed dependencies, the fixed `trainkit train` command, data mounted
read-only, `DATASTORE_NAME` in the environment, `./outputs` as the output, shm sized for the loader.

Unlike v2, v1 has no read-write mounted output without a datastore object, so checkpoints stay in
`./outputs` and a job does not resume after a preemption: use SDK v2 for low-priority compute.

Data: registered datasets only (`azureml:NAME:VERSION`), mounted by name. A tabular label set
(`--labelset-type tabular`) cannot be mounted: at submission it is converted to CSV files
(`TabularDataset.to_csv_files()`), registered as `<name>-files` and mounted like a file dataset.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainkit.errors import UserError
from trainkit.submit.spec import SubmitConfig, grid_points, point_text, value_text

_ASSET = re.compile(r"^azureml:(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*):(?P<version>\d+)$")


def _core() -> Any:
    try:
        import azureml.core
        import azureml.core.runconfig
    except ImportError:
        raise UserError("--sdk v1 needs azureml-core: pip install 'trainkit[submit-v1]' (in its own venv)") from None
    return azureml.core


def dataset_ref(ref: str, flag: str) -> tuple[str, str]:
    """(name, version) of `azureml:NAME:VERSION`: SDK v1 mounts registered datasets only."""
    match = _ASSET.match(ref)
    if not match:
        raise UserError(f"{flag} {ref}: with --sdk v1, name a registered dataset as azureml:NAME:VERSION")
    return match["name"], match["version"]


@dataclass
class V1Job:
    """A ScriptRunConfig and what submission still has to do for it."""

    script: Any  # azureml.core.ScriptRunConfig
    display_name: str
    tabular_labelset: bool


def run_configs(config: SubmitConfig, source_dir: Path) -> list[V1Job]:
    """One ScriptRunConfig per dataset pair and grid point (built offline; datasets are referenced by name)."""
    config.check()
    if not config.compute:
        raise UserError("--sdk v1 runs on a compute cluster: pass --compute CLUSTER")
    if config.train_pairs:
        raise UserError("--sdk v1 takes one pair per job (--pair); several pairs in one job need SDK v2")
    if config.weights or config.class_map:
        raise UserError("--weights and --class-map are job inputs of SDK v2 jobs; drop --sdk v1 (or pass torchvision "
                        "weights with --set weights=NAME)")  # fmt: skip
    if config.labelset_type not in ("auto", "uri_folder", "uri_file", "tabular"):
        raise UserError(f"--labelset-type {config.labelset_type}: with --sdk v1 use auto (a file dataset) or tabular")
    core = _core()
    from azureml.core.runconfig import Data, DataLocation, DockerConfiguration, PyTorchConfiguration
    from azureml.core.runconfig import Dataset as DatasetRef

    varied = [key for key, _ in config.grid]
    env = core.Environment.from_docker_image(f"trainkit-{config.trainer}", config.image)
    env.python.user_managed_dependencies = True  # the image is complete: no conda layer on top
    env.python.interpreter_path = "python"
    out = []
    for pair in config.pairs:
        datasets = {
            "imageset": dataset_ref(pair.imageset, "--imageset"),
            "labelset": dataset_ref(pair.labelset, "--labelset"),
        }
        for params in grid_points(config.hyperparameters, config.grid):
            command = _command(params, config.train_args)
            script = core.ScriptRunConfig(
                source_directory=str(source_dir), command=command, compute_target=config.compute, environment=env,
                docker_runtime_config=DockerConfiguration(use_docker=True, shm_size=config.shm_size),
                distributed_job_config=_distribution(config, PyTorchConfiguration),
            )  # fmt: skip
            script.run_config.command = command
            if config.datastore_name:
                script.run_config.environment_variables = {"DATASTORE_NAME": config.datastore_name}
            script.run_config.data = {
                key: Data(
                    data_location=DataLocation(dataset=DatasetRef(dataset_name=name, dataset_version=version)),
                    mechanism="mount",
                    environment_variable_name=key,
                )
                for key, (name, version) in datasets.items()
            }
            name = " ".join(filter(None, [config.trainer, datasets["labelset"][0], point_text(params, varied)]))
            out.append(V1Job(script, name, config.labelset_type == "tabular"))
    return out


def _distribution(config: SubmitConfig, pytorch_configuration: Any) -> Any:
    processes = config.instance_count * config.processes_per_node
    if processes == 1:
        return None
    return pytorch_configuration(process_count=processes, node_count=config.instance_count)


def _command(params: dict[str, object], train_args: tuple[str, ...] | list[str]) -> str:
    # SDK v1 runs the command in a shell; a mounted dataset's path is in the variable named after it.
    parts = ['trainkit train --imageset "$imageset" --labelset "$labelset" --output-dir outputs',
             "--checkpoint-dir outputs/checkpoints --resume auto"]  # fmt: skip
    for key, value in params.items():
        parts.append("--set " + shlex.quote(f"{key}={value_text(value)}"))
    parts += [shlex.quote(a) for a in train_args]
    return " ".join(parts)


def save(jobs: list[V1Job], folder: Path) -> list[Path]:
    """Save each run configuration (with its environment) under FOLDER/.azureml/; returns the files."""
    (folder / ".azureml").mkdir(parents=True, exist_ok=True)
    paths = []
    for number, job in enumerate(jobs, 1):
        name = f"job-{number:02d}.runconfig"
        job.script.run_config.save(path=str(folder), name=name, separate_environment_yaml=True)
        paths.append(folder / ".azureml" / name)
    return paths


def submit(jobs: list[V1Job], workspace: Any, experiment: str) -> list[tuple[str, str]]:
    """Submit to a v1 Workspace object; a tabular label set is first converted and registered as files."""
    core = _core()
    submitted = []
    for job in jobs:
        if job.tabular_labelset:
            location = job.script.run_config.data["labelset"].data_location.dataset
            tabular = core.Dataset.get_by_name(workspace, location.name, version=location.version)
            files = tabular.to_csv_files().register(workspace, f"{location.name}-files", create_new_version=True)
            location.name, location.version = files.name, str(files.version)
        run = core.Experiment(workspace, experiment).submit(job.script)
        run.display_name = job.display_name
        submitted.append((run.id, run.get_portal_url()))
    return submitted

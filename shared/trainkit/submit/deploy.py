"""`trainkit deploy`: a registered trainkit model behind an AzureML endpoint, with no scoring script.

trainkit registers MLflow models (`train --register-as`; in an AzureML job, the workspace's
registry), whose pyfunc answers as AutoML's image models do, so AzureML's no-code MLflow
deployment serves them as they are:

    online  a managed online endpoint (key auth) and a deployment of the model on `--instance-type`
            VMs, given all the traffic; requests carry {"input_data": {"columns": ["image"],
            "data": [[<base64 image>]]}}
    batch   a batch endpoint and a model deployment on a compute cluster, which hands the pyfunc
            the image files of a folder input and appends its answers to predictions.csv

`--dry-run DIR` writes the YAML and checks it with azure-ai-ml's own loaders, offline.
"""

from __future__ import annotations

import argparse
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trainkit.atomic import write_bytes_atomic
from trainkit.contract import ExitCode
from trainkit.errors import UserError

log = logging.getLogger("trainkit")

SCHEMAS = "https://azuremlschemas.azureedge.net/latest"
_ENDPOINT = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")  # AzureML: 3-32 characters
_MODEL = re.compile(r"^azureml:[A-Za-z0-9][A-Za-z0-9_.-]{0,254}:[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class DeployConfig:
    """An endpoint and one deployment of a registered model on it."""

    model: str  # azureml:NAME:VERSION
    endpoint: str
    deployment: str = "default"
    batch: bool = False
    instance_type: str = ""  # online
    instance_count: int = 1
    compute: str = ""  # batch
    mini_batch_size: int = 10  # batch: image files per call of the model

    def check(self) -> None:
        """Reject what AzureML would refuse, before anything is sent."""
        if not _MODEL.match(self.model):
            raise UserError(f"--model {self.model}: give the registered model as azureml:NAME:VERSION")
        for flag, name in (("--endpoint", self.endpoint), ("--deployment", self.deployment)):
            if not _ENDPOINT.match(name):
                raise UserError(f"{flag} {name}: 3-32 letters, digits and hyphens, starting with a letter")
        if self.batch and not self.compute:
            raise UserError("--batch needs --compute CLUSTER: batch deployments run on a compute cluster")
        if not self.batch and not self.instance_type:
            raise UserError("an online deployment needs --instance-type VM_SIZE (e.g. Standard_DS3_v2, or a GPU size)")
        if self.instance_count < 1 or self.mini_batch_size < 1:
            raise UserError("--instance-count and --mini-batch-size must be at least 1")


def deploy_specs(config: DeployConfig) -> list[tuple[str, dict]]:
    """(kind, YAML document) for the endpoint and the deployment; kind names azure-ai-ml's loader."""
    config.check()
    if not config.batch:
        endpoint = {"$schema": f"{SCHEMAS}/managedOnlineEndpoint.schema.json", "name": config.endpoint,
                    "auth_mode": "key"}  # fmt: skip
        deployment = {
            "$schema": f"{SCHEMAS}/managedOnlineDeployment.schema.json",
            "name": config.deployment,
            "endpoint_name": config.endpoint,
            "model": config.model,
            "instance_type": config.instance_type,
            "instance_count": config.instance_count,
        }
        return [("online_endpoint", endpoint), ("online_deployment", deployment)]
    endpoint = {"$schema": f"{SCHEMAS}/batchEndpoint.schema.json", "name": config.endpoint}
    deployment = {
        "$schema": f"{SCHEMAS}/batchDeployment.schema.json",
        "name": config.deployment,
        "endpoint_name": config.endpoint,
        "model": config.model,
        "compute": f"azureml:{config.compute}",
        "resources": {"instance_count": config.instance_count},
        "mini_batch_size": config.mini_batch_size,
        "max_concurrency_per_instance": 1,
        "output_action": "append_row",
        "output_file_name": "predictions.csv",
        "retry_settings": {"max_retries": 3, "timeout": 300},
        "error_threshold": -1,
        "logging_level": "info",
    }
    return [("batch_endpoint", endpoint), ("batch_deployment", deployment)]


def write_and_check(specs: list[tuple[str, dict]], folder: Path) -> list[tuple[Path, Any]]:
    """Write each document to FOLDER/<kind>.yml and load it with azure-ai-ml (a UserError naming the
    file if it refuses); returns (path, entity)."""
    from trainkit.submit.workspace import _sdk

    sdk = _sdk()
    out = []
    for kind, document in specs:
        path = write_bytes_atomic(folder / f"{kind}.yml", yaml.safe_dump(document, sort_keys=False).encode("utf-8"))
        try:
            with warnings.catch_warnings():
                # azure-ai-ml warns that its loader builds the BatchDeployment base class: its own choice
                warnings.simplefilter("ignore", UserWarning)
                entity = getattr(sdk, f"load_{kind}")(source=path)
        except Exception as exc:  # azure-ai-ml's validation errors
            raise UserError(f"{path}: azure-ai-ml rejects it: {' '.join(str(exc).split())[:400]}") from None
        out.append((path, entity))
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The deploy command's options."""
    p.add_argument("--model", required=True, help="the registered model, azureml:NAME:VERSION")
    p.add_argument("--endpoint", required=True, help="endpoint name (created or updated)")
    p.add_argument("--deployment", default="default", help="deployment name")
    p.add_argument("--batch", action="store_true", help="a batch endpoint (default: a managed online endpoint)")
    p.add_argument("--instance-type", default="", help="online: VM size, e.g. Standard_DS3_v2")
    p.add_argument("--instance-count", type=int, default=1, metavar="N", help="VMs (online) or nodes (batch)")
    p.add_argument("--compute", default="", help="batch: the compute cluster")
    p.add_argument("--mini-batch-size", type=int, default=10, metavar="N", help="batch: files per call")
    p.add_argument("--dry-run", type=Path, metavar="DIR", help="write the YAML to DIR and check it offline")
    g = p.add_argument_group("workspace (else env AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP, AZUREML_WORKSPACE_NAME)")
    g.add_argument("--subscription", default="")
    g.add_argument("--resource-group", default="")
    g.add_argument("--workspace", default="")
    g.add_argument("--workspace-config", type=Path, metavar="FILE", help="the workspace's config.json")


def run(args: argparse.Namespace) -> int:
    """The `trainkit deploy` command."""
    import tempfile

    from trainkit.submit.workspace import find_workspace, ml_client

    config = DeployConfig(
        model=args.model, endpoint=args.endpoint, deployment=args.deployment, batch=args.batch,
        instance_type=args.instance_type, instance_count=args.instance_count, compute=args.compute,
        mini_batch_size=args.mini_batch_size,
    )  # fmt: skip
    specs = deploy_specs(config)
    if args.dry_run:
        for path, _ in write_and_check(specs, args.dry_run):
            print(path)
        log.info("endpoint and deployment written and checked by azure-ai-ml; nothing deployed")
        return ExitCode.OK
    workspace = find_workspace(args.subscription, args.resource_group, args.workspace, args.workspace_config)
    with tempfile.TemporaryDirectory(prefix="trainkit-deploy-") as folder:
        (_, endpoint), (_, deployment) = write_and_check(specs, Path(folder))
    client = ml_client(workspace)
    endpoints = client.batch_endpoints if config.batch else client.online_endpoints
    deployments = client.batch_deployments if config.batch else client.online_deployments
    endpoints.begin_create_or_update(endpoint).result()
    deployments.begin_create_or_update(deployment).result()
    live = endpoints.get(config.endpoint)
    if config.batch:
        live.defaults.deployment_name = config.deployment
    else:
        live.traffic = {config.deployment: 100}
    endpoints.begin_create_or_update(live).result()
    print(f"{config.endpoint}\t{getattr(live, 'scoring_uri', '')}")
    return ExitCode.OK

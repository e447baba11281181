"""Write job specifications, check them with azure-ai-ml's own loader (offline), and submit them.

Submitting needs a workspace (flags, environment or a config.json) and an Azure login; both are
checked before any job is sent, with a message that says which login or setting is expected.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trainkit.atomic import write_bytes_atomic
from trainkit.errors import UserError

log = logging.getLogger("trainkit")


def _sdk() -> Any:
    try:
        import azure.ai.ml
    except ImportError:
        raise UserError("trainkit submit needs azure-ai-ml: pip install 'trainkit[submit]'") from None
    # The SDK logs every HTTP request and experimental field, and azure-identity every credential it
    # tries: not the user's concern; failures reach them as one-line errors.
    logging.getLogger("azure").setLevel(logging.ERROR)
    return azure.ai.ml


def write_specs(specs: list[dict], folder: Path) -> list[Path]:
    """Write each spec to FOLDER/job-NN-<display name>.yml (complete or not at all); returns the paths."""
    paths = []
    for number, spec in enumerate(specs, 1):
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", spec["display_name"]).strip("-")[:60]
        path = folder / f"job-{number:02d}-{slug}.yml"
        write_bytes_atomic(path, yaml.safe_dump(spec, sort_keys=False, width=1000).encode("utf-8"))
        paths.append(path)
    return paths


def load_and_validate(path: Path) -> Any:
    """The azure-ai-ml Job for a spec file, validated offline; a UserError naming the file otherwise."""
    sdk = _sdk()
    try:
        job = sdk.load_job(source=path)
    except Exception as exc:  # azure-ai-ml raises marshmallow and its own validation errors here
        raise UserError(f"{path}: azure-ai-ml rejects this job: {_sdk_message(exc)}") from None
    validate = getattr(job, "_validate", None)
    if validate is None:
        # A SweepJob has no _validate; building its REST request is the SDK's remaining offline check
        # (trainkit.submit.sweep checks what that lets through).
        try:
            job._to_rest_object()
        except Exception as exc:  # the SDK's own errors, as load_job's
            raise UserError(f"{path}: azure-ai-ml rejects this job: {_sdk_message(exc)}") from None
        return job
    result = validate()
    if not result.passed:
        raise UserError(f"{path}: azure-ai-ml rejects this job: {json.dumps(result.error_messages)}")
    return job


def _sdk_message(exc: Exception) -> str:
    text = str(exc)
    found = re.findall(r'"message": "((?:[^"\\]|\\.)*)"', text)
    return " ".join((found[0].encode().decode("unicode_escape") if found else text).split())[:600]


@dataclass(frozen=True)
class Workspace:
    """Where jobs go."""

    subscription_id: str
    resource_group: str
    name: str


def find_workspace(subscription: str = "", resource_group: str = "", name: str = "", config: Path | None = None):
    """The workspace from arguments, else AZURE_SUBSCRIPTION_ID / AZURE_RESOURCE_GROUP / AZUREML_WORKSPACE_NAME,
    else a config.json (the file the studio's workspace page downloads) here or at CONFIG."""
    values = [
        subscription or os.environ.get("AZURE_SUBSCRIPTION_ID", ""),
        resource_group or os.environ.get("AZURE_RESOURCE_GROUP", ""),
        name or os.environ.get("AZUREML_WORKSPACE_NAME", ""),
    ]
    if all(values):
        return Workspace(*values)
    path = config or Path("config.json")
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            return Workspace(data["subscription_id"], data["resource_group"], data["workspace_name"])
        except (ValueError, KeyError, TypeError):
            raise UserError(
                f"{path}: not a workspace config.json (needs subscription_id, resource_group, workspace_name)"
            ) from None
    missing = [n for n, v in zip(("--subscription", "--resource-group", "--workspace"), values, strict=True) if not v]
    raise UserError(
        f"no AzureML workspace: {', '.join(missing)} not given; pass them, set AZURE_SUBSCRIPTION_ID, "
        "AZURE_RESOURCE_GROUP and AZUREML_WORKSPACE_NAME, or put the workspace's config.json here"
    )


def ml_client(workspace: Workspace) -> Any:
    """An MLClient for `workspace`, once an Azure login is known to work (else a UserError saying how)."""
    sdk = _sdk()
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import DefaultAzureCredential

    credential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
    try:
        credential.get_token("https://management.azure.com/.default")
    except ClientAuthenticationError:
        raise UserError(
            "no Azure login: run `az login` (or set AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET "
            "for a service principal, or run where a managed identity is assigned)"
        ) from None
    return sdk.MLClient(credential, workspace.subscription_id, workspace.resource_group, workspace.name)


def submit(jobs: list[Any], workspace: Workspace) -> list[tuple[str, str]]:
    """Submit jobs that load_and_validate returned; returns (job name, studio URL) for each."""
    client = ml_client(workspace)
    submitted = []
    for job in jobs:
        created = client.jobs.create_or_update(job)
        log.info("submitted %s: %s", created.name, created.studio_url)
        submitted.append((created.name, created.studio_url))
    return submitted

"""Dataset references as AzureML job inputs: registered assets, datastore or cloud URIs, local paths.

    azureml:shapes-images:3            a registered data asset, version 3 (or azureml:name@latest)
    azureml://datastores/ds/paths/x/   a datastore path (also azureml://subscriptions/.../paths/...)
    https://acct.blob.core.windows.net/c/x, wasbs://, abfss://   cloud storage the workspace can read
    ./labels.csv, ./images/            local files or folders: azure-ai-ml uploads them at submission

An image set is always a folder (`uri_folder`, mounted read-only). A label set is a file
(`uri_file`: .csv, .tsv, .parquet), an MLTable folder (`mltable`, what a v1 Tabular dataset becomes
in v2) or a folder of files (`uri_folder`); a registered asset's type cannot be known offline, so it
is `mltable` unless `--labelset-type` says otherwise.

Starting weights (`--weights`) are an input as well, mounted read-only: a registered model
(`azureml:NAME:VERSION`, an `mlflow_model` such as trainkit registers, unless `--weights-type` says
`custom_model`), a weights file (`uri_file`) or a folder (`uri_folder`: a run's outputs, an MLflow
model), local (uploaded at submission) or by URI. torchvision's named weights are no input: they are
baked into the image, and the job names them as a hyperparameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from trainkit.data.formats import ANY_LABEL_TYPES, is_any_label_file, is_label_file
from trainkit.data.uris import NotAnImagePath, datastore_path
from trainkit.errors import UserError

INPUT_TYPES = ("uri_file", "uri_folder", "mltable")
WEIGHTS_INPUT_TYPES = ("mlflow_model", "custom_model", "uri_file", "uri_folder")
WEIGHTS_FILE_SUFFIXES = (".pt", ".pth", ".bin")
_ASSET = re.compile(r"^azureml:(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,254})(?::(?P<version>[A-Za-z0-9_.-]+)|@latest)$")
_CLOUD = ("https://", "http://", "wasbs://", "wasb://", "abfss://", "abfs://", "adl://", "azureml://")


@dataclass(frozen=True)
class JobInput:
    """One input of a job, as the job YAML writes it."""

    type: str
    path: str
    mode: str = "ro_mount"

    def as_yaml(self) -> dict[str, str]:
        return {"type": self.type, "path": self.path, "mode": self.mode}


def imageset_input(ref: str, base: Path | None = None) -> JobInput:
    """The job input for an image set reference (always a folder)."""
    kind = _kind(ref, "--imageset")
    if kind == "local":
        path = _local(ref, base, "--imageset")
        if not path.is_dir():
            raise UserError(f"--imageset {ref}: is a file; an image set is a folder of images")
        return JobInput("uri_folder", str(path))
    if kind == "uri" and is_label_file(ref):
        raise UserError(f"--imageset {ref}: names a file; an image set is a folder (did you swap the pair?)")
    return JobInput("uri_folder", ref)


def mounted_prefix(imageset: str) -> str:
    """The datastore folder an `azureml://...datastores/<ds>/paths/<P>` image set mounts, P ("" for other
    references): image_url URIs name paths from the datastore's root, so the job drops P from them."""
    if not imageset.startswith("azureml://"):
        return ""
    try:
        found = datastore_path(imageset)
    except NotAnImagePath:
        return ""
    return found.path.strip("/") if found else ""


def labelset_input(ref: str, labelset_type: str = "auto", base: Path | None = None,
                   bad_rows_fail: bool = True) -> JobInput:  # fmt: skip
    """The job input for a label set reference: uri_file, mltable or uri_folder (see the module doc). A
    local label set is read with train's own readers first, so what train would refuse is refused here
    (a bad row too, unless `bad_rows_fail` is off: the job skips bad rows)."""
    if labelset_type not in ("auto", *INPUT_TYPES):
        raise UserError(f"--labelset-type {labelset_type}: expected auto or one of {', '.join(INPUT_TYPES)}")
    kind = _kind(ref, "--labelset")
    if kind == "local":
        path = _local(ref, base, "--labelset")
        found = "mltable" if (path / "MLTable").is_file() else "uri_folder" if path.is_dir() else "uri_file"
        if found == "uri_file" and not is_any_label_file(path):
            raise UserError(f"--labelset {ref}: unsupported file type {path.suffix or '(none)'}; use {ANY_LABEL_TYPES}")
        _read_as_train_would(ref, path, bad_rows_fail)
        if labelset_type not in ("auto", found):
            raise UserError(f"--labelset {ref}: is a {found} (a {'folder' if path.is_dir() else 'file'}), "
                            f"not {labelset_type}; drop --labelset-type or fix the path")  # fmt: skip
        return JobInput(found, str(path))
    if labelset_type != "auto":
        return JobInput(labelset_type, ref)
    if kind == "asset":
        return JobInput("mltable", ref)
    return JobInput("uri_file" if is_any_label_file(ref) else "uri_folder", ref)


def _read_as_train_would(ref: str, path: Path, bad_rows_fail: bool) -> None:
    from trainkit.data.label_sets import read_labels
    from trainkit.errors import DatasetError

    try:
        source = read_labels(path)
    except DatasetError as exc:
        raise UserError(f"--labelset {ref}: train would refuse it: {exc}") from None
    if source.parsed.issues and bad_rows_fail:
        row = min(source.parsed.issues)
        issue = source.parsed.issues[row]
        raise UserError(
            f"--labelset {ref}: train would stop at {source.table.where(row)}, field {issue.field!r}: {issue.detail}; "
            "fix the row, or pass `-- --on-bad-row skip` to leave such rows out"
        )


def class_map_input(ref: str, base: Path | None = None) -> JobInput:
    """The job input for `--class-map`: a local file or folder (checked here with the reader train uses,
    then uploaded), a datastore or cloud URI, or a registered asset (a folder: `class_map.json` inside)."""
    kind = _kind(ref, "--class-map")
    if kind == "local":
        from trainkit.classmap import ClassMap

        path = _local(ref, base, "--class-map")
        ClassMap.read_fixed(path)
        return JobInput("uri_folder" if path.is_dir() else "uri_file", str(path))
    if kind == "asset":
        return JobInput("uri_folder", ref)
    return JobInput("uri_file" if ref.lower().endswith(".json") else "uri_folder", ref)


def weights_input(ref: str, weights_type: str = "auto", base: Path | None = None) -> JobInput:
    """The job input for a `--weights` reference that is not torchvision's name (see the module doc)."""
    if weights_type not in ("auto", *WEIGHTS_INPUT_TYPES):
        raise UserError(f"--weights-type {weights_type}: expected auto or one of {', '.join(WEIGHTS_INPUT_TYPES)}")
    kind = _kind(ref, "--weights")
    if kind == "local":
        path = _local(ref, base, "--weights")
        found = "uri_folder" if path.is_dir() else "uri_file"
        if weights_type not in ("auto", found):
            raise UserError(f"--weights {ref}: is a {'folder' if path.is_dir() else 'file'}, so a {found}, "
                            f"not {weights_type}; drop --weights-type or fix the path")  # fmt: skip
        return JobInput(found, str(path))
    if weights_type != "auto":
        return JobInput(weights_type, ref)
    if kind == "asset":
        return JobInput("mlflow_model", ref)
    return JobInput("uri_file" if ref.lower().endswith(WEIGHTS_FILE_SUFFIXES) else "uri_folder", ref)


def _kind(ref: str, flag: str) -> str:
    if not ref.strip():
        raise UserError(f"{flag}: empty reference; give an azureml:NAME:VERSION asset, a URI or a local path")
    if ref.startswith("azureml:") and not ref.startswith("azureml://"):
        if not _ASSET.match(ref):
            raise UserError(f"{flag} {ref}: not an asset reference; write azureml:NAME:VERSION or azureml:NAME@latest")
        return "asset"
    if ref.startswith(_CLOUD):
        if ref.startswith("azureml://") and "/paths/" not in ref and "/data/" not in ref:
            raise UserError(f"{flag} {ref}: a datastore URI is azureml://datastores/NAME/paths/PATH")
        return "uri"
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", ref):
        scheme = ref.split("://", 1)[0]
        raise UserError(f"{flag} {ref}: AzureML cannot read {scheme}:// directly; copy the data to a datastore")
    return "local"


def _local(ref: str, base: Path | None, flag: str) -> Path:
    path = (base or Path.cwd()) / ref
    if not path.exists():
        raise UserError(f"{flag} {ref}: no such local file or folder (a registered asset is azureml:NAME:VERSION)")
    return path.resolve()

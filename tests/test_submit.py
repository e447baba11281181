"""`trainkit submit`: job specs for each mode, validated offline by azure-ai-ml; errors before submitting."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from trainkit.data.demo import DemoDataset
from trainkit.errors import UserError
from trainkit.submit.spec import DatasetPairRef, SubmitConfig, job_specs
from trainkit.submit.workspace import load_and_validate, write_specs

ROOT = Path(__file__).resolve().parents[1]
DIGEST = "sha256:" + "9e" * 32
IMAGE = f"myacr.azurecr.io/trainkit-detector@{DIGEST}"


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "images.json"
    images = {k: {"repository": f"myacr.azurecr.io/trainkit-{k}", "digest": DIGEST} for k in ("base", "detector")}
    path.write_text(json.dumps({"schema": "trainkit.images/v1", "images": images}))
    return path


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the repository root, where trainers/<name> lets submit check hyperparameters."""
    monkeypatch.chdir(ROOT)
    for name in ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE_NAME", "DATASTORE_NAME"):
        monkeypatch.delenv(name, raising=False)


def jobs_in(folder: Path) -> list:
    return [load_and_validate(path) for path in sorted(folder.glob("job-*.yml"))]


def test_local_pair_and_grid_make_one_validated_job_per_point(run_cli, demo: DemoDataset, manifest, in_repo, tmp_path):
    result = run_cli(
        "submit", "--trainer", "detector", "--manifest", manifest, "--labelset", demo.labels_csv,
        "--imageset", demo.imageset_datastore, "--datastore-name", demo.datastore_name, "--compute", "gpu-cluster",
        "--set", "epochs=5", "--grid", "lr=0.01,0.001", "--grid", "batch_size=[2,4]", "--tag", "team=vision",
        "--dry-run", tmp_path / "jobs", "--", "--min-confidence", "0.5",
    )  # fmt: skip
    assert result.code == 0, result.err
    jobs = jobs_in(tmp_path / "jobs")
    assert len(jobs) == 4 and len(result.out.split()) == 4
    points = [(j.tags["param.lr"], j.tags["param.batch_size"]) for j in jobs]
    assert points == [("0.01", "2"), ("0.01", "4"), ("0.001", "2"), ("0.001", "4")]
    job = jobs[0]
    assert job.environment.image == IMAGE and job.compute == "gpu-cluster" and job.tags["team"] == "vision"
    assert job.inputs["labelset"].type == "uri_file" and job.inputs["labelset"].path == str(demo.labels_csv)
    assert job.inputs["imageset"].type == "uri_folder" and job.inputs["imageset"].mode == "ro_mount"
    assert job.outputs["checkpoints"].mode == "rw_mount"
    assert job.environment_variables == {"DATASTORE_NAME": demo.datastore_name}
    assert job.resources.shm_size == "16g" and job.resources.instance_count == 1
    assert job.command == (
        "trainkit train --imageset ${{inputs.imageset}} --labelset ${{inputs.labelset}} --output-dir outputs "
        "--checkpoint-dir ${{outputs.checkpoints}} --resume auto --set epochs=5 --set lr=0.01 --set batch_size=2 "
        "--min-confidence 0.5"
    )


def test_registered_assets_and_uris_as_inputs(tmp_path: Path) -> None:
    config = SubmitConfig(
        trainer="detector", image=IMAGE, experiment="shapes", instance_type="Standard_NC4as_T4_v3",
        pairs=(
            DatasetPairRef("azureml:shapes-labels:2", "azureml:shapes-images@latest"),
            DatasetPairRef("azureml://datastores/main/paths/labels/set1.parquet", "azureml://datastores/main/paths/img/"),
            DatasetPairRef("https://acct.blob.core.windows.net/c/labels/", "wasbs://c@acct.blob.core.windows.net/img"),
        ),
        low_priority=True, shm_size="32g", hyperparameters={"epochs": 3, "lr": 0.001},
    )  # fmt: skip
    jobs = [load_and_validate(p) for p in write_specs(job_specs(config), tmp_path)]
    assert [j.inputs["labelset"].type for j in jobs] == ["mltable", "uri_file", "uri_folder"]
    assert jobs[0].inputs["imageset"].path.endswith("shapes-images@latest")
    for job in jobs:
        assert job.queue_settings.job_tier == "spot" and job.resources.instance_type == "Standard_NC4as_T4_v3"
        assert job.compute is None and job.resources.shm_size == "32g" and job.experiment_name == "shapes"
        assert not job.environment_variables  # ML-studio layout: DATASTORE_NAME unset
    # An image set that is a datastore folder: image_url URIs name paths from the datastore root.
    assert [("--image-url-prefix img" in j.command) for j in jobs] == [False, True, False]


def test_a_mltable_folder_is_a_mltable_input(tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "MLTable").write_text("paths:\n  - file: ./labels.csv\n")
    _write_label_set(tmp_path / "labels" / "labels.csv")
    (tmp_path / "images").mkdir()
    config = SubmitConfig("detector", IMAGE, (DatasetPairRef("labels", "images"),), "x", compute="c")
    [spec] = job_specs(config, base=tmp_path)
    assert spec["inputs"]["labelset"] == {"type": "mltable", "path": str(tmp_path / "labels"), "mode": "ro_mount"}


def _write_label_set(path: Path, bad: bool = False) -> Path:
    import pandas as pd

    box = {"type": "can", "bottomX": 1, "topX": 5, "bottomY": 1, "topY": 5}
    rows = [{"image_url": "a.jpg", "label": str([box])}, {"image_url": "b.jpg", "label": "[{'type': 'can'}]" if bad
                                                          else "[]"}]  # fmt: skip
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        lines = [{"image_url": "a.jpg", "label": [{"label": "can", "topX": 0.1, "topY": 0.1, "bottomX": 0.5,
                                                   "bottomY": 0.5}]}, {"image_url": "b.jpg", "label": []}]  # fmt: skip
        text = "\n".join(json.dumps(line) for line in lines)
        path.write_text(text.replace('"topX": 0.1, ', "") if bad else text)
    elif suffix == ".json":
        annotation = {"id": 1, "image_id": 1, "category_id": 2 if bad else 1, "bbox": [1, 1, 4, 4]}
        path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [annotation],
                                    "categories": [{"id": 1, "name": "can"}]}))  # fmt: skip
    elif suffix in (".parquet", ".pq"):
        pd.DataFrame(rows).to_parquet(path)
    else:
        pd.DataFrame(rows).to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    return path


@pytest.mark.parametrize("name", ["labels.csv", "labels.TSV", "labels.parquet", "labels.pq", "l.jsonl", "coco.json"])
def test_label_files_submit_accepts_are_those_train_reads(tmp_path: Path, name: str) -> None:
    _write_label_set(tmp_path / name)
    (tmp_path / "images").mkdir()
    config = SubmitConfig("detector", IMAGE, (DatasetPairRef(name, "images"),), "x", compute="c")
    [spec] = job_specs(config, base=tmp_path)
    assert spec["inputs"]["labelset"]["type"] == "uri_file"


@pytest.mark.parametrize(("name", "where"), [("l.csv", "l.csv row 2"), ("l.jsonl", "l.jsonl line 1"),
                                             ("c.json", "c.json image id 1")])  # fmt: skip
def test_a_label_set_train_would_stop_at_is_refused_before_submitting(tmp_path: Path, name: str, where: str) -> None:
    from dataclasses import replace

    _write_label_set(tmp_path / name, bad=True)
    (tmp_path / "images").mkdir()
    config = SubmitConfig("detector", IMAGE, (DatasetPairRef(name, "images"),), "x", compute="c")
    with pytest.raises(UserError, match=rf"--labelset {name}: train would stop at .*{re.escape(where)}, field"):
        job_specs(config, base=tmp_path)
    assert job_specs(replace(config, train_args=("--on-bad-row", "skip")), base=tmp_path)  # the job skips it


def test_a_label_file_train_cannot_read_is_refused_before_submitting(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("image_url,label\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "images").mkdir()
    for name, message in [("labels.txt", r"unsupported file type .txt; use .csv, .tsv, .parquet, .jsonl \(AutoML\)"),
                          ("empty.csv", r"--labelset empty.csv: train would refuse it: .*empty.csv: ")]:  # fmt: skip
        config = SubmitConfig("detector", IMAGE, (DatasetPairRef(name, "images"),), "x", compute="c")
        with pytest.raises(UserError, match=message):
            job_specs(config, base=tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trainer", "segmenter"], "no image for trainer 'segmenter' (published: detector)"),
        (["--trainer", "detector", "--image", "myacr.azurecr.io/trainkit-detector:1.0"], "is not pinned by digest"),
        (["--pair", "azureml:labels", "azureml:img:1"], "--labelset azureml:labels: not an asset reference"),
        (["--pair", "s3://b/labels.csv", "azureml:img:1"], "AzureML cannot read s3:// directly"),
        (["--pair", "azureml:l:1", "no/such/folder"], "--imageset no/such/folder: no such local file or folder"),
        (["--set", "epochz=3"], "epochz"),
        (["--grid", "lr=0.1,fast"], "lr"),
        (["--instance-count", "0"], "--instance-count and --processes-per-node must be at least 1"),
        (["--low-priority"], "on a cluster, low priority is the cluster's tier"),
        (["--manifest", "missing.json"], "image manifest not found"),
    ],
)
def test_what_can_be_checked_fails_before_submitting(run_cli, manifest, in_repo, args, message) -> None:
    base = ["submit", "--trainer", "detector", "--manifest", manifest, "--compute", "c"]
    if "--pair" not in args:
        base += ["--pair", "azureml:l:1", "azureml:i:1"]
    result = run_cli(*base, *args)
    assert result.code == 2, result.err
    errors = [line for line in result.err.splitlines() if line.startswith("trainkit: error:")]
    assert len(errors) == 1 and message in errors[0], result.err


def test_no_workspace_names_the_settings_it_needs(run_cli, manifest, in_repo, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no config.json here
    result = run_cli("submit", "--image", IMAGE, "--pair", "azureml:l:1", "azureml:i:1", "--compute", "c")
    assert result.code == 2
    assert "no AzureML workspace: --subscription, --resource-group, --workspace not given" in result.err
    assert "hyperparameters of detector not checked" in result.err  # no trainers/ folder here


def test_no_login_says_which_login_is_expected(run_cli, manifest, in_repo, monkeypatch) -> None:
    import azure.identity
    from azure.core.exceptions import ClientAuthenticationError

    class NoLogin:
        def __init__(self, **kwargs: object) -> None:
            pass

        def get_token(self, *scopes: str) -> None:
            raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token")

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", NoLogin)
    result = run_cli(
        "submit", "--trainer", "detector", "--manifest", manifest, "--pair", "azureml:l:1", "azureml:i:1",
        "--compute", "c", "--subscription", "0000", "--resource-group", "rg", "--workspace", "ws",
    )  # fmt: skip
    assert result.code == 2 and "no Azure login: run `az login`" in result.err


def test_train_and_test_pairs_make_one_job_whose_command_trainkit_accepts(run_cli, manifest, in_repo, tmp_path):
    result = run_cli(
        "submit", "--trainer", "detector", "--manifest", manifest, "--compute", "c", "--dry-run", tmp_path / "jobs",
        "--train-pair", "azureml:labels-a:1", "azureml:images-a:1",
        "--train-pair", "azureml://datastores/main/paths/b/labels.csv", "azureml:images-b:2",
        "--test-pair", "azureml:labels-t:1", "azureml:images-t:1",
    )  # fmt: skip
    assert result.code == 0, result.err
    [job] = jobs_in(tmp_path / "jobs")
    assert sorted(job.inputs) == sorted(
        f"{kind}_{what}_{i}" for kind, n in (("train", 2), ("test", 1)) for i in range(1, n + 1)
        for what in ("labelset", "imageset")
    )  # fmt: skip
    assert job.inputs["train_labelset_2"].type == "uri_file" and job.inputs["test_labelset_1"].type == "mltable"
    # What AzureML runs, with its placeholders replaced by mount paths, is a valid `trainkit train` line.
    from trainkit.cli import build_parser
    from trainkit.config import data_config_from_args

    mounted = re.sub(r"\$\{\{inputs\.(\w+)\}\}", r"/mnt/\1", job.command).replace("${{outputs.checkpoints}}", "/ck")
    data = data_config_from_args(build_parser().parse_args(shlex.split(mounted)[1:]))
    assert [str(p.labelset) for p in data.train] == ["/mnt/train_labelset_1", "/mnt/train_labelset_2"]
    assert [str(p.imageset) for p in data.val] == ["/mnt/test_imageset_1"]


def test_pair_and_train_pair_do_not_mix(run_cli, manifest, in_repo) -> None:
    result = run_cli(
        "submit", "--trainer", "detector", "--manifest", manifest, "--compute", "c",
        "--pair", "azureml:l:1", "azureml:i:1", "--train-pair", "azureml:l:1", "azureml:i:1",
    )  # fmt: skip
    assert result.code == 2 and "not both" in result.err


def test_distributed_job_has_a_pytorch_distribution(tmp_path: Path) -> None:
    config = SubmitConfig(
        "detector", IMAGE, (DatasetPairRef("azureml:l:1", "azureml:i:1"),), "x", compute="gpu-cluster",
        instance_count=2, processes_per_node=4, shm_size="64g",
    )  # fmt: skip
    [job] = [load_and_validate(p) for p in write_specs(job_specs(config), tmp_path)]
    assert job.resources.instance_count == 2 and job.distribution.process_count_per_instance == 4
    assert type(job.distribution).__name__ == "PyTorchDistribution"


COCO = "FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1"


@pytest.mark.parametrize(
    ("weights", "extra", "expected_type"),
    [
        ("azureml:shapes-detector:3", [], "mlflow_model"),
        ("azureml:shapes-detector@latest", ["--weights-type", "custom_model"], "custom_model"),
        ("LOCAL_FILE", [], "uri_file"),
        ("LOCAL_FOLDER", [], "uri_folder"),
        ("azureml://datastores/main/paths/weights/team-1a2b3c4d.pth", [], "uri_file"),
    ],
)
def test_weights_are_a_read_only_input_the_command_names(
    run_cli, manifest, in_repo, tmp_path: Path, weights: str, extra: list[str], expected_type: str
) -> None:
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "w.pth").write_bytes(b"weights")
    weights = weights.replace("LOCAL_FILE", str(tmp_path / "w.pth")).replace("LOCAL_FOLDER", str(tmp_path / "run"))
    result = run_cli(
        "submit", "--trainer", "detector", "--manifest", manifest, "--pair", "azureml:l:1", "azureml:i:1",
        "--compute", "c", "--dry-run", tmp_path / "jobs", "--weights", weights, *extra,
    )  # fmt: skip
    assert result.code == 0, result.err
    [job] = jobs_in(tmp_path / "jobs")
    assert job.inputs["weights"].type == expected_type and job.inputs["weights"].mode == "ro_mount"
    # azure-ai-ml drops the azureml: of a registered asset's reference once loaded
    asset = weights.startswith("azureml:") and not weights.startswith("azureml://")
    assert job.inputs["weights"].path == (weights.removeprefix("azureml:") if asset else weights)
    assert job.tags["trainkit.weights"] == weights
    # What AzureML runs, the placeholder replaced by the mount path, sets the hyperparameter.
    from trainkit.cli import build_parser

    mounted = job.command.replace("${{inputs.weights}}", "/mnt/weights")
    assert "weights=/mnt/weights" in build_parser().parse_args(shlex.split(mounted)[1:]).set


def test_a_class_map_is_checked_uploaded_and_named_by_the_command(run_cli, manifest, in_repo, tmp_path: Path) -> None:
    (tmp_path / "classes.json").write_text('["square", "circle"]')
    (tmp_path / "bad.json").write_text('{"a": 0, "b": 5}')
    base = ["submit", "--trainer", "detector", "--manifest", manifest, "--pair", "azureml:l:1", "azureml:i:1",
            "--compute", "c", "--dry-run", tmp_path / "jobs"]  # fmt: skip
    result = run_cli(*base, "--class-map", tmp_path / "classes.json")
    assert result.code == 0, result.err
    [job] = jobs_in(tmp_path / "jobs")
    assert job.inputs["class_map"].type == "uri_file" and job.inputs["class_map"].path == str(tmp_path / "classes.json")
    from trainkit.cli import build_parser

    mounted = job.command.replace("${{inputs.class_map}}", "/mnt/classes.json")
    assert str(build_parser().parse_args(shlex.split(mounted)[1:]).class_map) == "/mnt/classes.json"
    bad = run_cli(*base, "--class-map", tmp_path / "bad.json")
    assert bad.code == 2 and "the ids must be the integers 0 to 1" in bad.err
    v1 = run_cli(*base, "--class-map", tmp_path / "classes.json", "--sdk", "v1")
    assert v1.code == 2 and "are job inputs of SDK v2 jobs" in v1.err


def test_torchvision_weights_must_be_baked_into_the_image(run_cli, manifest, in_repo, tmp_path: Path) -> None:
    base = ["submit", "--trainer", "detector", "--manifest", manifest, "--pair", "azureml:l:1", "azureml:i:1",
            "--compute", "c", "--dry-run", tmp_path / "jobs"]  # fmt: skip
    document = json.loads(manifest.read_text())
    document["images"]["detector"]["weights"] = [COCO]
    manifest.write_text(json.dumps(document))
    result = run_cli(*base, "--weights", f"torchvision:{COCO}")
    assert result.code == 0, result.err
    [job] = jobs_in(tmp_path / "jobs")
    assert "weights" not in job.inputs and f"--set weights=torchvision:{COCO}" in job.command
    small = "torchvision:FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1"
    refused = run_cli(*base, "--weights", small)
    assert refused.code == 2 and f"not baked into {IMAGE} (it holds: {COCO})" in refused.err
    twice = run_cli(*base, "--weights", "azureml:m:1", "--set", "weights=")
    assert twice.code == 2 and "weights given twice" in twice.err
    unknown = run_cli(*base, "--weights", "torchvision:Nope.V1")
    assert unknown.code == 2 and "unknown weights 'Nope.V1'" in unknown.err
    # Another arch starts from its own COCO weights by default: the image must hold them too.
    retina = "RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1"
    arch = run_cli(*base, "--set", "arch=retinanet_resnet50_fpn_v2")
    assert arch.code == 2, arch.err
    assert f"hyperparameter 'weights' = torchvision:{retina}: not baked into {IMAGE}" in arch.err
    assert f"--build-arg WEIGHTS='{retina}'" in arch.err and len(arch.err.strip().splitlines()) == 1
    scratch = run_cli(*base, "--set", "arch=retinanet_resnet50_fpn_v2", "--set", "weights=")
    assert scratch.code == 0, scratch.err
    swept = run_cli(*base, "--sweep", "--search", "arch=choice(fasterrcnn_mobilenet_v3_large_fpn,fcos_resnet50_fpn)")
    assert swept.code == 2 and "refuses arch='fcos_resnet50_fpn'" in swept.err
    assert "FCOS_ResNet50_FPN_Weights.COCO_V1: not baked" in swept.err


@pytest.mark.parametrize(
    ("extra", "kinds"),
    [
        (["--instance-type", "Standard_DS3_v2"], ["online_endpoint", "online_deployment"]),
        (["--batch", "--compute", "cpu-cluster", "--mini-batch-size", "4"], ["batch_endpoint", "batch_deployment"]),
    ],
)
def test_deploy_writes_an_endpoint_and_deployment_azure_ai_ml_loads(run_cli, tmp_path, extra, kinds) -> None:
    import azure.ai.ml

    result = run_cli("deploy", "--model", "azureml:shapes-detector:3", "--endpoint", "shapes-detector",
                     *extra, "--dry-run", tmp_path)  # fmt: skip
    assert result.code == 0, result.err
    assert [Path(p).stem for p in result.out.split()] == kinds
    endpoint = getattr(azure.ai.ml, f"load_{kinds[0]}")(source=tmp_path / f"{kinds[0]}.yml")
    deployment = getattr(azure.ai.ml, f"load_{kinds[1]}")(source=tmp_path / f"{kinds[1]}.yml")
    assert endpoint.name == deployment.endpoint_name == "shapes-detector"
    assert deployment.model == "shapes-detector:3"  # azure-ai-ml drops the azureml: once loaded


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "shapes:3", "--endpoint", "e1x", "--instance-type", "a"], "give the registered model as azureml:"),
        (["--model", "azureml:m:1", "--endpoint", "1bad", "--instance-type", "a"], "--endpoint 1bad: 3-32 letters"),
        (["--model", "azureml:m:1", "--endpoint", "good"], "needs --instance-type"),
        (["--model", "azureml:m:1", "--endpoint", "good", "--batch"], "--batch needs --compute"),
        (["--model", "azureml:m:1", "--endpoint", "good", "--instance-type", "a"], "no AzureML workspace"),
    ],
)
def test_deploy_refuses_with_one_line(run_cli, in_repo, args: list[str], message: str) -> None:
    result = run_cli("deploy", *args)
    assert result.code == 2 and message in result.err.strip().splitlines()[-1], result.err

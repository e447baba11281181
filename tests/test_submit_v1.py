"""`trainkit submit --sdk v1`: run configurations built with azureml-core and saved, offline.

azureml-core pins older core packages, so, as users are told to, it gets its own venv here:
azureml-core plus trainkit without its dependencies (submission needs none of them).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

SCRIPT = r"""
import json, sys
from pathlib import Path
from azureml.core.runconfig import RunConfiguration
from trainkit.errors import UserError
from trainkit.submit import v1
from trainkit.submit.spec import DatasetPairRef, SubmitConfig

out = Path(sys.argv[1])
config = SubmitConfig(
    "detector", "myacr.azurecr.io/trainkit-detector@sha256:" + "9e" * 32,
    (DatasetPairRef("azureml:shape-labels:2", "azureml:shape-images:3"),), "shapes", compute="gpu-cluster",
    datastore_name="main_datastore", hyperparameters={"epochs": 3}, grid=[("lr", [0.1, 0.01])],
    labelset_type="tabular", train_args=("--min-confidence", "0.5"), instance_count=2, processes_per_node=2,
)
(out / "source").mkdir(parents=True)
jobs = v1.run_configs(config, out / "source")
paths = v1.save(jobs, out)
loaded = [RunConfiguration.load(path=str(out), name=p.name) for p in paths]
errors = []
for bad in [SubmitConfig("d", config.image, (DatasetPairRef("labels.csv", "azureml:i:1"),), "x", compute="c"),
            SubmitConfig("d", config.image, (DatasetPairRef("azureml:l:1", "azureml:i:1"),), "x", instance_type="v")]:
    try:
        v1.run_configs(bad, out / "source")
    except UserError as exc:
        errors.append(str(exc))
print(json.dumps({
    "names": [j.display_name for j in jobs], "tabular": [j.tabular_labelset for j in jobs],
    "commands": [c.command for c in loaded], "targets": [c.target for c in loaded],
    "images": [c.environment.docker.base_image for c in loaded],
    "user_managed": [c.environment.python.user_managed_dependencies for c in loaded],
    "env": [c.environment_variables for c in loaded], "shm": [c.docker.shm_size for c in loaded],
    "data": [{k: [d.data_location.dataset.name, d.data_location.dataset.version, d.mechanism,
                  d.environment_variable_name] for k, d in c.data.items()} for c in loaded],
    "errors": errors,
    "distribution": [(c.pytorch.process_count, c.node_count, c.framework) for c in loaded],
}))
"""


@pytest.fixture(scope="module")
def v1_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv-v1") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "azureml-core==1.61.*", "pyyaml"], check=True, timeout=900)
    # From a copy: building the package in place would leave shared/build/ in the source tree.
    skip = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    source = shutil.copytree(ROOT / "shared", venv.parent / "shared", ignore=skip)
    subprocess.run([*pip, "--no-deps", str(source)], check=True, timeout=300)
    return venv / "bin" / "python"


def test_v1_run_configurations_are_built_and_saved_offline(v1_python: Path, tmp_path: Path) -> None:
    result = subprocess.run([str(v1_python), "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["names"] == ["detector shape-labels lr=0.1", "detector shape-labels lr=0.01"]
    assert got["tabular"] == [True, True] and got["targets"] == ["gpu-cluster"] * 2
    assert got["commands"][1] == (
        'trainkit train --imageset "$imageset" --labelset "$labelset" --output-dir outputs '
        "--checkpoint-dir outputs/checkpoints --resume auto --set epochs=3 --set lr=0.01 --min-confidence 0.5"
    )
    assert got["images"] == ["myacr.azurecr.io/trainkit-detector@sha256:" + "9e" * 32] * 2
    assert got["user_managed"] == [True, True] and got["shm"] == ["16g"] * 2
    assert got["env"] == [{"DATASTORE_NAME": "main_datastore"}] * 2
    assert got["data"][0] == {
        "imageset": ["shape-images", "3", "mount", "imageset"],
        "labelset": ["shape-labels", "2", "mount", "labelset"],
    }
    assert got["distribution"] == [[4, 2, "PyTorch"], [4, 2, "PyTorch"]]  # saved and read back
    assert "with --sdk v1, name a registered dataset as azureml:NAME:VERSION" in got["errors"][0]
    assert "--sdk v1 runs on a compute cluster" in got["errors"][1]


def test_v1_is_refused_clearly_without_azureml_core(run_cli, tmp_path: Path) -> None:
    result = run_cli(
        "submit", "--image", "myacr.azurecr.io/trainkit-detector@sha256:" + "9e" * 32, "--compute", "c",
        "--pair", "azureml:l:1", "azureml:i:1", "--sdk", "v1", "--dry-run", tmp_path,
    )  # fmt: skip
    assert result.code == 2 and "--sdk v1 needs azureml-core: pip install 'trainkit[submit-v1]'" in result.err

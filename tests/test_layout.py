"""The library's layout: a trainer's imports stay light, and every module lives where docs/development.md says."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import trainkit

PACKAGE = Path(trainkit.__file__).parent
ROOT = Path(__file__).resolve().parents[1]
# The command, the shared leaves and the model author's API; everything else belongs to a subpackage.
TOP_MODULES = {
    *("cli", "config", "contract", "errors", "atomic"),
    *("trainer", "params", "classmap", "batch", "weights", "hf_weights", "detection_archs"),
}
SUBPACKAGES = {"geometry", "data", "loading", "tasks", "training", "inference", "submit"}


def test_the_author_api_does_not_import_the_loader_or_dali() -> None:
    code = (
        "import sys, trainkit.trainer, trainkit.params, trainkit.classmap, trainkit.batch; "
        "print(sorted(m for m in sys.modules if m.startswith(('nvidia', 'trainkit.loading', 'trainkit.data'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_top_level_holds_only_the_command_leaves_and_author_api() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert modules == TOP_MODULES
    assert packages == SUBPACKAGES


def test_docs_module_map_names_every_top_module_and_subpackage() -> None:
    page = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    layout = page.split("## Layout", 1)[1].split("\n## ", 1)[0]
    for name in TOP_MODULES:
        assert f"`{name}`" in layout, name
    for name in SUBPACKAGES:
        assert f"`{name}/`" in layout, name


# Each subpackage may import its own layer and those before it, never one after it (a top module is a
# leaf or the author's API, reachable from every layer).
LAYERS = ("geometry", "data", "tasks", "loading", "inference", "training", "submit")


def _imports(path: Path) -> set[str]:
    """Every trainkit module `path` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("trainkit."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("trainkit."))
    return found


def test_no_import_runs_back_up_the_layers() -> None:
    upward = []
    for rank, layer in enumerate(LAYERS):
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            for module in _imports(path):
                target = module.split(".")[1]
                if target in LAYERS and LAYERS.index(target) > rank:
                    upward.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not upward, upward


CONVERT_TO = ("--to", "yolo", "--output", "{tmp}/yolo")
HEAVY = ("torch", "torchvision", "nvidia", "mlflow", "onnxruntime", "onnx", "azure")


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["submit", "--help"],
        ["demo-data", "{tmp}/demo", "--images", "12"],
        ["validate", "--imageset", "{tmp}/demo/imageset", "--labelset", "{tmp}/demo/labels.csv"],
        ["convert", "--imageset", "{tmp}/demo/imageset", "--labelset", "{tmp}/demo/labels.csv", *CONVERT_TO],
    ],
    ids=["help", "submit-help", "demo-data", "validate", "convert"],
)
def test_light_commands_load_no_heavy_library(args: list[str], tmp_path: Path) -> None:
    """`--help`, `validate`, `convert` and `demo-data` answer in a fraction of a second: no torch, DALI,
    MLflow, ONNX or Azure SDK behind them."""
    if args[0] in ("validate", "convert"):
        from trainkit.data.demo import write_demo_dataset

        write_demo_dataset(tmp_path / "demo", images=12)
    argv = [a.format(tmp=tmp_path) for a in args]
    code = (
        "import sys\nfrom trainkit.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"
    )
    env = {**os.environ, "DATASTORE_NAME": "demo_datastore"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stderr[-2000:]


def test_a_trainer_may_name_its_task_and_no_task_is_compared_by_name_outside_the_task_package() -> None:
    import re

    from trainkit.tasks import ObjectCrops
    from trainkit.trainer import Trainer

    class Named(Trainer):
        task = "object_crops"  # the form trainers used before tasks were types

    assert Named.task == ObjectCrops() and Named.metric_names()[0] == "val/accuracy"
    with pytest.raises(ValueError, match="unknown task 'image_labels'"):
        type("Unknown", (Trainer,), {"task": "image_labels"})
    branches = re.compile(r"task\s*[!=]=|\.detects\b|task_name\s*[!=]=")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines() if "tasks" not in path.parts else []
        found += [f"{path.relative_to(PACKAGE)}:{n}" for n, line in enumerate(lines, 1) if branches.search(line)]
    assert not found, found

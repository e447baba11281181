"""The benchmark script itself must keep working and keep checking identical records (not its speed)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_parse_benchmark_runs_and_records_are_identical() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "parse_labels.py"), "--rows", "3000"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "identical records: yes" in result.stdout
    assert "trainkit: read_labelset + parse_labels" in result.stdout


@pytest.mark.slow
def test_loader_benchmark_runs() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "loader.py"),
            "--images",
            "24",
            "--batch-size",
            "8",
            "--epochs",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "trainkit (cpu)   eval: decode + resize" in result.stdout
    assert "DataLoader(" in result.stdout and "decode only" in result.stdout

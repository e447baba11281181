"""Every benchmark keeps running to its table: each one's `--smoke` size runs here (its speed is not tested)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(name: str, *args: str, timeout: float = 600) -> str:
    """Run benchmarks/NAME.py with `args`; its stdout, after checking that it exited 0."""
    command = [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    return result.stdout


def test_parse_benchmark_runs_and_records_are_identical() -> None:
    out = run_benchmark("parse_labels", "--smoke")
    assert "identical records: yes" in out
    assert "trainkit: read_labelset + parse_labels" in out and "vs baseline" in out
    assert "trainkit: read_labels (AutoML JSON Lines)" in out
    assert "JSON Lines and COCO give the same objects: yes" in out


def test_loader_benchmark_runs() -> None:
    out = run_benchmark("loader", "--smoke")
    assert "trainkit (cpu)   eval: decode + resize" in out
    assert "DataLoader(" in out and "decode only" in out and "vs best tv" in out


@pytest.mark.slow
def test_harness_benchmark_runs() -> None:
    out = run_benchmark("harness", "--smoke")
    assert "plain loop (loader, loss, backward, step)" in out
    assert "harness overhead:" in out


@pytest.mark.slow
@pytest.mark.container
def test_publish_benchmark_runs() -> None:
    out = run_benchmark("publish", "--vm", "--smoke")
    assert "vs baseline" in out and "one-line trainer change:" in out
    # the manifest's sizes reach the table: the stand-in base and the trainer, in GB with their largest layers
    assert re.search(r"^base\s+\d+\.\d\d\s+\S", out, re.M) and re.search(r"^skeleton\s+\d+\.\d\d\s+\S", out, re.M)


@pytest.mark.slow
def test_quality_benchmark_runs() -> None:
    out = run_benchmark("quality", "--smoke")
    assert re.search(r"^skeleton \(GroupNorm, 64 RoIs @50%\)\s+\d+\s+\d+\s+\d\.\d{3}", out, re.M), out
    assert re.search(r"^detector from scratch \(MobileNetV3 FPN\)\s+\d+", out, re.M), out
    archs = run_benchmark("quality", "--archs", "--smoke")
    score = r"\d\.\d{3} / \d\.\d{3}"
    for name in ("ssdlite320_mobilenet_v3_large", r"hf d_fine \(N\)"):  # a torchvision arch, a published hf size
        row = rf"^{name}\s+\S+\s+{score}\s+{score}\s+{score}\s+not cached$"
        assert re.search(row, archs, re.M), archs


@pytest.mark.slow
def test_tiling_benchmark_runs() -> None:
    out = run_benchmark("tiling", "--smoke")
    for row in ("whole image", "tiles 3x2 + whole", "whole image, tiled prediction", "tiles 3x2 + whole, NMM merge"):
        assert re.search(rf"^{re.escape(row)}\s+0\s+\d\.\d{{3}}", out, re.M), out
    assert "prediction time per image:" in out


@pytest.mark.slow
def test_predict_benchmark_runs() -> None:
    out = run_benchmark("predict", "--smoke")
    assert re.search(r"^trainkit predict: prediction phase \(loader \+ model\)\s+\d+\.\d\s+\d\.\d\dx$", out, re.M), out
    assert "one image: median ms" in out and "onnxruntime" in out


def test_large_images_benchmark_runs() -> None:
    out = run_benchmark("large_images", "--smoke")
    assert re.search(r"^baseline: DALI decodes full size\s+\d+\s+\d+\s+\d\.\d{3}\s+1\.00x$", out, re.M), out
    assert re.search(r"^trainkit: reduced decode >40 MP\s+\d+\s+-?\d+\s+\d\.\d{3}\s+\d\.\d\dx$", out, re.M), out


@pytest.mark.slow
def test_models_benchmark_runs() -> None:
    out = run_benchmark("models", "--smoke")
    for row in ("ssdlite320_mobilenet_v3_large", "hf d_fine"):
        assert re.search(rf"^{re.escape(row)}\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+x$", out,
                         re.M), out  # fmt: skip


def test_dataset_report_benchmark_runs_and_finds_the_planted_copies() -> None:
    out = run_benchmark("dataset_report", "--smoke")
    row = r"^validate --report DIR\s+\d+\.\d\s+\d+\s+\d+\.\dx  1 of 1 planted copies; \d+ other pairs$"
    assert re.search(row, out, re.M), out


@pytest.mark.slow
def test_label_issues_benchmark_runs() -> None:
    out = run_benchmark("label_issues", "--smoke")
    assert re.search(r"^2 folds \(every image\)\s+all\s+\d+\s+(\d\.\d\d|-)\s+(\d\.\d\d|-)$", out, re.M), out
    assert re.search(r"^reviewed \(finder's top\)\s+\d\.\d{3}\s+\d\.\d{3}$", out, re.M), out


@pytest.mark.slow
def test_review_floor_benchmark_runs() -> None:
    out = run_benchmark("review_floor", "--smoke")
    assert re.search(r"^\s+21\s+4\s+\d\.\d{3}\s+\d+\s+\d+\s+(\d\.\d\d|-)\s+\d\.\d\d$", out, re.M), out

"""Shared fixtures: tiny images and label sets made in tmp_path, an in-process CLI runner, podman
settings, and a localhost server of weights files."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest
from PIL import Image

from trainkit.cli import main
from trainkit.data.demo import DemoDataset, write_demo_dataset
from trainkit.weights import ENV_WEIGHTS_URL

ROOT = Path(__file__).resolve().parents[1]
# Training runs here write no dataset report (about 2 s of charts a run, over a hundred runs);
# tests/test_checks.py trains once with the default, which writes it.
os.environ.setdefault("TRAINKIT_DATA_REPORT", "off")
os.environ.setdefault("TRAINKIT_LABEL_ISSUES", "off")  # one more pass over the validation images per run
sys.path.insert(0, str(ROOT / "ci" / "podman"))  # vm: podman settings and a local registry for these VMs
import vm  # noqa: E402


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run `trainkit ARGS` in-process with the given environment; returns code, stdout, stderr."""

    def run(*args: object, env: dict[str, str] | None = None) -> CliResult:
        for name in ("DATASTORE_NAME", "TRAINKIT_OUTPUT_DIR", "TRAINKIT_TRAINER"):
            monkeypatch.delenv(name, raising=False)
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoDataset:
    """The demo dataset, written once per test session (tests must not modify it)."""
    return write_demo_dataset(tmp_path_factory.mktemp("demo") / "demo", images=12, seed=1)


def make_image(path: Path, size: tuple[int, int] = (64, 48), fmt: str | None = None, colour=(90, 120, 30)) -> Path:
    """Write a plain image; the format follows the suffix unless given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt)
    return path


def obj(name: str, x0: float, x1: float, y0: float, y1: float, key: str = "type") -> dict:
    """One object in the label API's form."""
    return {key: name, "bottomX": x0, "topX": x1, "bottomY": y0, "topY": y1}


def write_labels(path: Path, rows: list[dict], index: bool = True) -> Path:
    """A label set as the API writes it: pandas to_csv of a DataFrame holding lists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=index)
    return path


@dataclass
class SmallSet:
    imageset: Path
    labels: Path


@pytest.fixture
def small_set(tmp_path: Path) -> SmallSet:
    """Three 64x48 images in the studio layout and a clean label set for them."""
    imageset = tmp_path / "images"
    for name in ("a.jpg", "b.jpg", "c.png"):
        make_image(imageset / "set" / name)
    labels = write_labels(
        tmp_path / "labels.csv",
        [
            {"image_url": "set/a.jpg", "label": [obj("cat", 1, 30, 2, 40)], "label_confidence": [0.9]},
            {
                "image_url": "set/b.jpg",
                "label": [obj("dog", 10, 20, 10, 20), obj("cat", 0, 5, 0, 5)],
                "label_confidence": [0.8, 0.7],
            },
            {"image_url": "set/c.png", "label": [], "label_confidence": []},
        ],
    )
    return SmallSet(imageset, labels)


@pytest.fixture(scope="session")
def podman_env() -> dict[str, str]:
    """Environment for ci/*.py to build and run images with podman on these VMs (ci/podman/vm.py).

    Skipped where podman is missing, except in CI.
    """
    if shutil.which("podman") is None and not os.environ.get("CI"):
        pytest.skip("podman is not installed (ci/podman/setup.sh installs it)")
    return vm.environment()


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, for the tests that open a page headless; ci/browser/setup.sh installs it in CI
    (skipped where it is missing, except in CI)."""
    found = shutil.which("chromium")
    if found is None and os.environ.get("CI"):
        subprocess.run(["bash", str(ROOT / "ci" / "browser" / "setup.sh")], check=True, timeout=900)
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("chromium is not installed (ci/browser/setup.sh installs it)")
    return found


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` run only where torch sees a CUDA device."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in gpu_items:
            item.add_marker(skip)


class _Files(http.server.BaseHTTPRequestHandler):
    """Serves `files` by name; a name in `cut` gets half its bytes and a closed connection."""

    files: ClassVar[dict[str, bytes]] = {}
    cut: ClassVar[set[str]] = set()

    def do_GET(self) -> None:
        name = self.path.rsplit("/", 1)[-1]
        if name not in self.files:
            self.send_error(404)
            return
        body = self.files[name]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if name in self.cut else body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def weights_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Files]]:
    """A localhost HTTP server that TRAINKIT_WEIGHTS_URL points at; set `.files` and `.cut` on what it yields."""
    handler = type("Files", (_Files,), {"files": {}, "cut": set()})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(ENV_WEIGHTS_URL, f"http://127.0.0.1:{httpd.server_address[1]}/models/")
    try:
        yield handler
    finally:
        httpd.shutdown()
        httpd.server_close()

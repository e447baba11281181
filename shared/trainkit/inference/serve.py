"""`trainkit serve`: MLflow's scoring server for a trained model, run by this interpreter.

`mlflow models serve --env-manager local` starts `uvicorn` found on PATH, which a venv that is not
activated lacks (exit 127). Here MLflow builds the command and its environment as it would, and the
server runs as `python -m uvicorn` under the interpreter trainkit itself runs under, so it finds the
same packages whether or not the venv is activated. SIGINT and SIGTERM stop it cleanly.
"""

from __future__ import annotations

import base64
import io
import logging
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from trainkit.errors import UserError
from trainkit.inference.sources import resolve_model

log = logging.getLogger("trainkit")
READY_TIMEOUT_S = 300.0  # loading torch and the model on a busy 2-core machine takes a minute


@dataclass(frozen=True)
class ServeConfig:
    """What `trainkit serve` was asked for."""

    model: str
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 1


def server_command(folder: Path, config: ServeConfig) -> tuple[list[str], dict[str, str]]:
    """MLflow's scoring-server command and environment for the model in `folder`, with its `uvicorn`
    run as a module of this interpreter."""
    from mlflow.pyfunc import scoring_server

    command, env = scoring_server.get_cmd(str(folder), config.port, config.host, None, config.workers)
    words = shlex.split(command)
    if words[0] != "uvicorn":  # MLflow changed how it serves: this module must follow
        raise RuntimeError(f"MLflow's scoring server no longer starts with uvicorn: {command!r}")
    return [sys.executable, "-m", *words], env


def example_request(url: str) -> str:
    """A request the served model answers: one small image, base64-encoded, as AutoML's endpoints take it."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (128, 128, 128)).save(buffer, format="PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    body = f'{{"dataframe_split": {{"columns": ["image"], "data": [["{image}"]]}}}}'
    return f"curl -s {url}/invocations -H 'Content-Type: application/json' -d '{body}'"


def run_serve(config: ServeConfig) -> int:
    """Serve the model until SIGINT or SIGTERM; returns the exit code (0 when stopped by either)."""
    if not 0 < config.port < 65536 or config.workers < 1:
        raise UserError(f"--port must be 1..65535 and --workers >= 1 (got {config.port}, {config.workers})")
    _require_free(config.host, config.port)
    with tempfile.TemporaryDirectory(prefix="trainkit-serve-") as scratch:
        folder = resolve_model(config.model, Path(scratch))
        argv, env = server_command(folder, config)
        log.info("serving %s with MLflow's scoring server (%d worker%s)", folder, config.workers,
                 "" if config.workers == 1 else "s")  # fmt: skip
        server = subprocess.Popen(argv, env=env)
        stopping: list[int] = []

        def stop(signum: int, frame: object) -> None:
            stopping.append(signum)
            server.terminate()

        previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            url = f"http://{_url_host(config.host)}:{config.port}"
            if _wait_ready(url, server):
                print(f"serving {folder} at {url}/invocations (health: {url}/ping); Ctrl-C stops it", flush=True)
                print(f"example request:\n  {example_request(url)}", flush=True)
            code = server.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if server.poll() is None:
                server.terminate()
                server.wait(timeout=30)
    if stopping:
        log.info("stopped by %s", signal.Signals(stopping[0]).name)
        return 0
    if code:
        raise RuntimeError(f"MLflow's scoring server exited with code {code} (its log is above)")
    return 0


def _require_free(host: str, port: int) -> None:
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port or --host") from None


def _url_host(host: str) -> str:
    """The address a client on this machine reaches the server at."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _wait_ready(url: str, server: subprocess.Popen) -> bool:
    """True once the server answers /ping; False if it exited (or is being stopped) first."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    if server.poll() is None:
        log.warning("the server has not answered %s/ping within %.0f s; still waiting for it", url, READY_TIMEOUT_S)
    return False

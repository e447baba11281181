"""Talk to a container registry: log in, read a tag's digest, push, and add tags without pulling.

The build engine (docker or podman) pushes; skopeo reads manifests and copies tags inside the
registry, the same way for either engine. Credentials are read from the environment and passed on
stdin, never on a command line; they are stored only in an auth file inside a private temporary
folder that is deleted when the `Registry` is closed.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from images import engine_command


class RegistryError(Exception):
    """A registry operation failed; the message says which and why, without any secret."""


class Registry:
    """One registry session. Use as a context manager so that a temporary login is removed."""

    def __init__(self, engine: str, *, insecure: bool = False) -> None:
        for tool in (engine, "skopeo"):
            if shutil.which(tool) is None:
                raise RegistryError(f"`{tool}` is not on PATH: install it (CI runners: apt-get install {tool})")
        self.engine = engine
        self.insecure = insecure
        self.env = dict(os.environ)
        self._authdir: Path | None = None

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Forget a login made by `login` (its auth file is deleted)."""
        if self._authdir is not None:
            shutil.rmtree(self._authdir, ignore_errors=True)
            self._authdir = None

    def login(self, host: str, username: str, password: str) -> None:
        """Log the engine and skopeo in to `host` with an auth file private to this session."""
        self._authdir = Path(tempfile.mkdtemp(prefix="trainkit-auth-"))  # mode 0700
        if self.engine == "docker":
            self.env["DOCKER_CONFIG"] = str(self._authdir)
            self.env["REGISTRY_AUTH_FILE"] = str(self._authdir / "config.json")
        else:
            self.env["REGISTRY_AUTH_FILE"] = str(self._authdir / "auth.json")
        command = [*engine_command(self.engine), "login", *self._engine_tls(), "--username", username]
        command += ["--password-stdin", host]
        self._run(command, f"{self.engine} login", stdin=password)

    def digest(self, ref: str) -> str | None:
        """The digest of the manifest `ref` points to in the registry, or None when there is none.

        Computed from the raw manifest bytes, so it is the digest a pull by digest asks for, whether
        the tag holds a single manifest or an index.
        """
        command = ["skopeo", "inspect", "--raw", *self._skopeo_tls("tls-verify"), f"docker://{ref}"]
        result = subprocess.run(command, capture_output=True, env=self.env)
        if result.returncode != 0:
            message = result.stderr.decode(errors="replace")
            if "manifest unknown" in message or "name unknown" in message:
                return None
            raise RegistryError(f"cannot read {ref}: {_last_line(message)}")
        return "sha256:" + hashlib.sha256(result.stdout).hexdigest()

    def push(self, ref: str) -> str:
        """Push the local image `ref`; returns its digest in the registry."""
        self._run([*engine_command(self.engine), "push", *self._engine_tls(), ref], f"{self.engine} push")
        digest = self.digest(ref)
        if digest is None:
            raise RegistryError(f"{ref} was pushed but the registry does not list it")
        return digest

    def add_tag(self, repository: str, digest: str, tag: str) -> None:
        """Point `repository:tag` at the manifest `repository@digest`: only the manifest is written."""
        tls = self._skopeo_tls("src-tls-verify", "dest-tls-verify")
        source, target = f"docker://{repository}@{digest}", f"docker://{repository}:{tag}"
        self._run(["skopeo", "copy", "--quiet", "--preserve-digests", *tls, source, target], "skopeo copy")

    def build_flags(self) -> list[str]:
        """Flags a build needs to pull its FROM image from this registry."""
        return self._engine_tls()

    def _engine_tls(self) -> list[str]:
        # docker reads insecure registries from its daemon settings (127.0.0.0/8 is insecure by default)
        return ["--tls-verify=false"] if self.insecure and self.engine == "podman" else []

    def _skopeo_tls(self, *flags: str) -> list[str]:
        return [f"--{flag}=false" for flag in flags] if self.insecure else []

    def _run(self, command: list[str], what: str, stdin: str | None = None) -> None:
        print("+", shlex.join(command), file=sys.stderr, flush=True)
        result = subprocess.run(
            command, input=stdin, text=True, env=self.env, stdout=sys.stderr, stderr=subprocess.PIPE
        )
        if result.stderr:
            sys.stderr.write(result.stderr)
        if result.returncode != 0:
            raise RegistryError(f"`{what}` failed: {_last_line(result.stderr)}")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"

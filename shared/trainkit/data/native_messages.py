"""The image decoders' own lines on stderr, kept out of trainkit's log and folded into its warnings.

DALI's decoding library (nvImageCodec and its codecs) prints lines such as
`[ERROR] [jpeg_parser] Invalid marker` straight to file descriptor 2, between trainkit's lines, with
no setting that silences them. `NativeMessages` puts a pipe in front of descriptor 2: lines in the
library's form are kept (the latest few, and at DEBUG in the log), every other line goes on to the
real stderr unchanged. `DaliDecodeCheck` asks for the lines its one-file decode caused, so the
warning that names the file carries the library's reason.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

# `[ERROR] [jpeg_parser] Invalid marker`, with or without the terminal colour codes around the level
_NATIVE = re.compile(r"^\[(ERROR|WARNING|WARN|INFO|DEBUG|FATAL)\]\s*\[([\w.-]+)\]\s*(.*)$")
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
_KEPT = 200  # native lines remembered; the check reads its own right after it runs


def native_line(line: str) -> str | None:
    """`component: message` when `line` is one of the decoding library's, else None."""
    match = _NATIVE.match(_COLOUR.sub("", line).strip())
    return f"{match.group(2)}: {match.group(3).strip()}" if match else None


class NativeMessages:
    """The filter in front of descriptor 2 (see the module doc); one per process, while `installed()`."""

    def __init__(self) -> None:
        self._lines: collections.deque[tuple[int, str]] = collections.deque(maxlen=_KEPT)
        self._count = 0
        self._lock = threading.Lock()
        self._marks: dict[str, threading.Event] = {}
        self._real = -1
        self._write = -1
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        sys.stderr.flush()
        self._real = os.dup(2)
        read, self._write = os.pipe()
        os.dup2(self._write, 2)
        self._thread = threading.Thread(target=self._pump, args=(read,), name="trainkit-native-stderr", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        sys.stderr.flush()
        self.sync()
        os.dup2(self._real, 2)
        os.close(self._write)  # the pump sees the end once no other copy of the write end is open
        if self._thread is not None:
            self._thread.join(timeout=2)
        os.close(self._real)

    def position(self) -> int:
        """How many native lines have been seen: `since(position)` gives those after it."""
        self.sync()
        with self._lock:
            return self._count

    def since(self, position: int) -> list[str]:
        """The native lines seen after `position`, oldest first (everything written so far is handled first)."""
        self.sync()
        with self._lock:
            return [text for number, text in self._lines if number >= position]

    def sync(self, timeout: float = 2.0) -> None:
        """Wait until the pump has handled everything written to descriptor 2 before this call."""
        if self._thread is None or not self._thread.is_alive():
            return
        token = uuid.uuid4().hex
        done = threading.Event()
        self._marks[token] = done
        os.write(2, f"\x00trainkit-sync {token}\n".encode())
        done.wait(timeout)
        self._marks.pop(token, None)

    def _pump(self, read: int) -> None:
        with os.fdopen(read, "rb", buffering=0) as pipe:
            pending = b""
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._handle(line + b"\n")
                if pending and not _may_start_kept_line(pending):
                    # A line still being written that is not the library's (a progress bar redrawn with
                    # \r): on to the terminal now, not when its newline comes.
                    os.write(self._real, pending)
                    pending = b""
            if pending:
                self._handle(pending)

    def _handle(self, raw: bytes) -> None:
        try:
            text = raw.decode("utf-8", errors="replace")
            if text.startswith("\x00trainkit-sync "):
                event = self._marks.get(text.split()[1])
                if event is not None:
                    event.set()
                return
            native = native_line(text)
            if native is None:
                os.write(self._real, raw)
                return
            with self._lock:
                self._lines.append((self._count, native))
                self._count += 1
            if log.isEnabledFor(logging.DEBUG):  # straight out: logging would write into this very pipe
                os.write(self._real, f"trainkit: DEBUG: decoder: {native}\n".encode())
        except Exception:  # the pump must never stop: a stopped pump would block every write to stderr
            os.write(self._real, raw)


def _may_start_kept_line(partial: bytes) -> bool:
    """Whether `partial` may be the start of a line the filter keeps (the library's, or a sync mark)."""
    text = _COLOUR.sub("", partial.decode("utf-8", errors="replace"))
    return text.startswith(("[", "\x1b", "\x00")) or not text


_active: NativeMessages | None = None


@contextmanager
def installed() -> Iterator[NativeMessages]:
    """Filter descriptor 2 for the block (nested calls share the outer filter)."""
    global _active
    if _active is not None:
        yield _active
        return
    messages = NativeMessages()
    try:
        messages.start()
    except OSError as exc:  # no descriptor 2 to stand in front of (closed by whoever started us)
        log.debug("decoder messages not filtered: %s", exc)
        yield messages
        return
    _active = messages
    try:
        yield messages
    finally:
        _active = None
        messages.stop()


def active() -> NativeMessages | None:
    """The filter in place, if any."""
    return _active

"""Images as a served model receives them: base64 text, file bytes, a file path, or a uint8 array."""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

_LONGEST_PATH = 4096  # longer text is taken for base64, never tried as a path


class UnreadableImage(ValueError):
    """An input that is no decodable image; the message says why."""


def to_array(source: object) -> np.ndarray:
    """(H, W, 3) uint8 RGB, its EXIF orientation applied, as the training loader decodes files."""
    if isinstance(source, np.ndarray):
        return _checked_array(source)
    if isinstance(source, bytes | bytearray | memoryview):
        return decode(bytes(source))
    if isinstance(source, Path):
        return decode(_read(source))
    if isinstance(source, str):
        if len(source) < _LONGEST_PATH and Path(source).is_file():
            return decode(_read(Path(source)))
        try:
            data = base64.b64decode(source, validate=True)
        except (binascii.Error, ValueError):
            raise UnreadableImage("neither an existing file path nor base64-encoded image bytes") from None
        return decode(data)
    raise UnreadableImage(f"an image must be base64 text, bytes, a path or a uint8 array, not {type(source).__name__}")


def decode(data: bytes) -> np.ndarray:
    """Decode an image file's bytes to (H, W, 3) uint8 RGB with EXIF orientation applied."""
    if not data:
        raise UnreadableImage("empty image data")
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
            return np.array(image, dtype=np.uint8)  # writable, as torch wants
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UnreadableImage(f"not a decodable image ({' '.join(str(exc).split())[:120]})") from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UnreadableImage(f"cannot read {path} ({exc.strerror or exc})") from None


def _checked_array(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        raise UnreadableImage(f"an image array must be uint8 (0-255), not {array.dtype}")
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise UnreadableImage(f"an image array must be H x W x 3 (RGB), not {'x'.join(map(str, array.shape))}")
    return np.ascontiguousarray(array[:, :, :3])

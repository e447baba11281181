"""Image paths and image headers: where each `image_url` lives and what is there.

Sizes are reported as the image is displayed, i.e. after its EXIF orientation is applied, because
labelling tools draw boxes on the displayed image; the loader decodes with the same convention.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image, UnidentifiedImageError

from trainkit.labels import RowIssue

# Formats the loader can decode (DALI's decoders); anything else is flagged by validate.
DECODABLE_FORMATS = frozenset({"JPEG", "PNG", "BMP", "TIFF", "WEBP", "JPEG2000", "PPM"})
_EXIF_ORIENTATION = 0x0112
_ROTATED_ORIENTATIONS = frozenset({5, 6, 7, 8})
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


def relative_image_path(url: str | None) -> str | RowIssue:
    """Normalise an `image_url` to a relative POSIX path inside the image set, or say why it cannot be one."""
    if url is None or not url.strip():
        return RowIssue("image_url", "image_url", "image_url is empty")
    if "://" in url:
        return RowIssue(
            "image_url_unsafe", "image_url", f"image_url {url!r} is a URL; it must be a path relative to the image set"
        )
    posix = url.strip().replace("\\", "/")
    if posix.startswith("/") or _WINDOWS_DRIVE.match(posix):
        return RowIssue(
            "image_url_unsafe", "image_url", f"image_url {url!r} is absolute; it must be relative to the image set"
        )
    parts = [p for p in PurePosixPath(posix).parts if p != "."]
    if ".." in parts:
        return RowIssue("image_url_unsafe", "image_url", f"image_url {url!r} leaves the image set ('..')")
    if not parts:
        return RowIssue("image_url", "image_url", f"image_url {url!r} names no file")
    return "/".join(parts)


def image_root(imageset: Path, datastore_name: str) -> Path:
    """The folder image URLs are relative to: the mount, or the mount's datastore sub-folder."""
    return imageset / datastore_name if datastore_name else imageset


@dataclass(frozen=True)
class ImageInfo:
    """An image's displayed size."""

    width: int
    height: int


def probe_image(path: Path, decode: bool = False) -> ImageInfo | RowIssue:
    """Read an image's header (and with `decode`, all its pixels) to check it is usable."""
    try:
        with Image.open(path) as image:
            fmt = image.format or "unknown"
            if fmt not in DECODABLE_FORMATS:
                return RowIssue(
                    "image_format", "image_url", f"{path} is {fmt}, which the loader cannot decode (use JPEG or PNG)"
                )
            width, height = image.size
            if image.getexif().get(_EXIF_ORIENTATION) in _ROTATED_ORIENTATIONS:
                width, height = height, width
            if decode:
                image.load()
    except Image.DecompressionBombError as exc:
        return RowIssue("image_unreadable", "image_url", f"image {path} is too large for a safe decode ({exc})")
    except FileNotFoundError:
        return RowIssue("image_missing", "image_url", f"image {path} does not exist")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return RowIssue(
            "image_unreadable", "image_url", f"image {path} cannot be read ({' '.join(str(exc).split())[:160]})"
        )
    if width <= 0 or height <= 0:
        return RowIssue("image_unreadable", "image_url", f"image {path} has size {width}x{height}")
    return ImageInfo(width, height)


def probe_images(paths: Iterable[Path], decode: bool = False, workers: int | None = None) -> list[ImageInfo | RowIssue]:
    """Probe many images; threads overlap the file-open latency of network mounts."""
    workers = workers or min(16, (os.cpu_count() or 2) * 4)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: probe_image(p, decode), paths))

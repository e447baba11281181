"""Image paths and image headers: where each `image_url` lives and what is there.

Sizes are reported as the image is displayed, i.e. after its EXIF orientation is applied, because
labelling tools draw boxes on the displayed image; the loader decodes with the same convention.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image, UnidentifiedImageError

from trainkit.data.labels import RowIssue
from trainkit.data.uris import NotAnImagePath, datastore_path, strip_prefix

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


def image_location(url: str | None, prefix: str = "") -> tuple[str | None, str] | RowIssue:
    """(the datastore an AzureML URI names, or None for a plain path; the path inside it, relative), or
    why `url` names no image in the image set. A URI's path is relative to its datastore's root, so
    when the image set was mounted from a folder below it, that folder, `prefix`, is dropped; plain
    paths are relative to the image set already."""
    if url is None or not url.strip():
        return RowIssue("image_url", "image_url", "image_url is empty")
    try:
        found = datastore_path(url)
    except NotAnImagePath as exc:
        return RowIssue("image_url_unsafe", "image_url", str(exc))
    datastore, text = (found.datastore, found.path) if found else (None, url)
    path = relative_image_path(text)
    if isinstance(path, RowIssue):
        return path
    stripped = strip_prefix(path, prefix) if datastore is not None else path
    if stripped is None:
        return RowIssue(
            "image_url_prefix", "image_url",
            f"image_url {url!r} is not under --image-url-prefix {prefix.strip('/')!r}; fix the row, or the prefix",
        )  # fmt: skip
    return datastore, stripped


def image_root(imageset: Path, datastore_name: str) -> Path:
    """The folder image URLs are relative to: the mount, or the mount's datastore sub-folder."""
    return imageset / datastore_name if datastore_name else imageset


DETECT_SAMPLE = 20


def detect_datastore(imageset: Path, relative: Iterable[str | None]) -> tuple[str, str]:
    """Find the datastore folder when none is given: (name, "" for the mount root; how it was found).

    Image paths are tried at the mount root and under each sub-folder; exactly one of those places
    may hold them. The predecessor hard-coded `main_datastore`; ML-studio sets have no such folder.
    Raises DatasetError when more than one place holds them; when none does, the root is used and
    every row reports its missing image (with the folders there as a hint).
    """
    from trainkit.errors import DatasetError

    sample = [r for r in relative if r][:DETECT_SAMPLE]
    if not sample:
        return "", "no image paths to look for: using the mount root"
    subfolders = sorted(p.name for p in imageset.iterdir() if p.is_dir() and not p.name.startswith("."))
    found = [name for name in ["", *subfolders] if any((image_root(imageset, name) / r).is_file() for r in sample)]
    where = [f"{imageset}/{name}" if name else f"{imageset} (the root)" for name in found]
    if len(found) == 1:
        name = found[0]
        how = f"under datastore folder {name!r}" if name else "at the mount root (ML-studio layout)"
        return name, f"DATASTORE_NAME not set: image paths found {how}"
    if not found:
        return "", f"DATASTORE_NAME not set and none of {len(sample)} image paths found anywhere: using the mount root"
    raise DatasetError(
        f"image set {imageset}: image paths exist in more than one place ({', '.join(where)}); "
        f"set DATASTORE_NAME (or --datastore-name) to the folder to use, or to empty for the root"
    )


# Pillow warns when it opens an image above 89 MP, for a decode at full size: the loader decodes such
# images at reduced size (trainkit.loading.large_images). Above 179 MP Pillow refuses, and the probe
# reports the row. Set once here: catch_warnings is not thread-safe, and the probe runs in threads.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


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

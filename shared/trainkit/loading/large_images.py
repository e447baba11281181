"""Very large images (a 12000x9000 scan: 324 MB as RGB) decoded at reduced size, so memory stays bounded.

DALI decodes every sample's window at full resolution before torch resizes it to `image_size`, and
keeps buffers sized for the largest sample across its prefetch queue: a few such files in a batch
cost gigabytes on the host or the GPU. Images above LARGE_IMAGE_PIXELS are instead decoded by Pillow
in the loader's feeding thread (one at a time) with JPEG DCT scaling (`Image.draft`: libjpeg decodes
at 1/2, 1/4 or 1/8 size, never holding the full-size pixels), at the smallest scale that keeps at
least `image_size` pixels across the sample's window, so the picture the model sees is the same up
to resampling. Formats without DCT scaling (PNG, TIFF) are decoded once at full size and reduced by
an integer factor before DALI sees them. DALI then gets an uncompressed BMP of the reduced image and
the window scaled to it. The window's targets are relative to the window, so they need no change;
rounding the window to whole reduced pixels moves its edges by under one reduced pixel.
"""

from __future__ import annotations

import io
import math
from dataclasses import replace

import numpy as np
from PIL import Image, ImageOps

from trainkit.geometry.windows import Window

LARGE_IMAGE_PIXELS = 40_000_000  # above any phone photo (a 12 MP or 48 MP sensor bins to 12 MP by default)
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that turn the stored image by 90 degrees
_EXIF_ORIENTATION = 0x0112


def is_large(width: int, height: int) -> bool:
    """Whether an image of this displayed size is decoded at reduced size (see the module doc)."""
    return width * height > LARGE_IMAGE_PIXELS


def reduced(data: bytes, width: int, height: int, window: Window, out_size: int) -> tuple[np.ndarray, Window]:
    """The image in `data` (displayed size `width` x `height`) decoded at the smallest size that keeps
    `out_size` pixels across `window`, as BMP bytes, and `window` in that image's pixels.

    Raises ValueError with Pillow's reason when it cannot decode the file.
    """
    scale = min(1.0, max(out_size / max(window.width, 1), out_size / max(window.height, 1)))
    need = (math.ceil(width * scale), math.ceil(height * scale))
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.getexif().get(_EXIF_ORIENTATION) in _SWAPS_AXES:
                need = need[::-1]  # draft sizes are in the stored orientation
            opened.draft("RGB", need)
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except Exception as exc:  # any reason Pillow cannot decode it: the file is unusable
        raise ValueError(" ".join(str(exc).split())[:160]) from None
    # Only PNG and the like are still far above the needed size here (draft already reduced a JPEG).
    factor = min(image.width // max(math.ceil(width * scale), 1), image.height // max(math.ceil(height * scale), 1))
    if factor >= 2:
        image = image.reduce(factor)
    fx, fy = image.width / width, image.height / height
    x0, y0 = math.floor(window.x0 * fx), math.floor(window.y0 * fy)
    x1 = min(image.width, math.ceil((window.x0 + window.width) * fx))
    y1 = min(image.height, math.ceil((window.y0 + window.height) * fy))
    out = io.BytesIO()
    image.save(out, format="BMP")  # no compression: DALI reads it at memory speed
    return np.frombuffer(out.getvalue(), np.uint8), replace(window, x0=x0, y0=y0, width=x1 - x0, height=y1 - y0)

"""Which files the training decoder cannot read, and a CPU fallback for those that Pillow can.

Some JPEGs that phones, scanners and scrapers write (junk bytes before a marker, an FF00 "marker",
a truncated APP14 segment) decode in Pillow but stop DALI's parser. `DaliDecodeCheck` decodes one
file with DALI's decoder on the training device kind, so the loader can find the file that stopped
a batch without giving up the batch's other samples; `transcoded` decodes such a file with Pillow
(its EXIF orientation applied, as DALI applies it) and re-encodes the pixels as PNG, which DALI
reads, so the sample trains with the same window, boxes and order as any other.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from trainkit.data.native_messages import active


class DaliDecodeCheck:
    """Decode single files with DALI's image decoder (`cpu`, or `mixed` on a GPU).

    A fresh pipeline per file: a DALI pipeline that failed is not to be run again, and checks are
    rare (only the files in flight when the training pipeline failed).
    """

    def __init__(self, decode_device: str = "cpu", device_id: int | None = None) -> None:
        self._decode_device = decode_device
        self._device_id = device_id

    def problem(self, data: bytes | np.ndarray) -> str | None:
        """None when DALI decodes `data`; else why not, in one line."""
        encoded = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else np.ascontiguousarray(data, np.uint8)
        if not len(encoded):
            return "the file is empty"
        messages = active()
        start = messages.position() if messages is not None else 0
        try:
            pipe = self._pipeline()
            pipe.build()
            pipe.feed_input("encoded", [encoded])
            pipe.run()
        except Exception as exc:  # DALI raises RuntimeError with the decoder's message
            # The decoding library's own words (printed, not raised) name the fault; DALI's often do not.
            printed = messages.since(start) if messages is not None else []
            return "; ".join(dict.fromkeys([_reason(str(exc)), *printed]))
        return None

    def _pipeline(self):
        from nvidia.dali import fn, pipeline_def, types

        @pipeline_def(batch_size=1, num_threads=1, device_id=self._device_id, prefetch_queue_depth=1)
        def decode():
            encoded = fn.external_source(name="encoded", dtype=types.UINT8)
            return fn.decoders.image(encoded, device=self._decode_device, output_type=types.RGB)

        return decode()


def _reason(message: str) -> str:
    """The decoder's own words from DALI's error text (after its `encountered:`), on one line."""
    lines = [line.strip() for line in message.split("encountered:", 1)[-1].splitlines() if line.strip()]
    return " ".join((lines[0] if lines else message).split())[:200]


def transcoded(data: bytes) -> bytes:
    """The image in `data` decoded by Pillow (EXIF orientation applied, RGB) and written as PNG.

    Raises ValueError with Pillow's reason when it cannot decode the file either.
    """
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except Exception as exc:  # any reason Pillow cannot decode it: the file is unusable
        raise ValueError(" ".join(str(exc).split())[:160]) from None
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)  # read once, by the loader: speed over size
    return out.getvalue()

"""`image_url` values that are AzureML URIs: the datastore they name and the path inside it.

AzureML's own label sets (AutoML JSON Lines, Data Labeling's COCO and its v1 labeled datasets) point
at images with URIs rather than paths relative to the image set:

    azureml://subscriptions/<sub>/resourcegroups/<rg>/workspaces/<ws>/datastores/<ds>/paths/<p>
    azureml://datastores/<ds>/paths/<p>
    AmlDatastore://<ds>/<p>
    StreamInfo(AmlDatastore://<ds>/<p>[{...}])        (a v1 labeled dataset's Arrow column, as text)

Each maps to (datastore <ds>, path <p>); the image is then `<imageset>/<p>` or `<imageset>/<ds>/<p>`,
whichever holds the images (trainkit.data.images.detect_datastore). `http(s)://` URLs are refused:
the job cannot read them as files; the images must be registered as a data asset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

_LONG = re.compile(
    r"^azureml://subscriptions/[^/]+/resource[gG]roups/[^/]+/(?:providers/Microsoft\.MachineLearningServices/)?"
    r"workspaces/[^/]+/datastores/(?P<ds>[^/]+)/paths/(?P<path>.*)$"
)
_SHORT = re.compile(r"^azureml://datastores/(?P<ds>[^/]+)/paths/(?P<path>.*)$")
_AML_DATASTORE = re.compile(r"^AmlDatastore://(?P<ds>[^/]+)/(?P<path>.*)$", re.IGNORECASE)
_STREAM_INFO = re.compile(r"^StreamInfo\((?P<uri>[^\[\]]+?)(?:\[.*\])?\)$", re.S)


@dataclass(frozen=True)
class DatastorePath:
    """An image URI taken apart: its datastore and the path inside it (percent-escapes decoded)."""

    datastore: str
    path: str


class NotAnImagePath(ValueError):
    """An image_url that names no file the job can read (an http(s) URL, another scheme)."""


def datastore_path(url: str) -> DatastorePath | None:
    """The datastore and path of an AzureML image URI, None for a plain path; raises NotAnImagePath for
    other URLs."""
    text = url.strip()
    stream = _STREAM_INFO.match(text)
    if stream:
        text = stream.group("uri").strip()
    for pattern in (_LONG, _SHORT, _AML_DATASTORE):
        match = pattern.match(text)
        if match:
            return DatastorePath(match.group("ds"), unquote(match.group("path")))
    if text.lower().startswith(("http://", "https://")):
        raise NotAnImagePath(
            f"image_url {url!r} is a web URL, which a job cannot read as a file; register the images as a data "
            "asset (or a datastore folder) and write paths relative to it, or azureml://datastores/... URIs"
        )
    if "://" in text or stream:
        raise NotAnImagePath(
            f"image_url {url!r} is a URL trainkit cannot map to the image set; use a path relative to the image "
            "set, or an azureml://datastores/<name>/paths/<path> URI"
        )
    return None


def strip_prefix(path: str, prefix: str) -> str | None:
    """`path` without the leading folder(s) `prefix` (slashes at its ends ignored); None when the path is
    not under it. An empty prefix strips nothing."""
    prefix = prefix.strip("/")
    if not prefix:
        return path
    if path == prefix or not path.startswith(prefix + "/"):
        return None
    return path[len(prefix) + 1 :]

from pathlib import Path

import pytest
from conftest import make_image
from PIL import Image

from trainkit.data.images import ImageInfo, image_root, probe_image, relative_image_path
from trainkit.data.labels import RowIssue


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("a/b.jpg", "a/b.jpg"),
        ("./a//b.jpg", "a/b.jpg"),
        ("a\\b.jpg", "a/b.jpg"),
        (" a/b.jpg ", "a/b.jpg"),
    ],
)
def test_relative_paths(url: str, expected: str) -> None:
    assert relative_image_path(url) == expected


@pytest.mark.parametrize(
    ("url", "reason", "detail"),
    [
        ("", "image_url", "image_url is empty"),
        (None, "image_url", "image_url is empty"),
        ("../x.jpg", "image_url_unsafe", "leaves the image set"),
        ("a/../../x.jpg", "image_url_unsafe", "leaves the image set"),
        ("/etc/passwd", "image_url_unsafe", "is absolute"),
        ("C:\\x.jpg", "image_url_unsafe", "is absolute"),
        ("\\\\server\\x.jpg", "image_url_unsafe", "is absolute"),
        ("https://x/y.jpg", "image_url_unsafe", "is a URL"),
        ("./", "image_url", "names no file"),
    ],
)
def test_rejected_paths(url: str | None, reason: str, detail: str) -> None:
    issue = relative_image_path(url)
    assert isinstance(issue, RowIssue)
    assert issue.reason == reason and detail in issue.detail


def test_image_root_layouts(tmp_path: Path) -> None:
    assert image_root(tmp_path, "main_datastore") == tmp_path / "main_datastore"
    assert image_root(tmp_path, "") == tmp_path


def test_probe_sizes_and_formats(tmp_path: Path) -> None:
    assert probe_image(make_image(tmp_path / "a.jpg", (64, 48))) == ImageInfo(64, 48)
    assert probe_image(make_image(tmp_path / "a.png", (10, 20))) == ImageInfo(10, 20)
    grey = tmp_path / "g.jpg"
    Image.new("L", (8, 9)).save(grey)
    assert probe_image(grey) == ImageInfo(8, 9)


def test_probe_applies_exif_orientation(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed portrait
    Image.new("RGB", (64, 48)).save(path, exif=exif)
    assert probe_image(path) == ImageInfo(48, 64)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("missing.jpg", None, "image_missing"),
        ("text.jpg", b"not an image", "image_unreadable"),
        ("anim.gif", "gif", "image_format"),
    ],
)
def test_probe_problems(tmp_path: Path, name: str, content, reason: str) -> None:
    path = tmp_path / name
    if content == "gif":
        Image.new("RGB", (4, 4)).save(path)
    elif content is not None:
        path.write_bytes(content)
    result = probe_image(path)
    assert isinstance(result, RowIssue) and result.reason == reason and str(path) in result.detail


def test_truncated_jpeg_needs_decode_check(tmp_path: Path) -> None:
    path = tmp_path / "t.jpg"
    Image.effect_noise((256, 256), 64).convert("RGB").save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert isinstance(probe_image(path), ImageInfo)  # the header alone looks fine
    result = probe_image(path, decode=True)
    assert isinstance(result, RowIssue) and result.reason == "image_unreadable"

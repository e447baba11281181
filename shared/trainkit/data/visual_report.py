"""The dataset report: one report.html that opens offline, with its pictures beside it.

Charts (matplotlib): objects per class (train and validation side by side), objects per image, box
width, height and aspect ratio (in pixels and as a share of the image), where box centres fall (a
heat map) and image sizes. Then a grid of sample images per class with their boxes drawn, and the
checks' findings (trainkit.data.checks) with a thumbnail of each image and the box concerned. Every
picture is a file beside the page, referenced by a relative path: nothing is fetched when it opens.
"""

from __future__ import annotations

import html
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainkit.data.checks import CheckReport, Finding
from trainkit.data.records import Records
from trainkit.errors import UserError

SAMPLES = 6  # images per class in the sample grid
FINDINGS_SHOWN = 24  # findings drawn per check (the JSON and the table list them all)
THUMB_PX = 160  # the longer side of a drawn thumbnail
COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c", "#008080")


@dataclass(frozen=True)
class Section:
    """A heading, a line of text and the figures under it (paths relative to the report)."""

    title: str
    text: str
    figures: tuple[str, ...] = ()
    html: str = ""  # a table or a gallery, already escaped


def write_report(splits: dict[str, Records], checks: CheckReport, folder: Path, title: str = "Dataset report") -> Path:
    """Write report.html and its pictures into `folder` (replaced whole, never left half written); its path."""
    folder = Path(folder)
    work = _work_folder(folder)
    try:
        sections = _sections(splits, checks, work)
        (work / "report.html").write_text(_page(title, splits, checks, sections), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        work.rename(folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return folder / "report.html"


def check_report_folder(folder: Path) -> None:
    """Raise a UserError naming `folder` now, before the checks' minutes, when no report can go there."""
    _work_folder(Path(folder)).rmdir()


def _work_folder(folder: Path) -> Path:
    """A new empty folder beside `folder`, to become it; a UserError when that cannot be."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"the report folder {folder} is a file: choose a new folder (it is replaced whole)")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        # Ending in .tmp, what a killed run leaves is swept up by the next run in the folder (training.folder_lock).
        return Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    except OSError as exc:
        raise UserError(f"cannot write the report into {folder}: {exc.strerror or exc}; choose a folder that can "
                        "be written") from None  # fmt: skip


def _sections(splits: dict[str, Records], checks: CheckReport, work: Path) -> list[Section]:
    import matplotlib

    matplotlib.use("Agg")
    (work / "figures").mkdir()
    classes = tuple(sorted({name for records in splits.values() for name in records.classes}))
    return [
        Section("Objects per class", "How many labelled objects each class has, per split.",
                (_class_counts(splits, classes, work),)),
        Section("Objects per image", "How many objects an image holds (images without any included).",
                (_objects_per_image(splits, work),)),
        Section("Box sizes", "Width, height and aspect ratio (width / height) of every box, in pixels and as a "
                "share of its image's side.", (_box_sizes(splits, work),)),
        Section("Where boxes are", "Box centres over all images, as a share of the image's width and height.",
                (_centres(splits, work),)),
        Section("Image sizes", "Width and height of every image.", (_image_sizes(splits, work),)),
        Section("Samples per class", f"Up to {SAMPLES} training images holding each class, every box drawn.",
                html=_samples(splits, classes, work)),
        *_finding_sections(splits, checks, work),
    ]  # fmt: skip


def _figure(fig, work: Path, name: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(work / "figures" / name, dpi=90)
    plt.close(fig)
    return f"figures/{name}"


def _class_counts(splits: dict[str, Records], classes: tuple[str, ...], work: Path) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(classes) + 2), 3.5))
    width = 0.8 / max(1, len(splits))
    for k, (name, records) in enumerate(splits.items()):
        counts = np.bincount(records.with_classes(classes).class_ids, minlength=len(classes)) if classes else []
        ax.bar(np.arange(len(classes)) + k * width, counts, width, label=f"{name} ({records.num_objects})")
    ax.set_xticks(np.arange(len(classes)) + width * (len(splits) - 1) / 2, classes, rotation=45, ha="right")
    ax.set_ylabel("objects")
    ax.legend()
    return _figure(fig, work, "objects_per_class.png")


def _objects_per_image(splits: dict[str, Records], work: Path) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    counts = {name: np.diff(records.offsets) for name, records in splits.items()}
    top = max((int(c.max()) for c in counts.values() if len(c)), default=0)
    bins = np.arange(top + 2) - 0.5
    for name, c in counts.items():
        ax.hist(c, bins=bins, alpha=0.6, label=name, density=True)
    ax.set_xlabel("objects in the image")
    ax.set_ylabel("share of images")
    ax.legend()
    return _figure(fig, work, "objects_per_image.png")


def _geometry(records: Records) -> dict[str, np.ndarray]:
    boxes = records.boxes.astype(np.float64)
    sizes = records.sizes[records.object_image()].astype(np.float64)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return {
        "width px": w, "height px": h, "width / image width": w / sizes[:, 0], "height / image height": h / sizes[:, 1],
        "aspect (w / h)": np.divide(w, h, out=np.zeros_like(w), where=h > 0),
        "cx": (boxes[:, 0] + w / 2) / sizes[:, 0], "cy": (boxes[:, 1] + h / 2) / sizes[:, 1],
    }  # fmt: skip


def _box_sizes(splits: dict[str, Records], work: Path) -> str:
    import matplotlib.pyplot as plt

    keys = ("width px", "height px", "width / image width", "height / image height", "aspect (w / h)")
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3))
    for name, records in splits.items():
        geometry = _geometry(records)
        for ax, key in zip(axes, keys, strict=True):
            values = geometry[key]
            if key.startswith("aspect"):
                values = np.log2(values[values > 0]) if len(values) else values
            ax.hist(values, bins=30, alpha=0.6, label=name)
    for ax, key in zip(axes, keys, strict=True):
        ax.set_xlabel("log2 " + key if key.startswith("aspect") else key)
    axes[0].set_ylabel("objects")
    axes[0].legend()
    return _figure(fig, work, "box_sizes.png")


def _centres(splits: dict[str, Records], work: Path) -> str:
    import matplotlib.pyplot as plt

    geometry = [_geometry(records) for records in splits.values()]
    cx = np.concatenate([g["cx"] for g in geometry])
    cy = np.concatenate([g["cy"] for g in geometry])
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    heat, _, _ = np.histogram2d(cy, cx, bins=20, range=[[0, 1], [0, 1]])
    shown = ax.imshow(heat, extent=(0, 1, 1, 0), cmap="viridis", aspect="auto")
    fig.colorbar(shown, ax=ax, label="objects")
    ax.set_xlabel("x / image width")
    ax.set_ylabel("y / image height")
    return _figure(fig, work, "box_centres.png")


def _image_sizes(splits: dict[str, Records], work: Path) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    for name, records in splits.items():
        sizes, counts = np.unique(records.sizes, axis=0, return_counts=True)
        ax.scatter(sizes[:, 0], sizes[:, 1], s=8 + 60 * counts / max(1, counts.max()), alpha=0.6, label=name)
    ax.set_xlabel("width px")
    ax.set_ylabel("height px")
    ax.legend()
    return _figure(fig, work, "image_sizes.png")


def _thumbnail(records: Records, i: int, work: Path, name: str, highlight: tuple | None = None) -> str | None:
    """Image i with its boxes drawn (the `highlight` box thick, in black and white), as a small JPEG."""
    from PIL import Image, ImageDraw, ImageOps

    record = records[i]
    try:
        with Image.open(record.path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except (OSError, ValueError):
        return None
    scale = THUMB_PX / max(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    draw = ImageDraw.Draw(image)
    for box, cls in zip(record.boxes, record.class_ids, strict=True):
        draw.rectangle([float(v) * scale for v in box], outline=COLOURS[int(cls) % len(COLOURS)], width=2)
    if highlight is not None:
        corners = [float(v) * scale for v in highlight]
        draw.rectangle(corners, outline="black", width=4)
        draw.rectangle(corners, outline="white", width=2)
    path = work / "thumbs" / name
    path.parent.mkdir(exist_ok=True)
    image.save(path, quality=85)
    return f"thumbs/{name}"


def _samples(splits: dict[str, Records], classes: tuple[str, ...], work: Path) -> str:
    records = next(iter(splits.values()))
    owner = records.object_image()
    rows = []
    for cls, name in enumerate(records.classes):
        images = list(dict.fromkeys(owner[records.class_ids == cls].tolist()))[:SAMPLES]
        cells = [_thumbnail(records, i, work, f"sample_{cls}_{k}.jpg") for k, i in enumerate(images)]
        gallery = "".join(_figure_html(c, str(records.image_urls[i])) for c, i in zip(cells, images, strict=True) if c)
        gallery = gallery or "<p>no image could be read</p>"
        rows.append(f"<h3>{html.escape(name)}</h3><div class=gallery>{gallery}</div>")
    return "".join(rows)


def _figure_html(picture: str, caption: str) -> str:
    return f'<figure><img src="{html.escape(picture)}" alt=""><figcaption>{html.escape(caption)}</figcaption></figure>'


def _finding_sections(splits: dict[str, Records], checks: CheckReport, work: Path) -> list[Section]:
    where = {(name, str(url)): (name, i) for name, r in splits.items() for i, url in enumerate(r.image_urls)}
    sections = []
    for check, count in checks.counts().items():
        findings = checks.of(check)
        rows = []
        for k, finding in enumerate(findings):
            picture = ""
            if k < FINDINGS_SHOWN and finding.image:
                split = finding.split.split("+")[0]
                if (split, finding.image) in where:
                    name, i = where[(split, finding.image)]
                    picture = _thumbnail(splits[name], i, work, f"{check}_{k}.jpg", finding.box) or ""
            rows.append(_finding_row(finding, picture))
        table = ("<table><tr><th>image</th><th>split</th><th>what</th><th>other</th><th>box</th></tr>"
                 + "".join(rows) + "</table>") if rows else ""  # fmt: skip
        sections.append(Section(f"Check: {check.replace('_', ' ')} ({count})", _CHECK_TEXT[check], html=table))
    return sections


def _finding_row(finding: Finding, picture: str) -> str:
    image = f'<img src="{html.escape(picture)}" alt=""><br>' if picture else ""
    box = ", ".join(f"{v:g}" for v in finding.box) if finding.box else ""
    cells = (f"{image}{html.escape(finding.image)}", finding.split, finding.detail, finding.other, box)
    return "<tr>" + "".join(f"<td>{c if k == 0 else html.escape(c)}</td>" for k, c in enumerate(cells)) + "</tr>"


_CHECK_TEXT = {
    "duplicate": "The same file content twice in one split: the model sees it twice as often.",
    "near_duplicate": "The same picture re-encoded or resized, in one split.",
    "leakage": "A validation image that is (nearly) a training image: its score measures memory, not skill.",
    "tiny_box": "Boxes a few pixels across: usually a click instead of a drag in the labelling tool.",
    "border_box": "Boxes touching the image's edge: cut-off objects (fine) or boxes dragged past the edge.",
    "double_label": "One object labelled twice with different classes: one of the two labels is wrong.",
    "rare_class": "Classes with very few training objects: the model will hardly learn them.",
}

_STYLE = """body{font-family:sans-serif;margin:2em;max-width:1400px}h2{border-bottom:1px solid #ccc}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:4px;vertical-align:top;font-size:90%}
.gallery{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0;font-size:80%}img{max-width:100%}"""


def _page(title: str, splits: dict[str, Records], checks: CheckReport, sections: list[Section]) -> str:
    counts = ", ".join(f"{name} {len(r)} images, {r.num_objects} objects" for name, r in splits.items())
    found = ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in checks.counts().items())
    body = [f"<h1>{html.escape(title)}</h1><p>{html.escape(counts)}</p><p>checks: {html.escape(found)}</p>"]
    for s in sections:
        figures = "".join(f'<img src="{html.escape(f)}" alt="{html.escape(s.title)}">' for f in s.figures)
        body.append(f"<h2>{html.escape(s.title)}</h2><p>{html.escape(s.text)}</p>{figures}{s.html}")
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>\n")  # fmt: skip

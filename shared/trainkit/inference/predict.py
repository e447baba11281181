"""`trainkit predict`: a trained model over an image set, written as label rows, AutoML JSON Lines and pictures.

The rows of `predictions.csv` are in the labelling API's own form, with each `image_url` pointing
back at its file under the image set (the same datastore-folder rules as training), so `trainkit
validate` and `train` read the file unchanged: a model pre-labels new images, people correct the
labels, the corrected set trains the next model. Batches come from trainkit's loader (DALI, on a
GPU when there is one); an image it cannot read is named and skipped.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainkit.atomic import write_bytes_atomic, write_json_atomic
from trainkit.classmap import ClassMap
from trainkit.errors import UserError
from trainkit.inference.predictor import NMS_OFF, BasePredictor, check_agnostic_nms, load_predictor
from trainkit.inference.sources import resolve_model
from trainkit.tasks import Detection, Prediction, Task

if TYPE_CHECKING:
    from trainkit.params import TileSpec

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
LOG_EVERY = 20  # batches between progress lines when stderr is not a terminal


@dataclass(frozen=True)
class PredictConfig:
    """What `trainkit predict` runs (built from its command line)."""

    model: str  # a run's output folder, its model/ folder, models:/... runs:/... URI, or an exported .onnx file
    imageset: Path
    output_dir: Path
    labelset: Path | None = None  # predict its rows' images; else every image file under the image set
    datastore_name: str | None = None  # None: found from the label set, or the image set itself without one
    min_score: float | None = None  # None: the model's own setting
    agnostic_nms: float = NMS_OFF  # < 1: one box per object whatever its classes (IoU above which boxes merge)
    draw: int = 10
    device: str = "auto"
    batch_size: int = 8
    tiles: Mapping[str, object] = field(default_factory=dict)  # --tile-* options (override_tiles' keys)
    rank: str | None = None  # "uncertainty": also write label_queue.csv (trainkit.inference.label_queue)
    top: int = 0  # label_queue.csv's length (0: every image)

    def check(self) -> None:
        """Reject settings that cannot work, before the model is loaded."""
        if not self.imageset.is_dir():
            raise UserError(f"--imageset {self.imageset}: not a folder; pass the folder the images are in")
        if self.min_score is not None and not 0 <= self.min_score <= 1:
            raise UserError(f"--min-score {self.min_score}: must be between 0 and 1")
        check_agnostic_nms(self.agnostic_nms)
        if self.batch_size < 1 or self.draw < 0 or self.top < 0:
            raise UserError("--batch-size must be at least 1, --draw and --top at least 0")


@dataclass(frozen=True)
class PredictSummary:
    """What a prediction run wrote and left out."""

    images: int
    objects: int
    skipped: dict[str, str]
    seconds: float
    files: list[Path]


def run_predict(config: PredictConfig) -> PredictSummary:
    """Predict every image, then write predictions.csv, predictions.jsonl, drawn/ and predict.json."""
    from trainkit.inference.devices import resolve_device

    config.check()
    device = resolve_device(config.device)
    predictor = open_model(config.model, device, config.tiles)
    records, skipped = image_records(config, predictor.classes)
    threshold = predictor.settings.min_score if config.min_score is None else config.min_score
    start = time.perf_counter()
    if config.rank:  # the ranking needs the doubtful detections below the threshold too
        from trainkit.inference.label_queue import LOW_SCORE

        ranked, loader_skipped = _predict_all(predictor, records, replace(config, min_score=min(threshold, LOW_SCORE)))
        answers = [(i, a.above(threshold)) for i, a in ranked]
    else:
        answers, loader_skipped = _predict_all(predictor, records, config)
    seconds = time.perf_counter() - start
    for path, reason in skipped.items():  # the loader warned of those it left out, once each
        log.warning("skipped %s: %s", path, reason)
    skipped.update(loader_skipped)
    files = _write(config, predictor, records, answers, skipped, seconds)
    if config.rank:
        files.append(_write_queue(config, predictor, records, ranked, threshold))
    objects = sum(len(a.labels) for _, a in answers)
    log.info("%d images predicted (%d skipped), %d objects, %.1f images/s", len(answers), len(skipped), objects,
             len(answers) / seconds if seconds else 0.0)  # fmt: skip
    return PredictSummary(len(answers), objects, skipped, seconds, files)


def open_model(spec: str, device, tiles: Mapping[str, object] | None = None) -> BasePredictor:
    """A predictor for `spec`: an exported .onnx file (onnxruntime, CPU), or a trainkit MLflow model;
    `tiles` changes its tiling (--tile-* options, see trainkit.params.override_tiles)."""
    if spec.endswith(".onnx") and Path(spec).is_file():
        from trainkit.inference.onnx_predictor import OnnxPredictor

        predictor: BasePredictor = OnnxPredictor(Path(spec))
    else:
        with tempfile.TemporaryDirectory(prefix="trainkit-model-") as scratch:
            predictor = load_predictor(resolve_model(spec, Path(scratch)), device)
    if tiles:
        predictor.with_tiles(checked_tiles(predictor, tiles, "--tile-"))
    return predictor


def checked_tiles(predictor: BasePredictor, options: Mapping[str, object], prefix: str) -> TileSpec | None:
    """The predictor's tiling changed by `options`, or a UserError naming the option (`prefix` + name)."""
    from trainkit.params import override_tiles

    if not predictor.task.tiles:
        raise UserError(f"{prefix}{next(iter(options))}: tiling is for detection models; this one is a "
                        f"{predictor.task.name} model")  # fmt: skip
    try:
        return override_tiles(predictor.tiles, options)
    except ValueError as exc:
        # The spec's messages name hyperparameters (tile_overlap); here the option given is named.
        message = re.sub(r"(hyperparameters? )?'?tile_(\w+)'?", lambda m: prefix + m[2], str(exc))
        raise UserError(message) from None


def image_records(config: PredictConfig, classes: ClassMap):
    """The images to predict as loader records, and {path: reason} for those that cannot be read."""
    from trainkit.data.records import Records

    if config.labelset is not None:
        return _labelled_records(config)
    from trainkit.data.images import ImageInfo, image_root, probe_images

    root = image_root(config.imageset, config.datastore_name or "")
    if not root.is_dir():
        raise UserError(f"--imageset {config.imageset} has no folder {config.datastore_name!r}; "
                        "set --datastore-name (DATASTORE_NAME) to the datastore folder, or to empty")  # fmt: skip
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))  # fmt: skip
    if not paths:
        raise UserError(f"--imageset {root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under it")
    found, sizes, skipped = [], [], {}
    for path, info in zip(paths, probe_images(paths), strict=True):
        if isinstance(info, ImageInfo):
            found.append(path)
            sizes.append((info.width, info.height))
        else:
            skipped[str(path)] = info.detail
    n = len(found)
    records = Records(
        paths=np.array([str(p) for p in found], dtype=object),
        image_urls=np.array([p.relative_to(root).as_posix() for p in found], dtype=object),
        sizes=np.array(sizes, np.int32).reshape(n, 2),
        offsets=np.zeros(n + 1, np.int64),
        boxes=np.zeros((0, 4), np.float32),
        class_ids=np.zeros(0, np.int64),
        confidences=np.zeros(0, np.float32),
        classes=classes.names,
    )
    return records, skipped


def _labelled_records(config: PredictConfig):
    records, _ = labelled_records(config.imageset, config.labelset, config.datastore_name)
    return records, {}


def labelled_records(imageset: Path, labelset: Path, datastore_name: str | None, min_confidence: float = 0.0):
    """The usable rows of a label set as records and the set's report; rows with problems are left
    out with a warning counting them, and a set with none left is a UserError."""
    from trainkit.data.dataset import DatasetOptions, DatasetPair, load_pair

    options = DatasetOptions(datastore_name=datastore_name, on_bad_row="skip", min_confidence=min_confidence)
    records, report = load_pair(DatasetPair(imageset, labelset), options)
    log.info("label set %s: %d images under %s (%s)", labelset, len(records), report.image_root,
             report.datastore_reason)  # fmt: skip
    if report.problems:
        log.warning("%d rows of %s left out: %s", sum(report.problems.values()), labelset,
                    ", ".join(f"{k} {v}" for k, v in sorted(report.problems.items())))  # fmt: skip
    if not len(records):
        raise UserError(f"--labelset {labelset}: none of its rows names a readable image under "
                        f"{report.image_root}; check --imageset and --datastore-name")  # fmt: skip
    return records, report


def batch_loader(predictor: BasePredictor, records, batch_size: int, task: Task | None = None):
    """trainkit's loader over `records` in evaluation mode, at the model's input size, on its device;
    unreadable files are skipped (and named by the loader). Its units are whole images (or their tiles)
    unless `task` says otherwise (an evaluation's units are the model's task's)."""
    from trainkit.batch import LoaderConfig
    from trainkit.loading.loader import create_loader

    config = LoaderConfig(batch_size=batch_size, image_size=predictor.settings.image_size, train=False,
                          task=task or Detection(), on_bad_row="skip", tiles=predictor.tiles)  # fmt: skip
    return create_loader(records, config, predictor.device)


def batch_answers(
    predictor: BasePredictor, batch, loader, min_score: float | None = None, agnostic_nms: float = NMS_OFF
) -> list[tuple[int, Prediction]]:
    """(unit, answer) for each unit (an image, or what the loader's task makes a unit) of a batch of
    `loader`, an image's windows merged when tiled."""
    from trainkit.geometry.tile_merge import run_starts

    indices = batch.indices.numpy()
    units = indices[run_starts(indices)]
    windows = getattr(batch, "windows", None)
    windows = windows.numpy() if windows is not None else None
    sizes = loader.config.task.unit_sizes(loader.records, units)
    answers = predictor.predict_batch(batch.images, sizes, min_score, agnostic_nms, windows, indices)
    return list(zip(units.tolist(), answers, strict=True))


def _predict_all(predictor: BasePredictor, records, config: PredictConfig):
    from tqdm import tqdm

    loader = batch_loader(predictor, records, config.batch_size)
    terminal = sys.stderr.isatty()
    bar = tqdm(total=len(records), unit="img", disable=not terminal, file=sys.stderr)
    answers: list[tuple[int, Prediction]] = []
    for n, batch in enumerate(loader, 1):
        found = batch_answers(predictor, batch, loader, config.min_score, config.agnostic_nms)
        answers += found
        bar.update(len(found))
        if not terminal and n % LOG_EVERY == 0:
            log.info("predicted %d of %d images", len(answers), len(records))
    bar.close()
    return answers, loader.skipped


def _write_queue(config: PredictConfig, predictor: BasePredictor, records, ranked, threshold: float) -> Path:
    """label_queue.csv: label-set rows of the most uncertain images, pre-labelled with what reaches the threshold."""
    import pandas as pd

    from trainkit.inference.label_queue import queue

    rows = [{**predictor.task.labelling_row(a.above(threshold), predictor.classes, str(records.image_urls[i])),
             "uncertainty": round(doubt, 4), "doubtful_sum": round(total, 4)}
            for i, a, (doubt, total) in queue(ranked, config.top)]  # fmt: skip
    columns = ["image_url", "label", "label_confidence", "uncertainty", "doubtful_sum"]
    path = write_bytes_atomic(config.output_dir / "label_queue.csv",
                              pd.DataFrame(rows, columns=columns).to_csv(index=False).encode("utf-8"))  # fmt: skip
    log.info("label queue: the %d most uncertain images, pre-labelled: %s", len(rows), path)
    return path


def _write(config: PredictConfig, predictor: BasePredictor, records, answers, skipped, seconds: float) -> list[Path]:
    import pandas as pd

    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    classes, task = predictor.classes, predictor.task
    rows = [task.labelling_row(a, classes, str(records.image_urls[i])) for i, a in answers]
    buffer = io.StringIO()
    pd.DataFrame(rows, columns=["image_url", "label", "label_confidence"]).to_csv(buffer, index=False)
    files = [write_bytes_atomic(out / "predictions.csv", buffer.getvalue().encode("utf-8"))]
    lines = "".join(json.dumps(task.jsonl_line(a, classes, str(records.image_urls[i]))) + "\n" for i, a in answers)
    files.append(write_bytes_atomic(out / "predictions.jsonl", lines.encode("utf-8")))
    if config.draw:
        files += task.draw_answers([(str(records.paths[i]), a) for i, a in answers[: config.draw]], classes,
                                   out / "drawn")  # fmt: skip
    summary = {
        "model": config.model,
        "images": len(answers),
        "objects": int(sum(len(a.labels) for _, a in answers)),
        "min_score": predictor.settings.min_score if config.min_score is None else config.min_score,
        "agnostic_nms": config.agnostic_nms,
        "seconds": round(seconds, 2),
        "skipped": skipped,
    }
    files.append(write_json_atomic(out / "predict.json", summary))
    return files

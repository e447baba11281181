"""The `trainkit` command: the fixed contract every trainkit image and venv runs.

`main(argv) -> int` maps every outcome to an exit code (see `contract.ExitCode`): user errors print
one line and exit 2, internal errors exit 1, and `--debug` adds the traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shutil
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from trainkit import __version__
from trainkit.contract import (
    ENV_DATA_REPORT,
    ENV_DATASTORE_NAME,
    ENV_LABEL_ISSUES,
    ENV_OUTPUT_DIR,
    ENV_TRAINER,
    ENV_VARS,
    EXIT_CODE_HELP,
    ExitCode,
)
from trainkit.data.class_names import CLASS_NAMES
from trainkit.data.formats import CONVERT_FORMATS
from trainkit.data.literal import DEFAULT_MAX_CELL_CHARS
from trainkit.errors import Stopped, UserError

log = logging.getLogger("trainkit")
FAILURE_FILE = "failure.txt"
DECODING_COMMANDS = ("train", "validate", "predict", "evaluate")  # the commands that run DALI's decoders


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line, with exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


MODEL_HELP = "a run's output folder, its model/ folder, models:/NAME/VERSION or runs:/RUN_ID/model"


def build_parser() -> argparse.ArgumentParser:
    """The full command-line interface; environment fallbacks are read here, at call time."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")

    parser = _Parser(prog="trainkit", description="Train models from labelled image sets, the same way everywhere.")
    parser.add_argument("--version", action="version", version=f"trainkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    validate = commands.add_parser(
        "validate",
        parents=[common],
        help="check a dataset without training",
        description="Check a dataset without training.",
    )
    _add_dataset_args(validate)
    validate.add_argument("--json", type=Path, metavar="FILE", help="also write the summary as JSON to FILE")
    validate.add_argument(
        "--image-size", type=int, default=512, metavar="PX",
        help="the trainer's image_size: objects' size there is reported (and a tile grid when many are small)",
    )  # fmt: skip
    validate.add_argument(
        "--duplicates", action="store_true",
        help="also read every image for exact and near duplicates, within a split and across train and "
        "validation (leakage)",
    )  # fmt: skip
    validate.add_argument(
        "--report", type=Path, metavar="DIR",
        help="write DIR/report.html (opens offline; its pictures beside it): charts of the classes, boxes and "
        "images, samples per class, and every check's findings drawn; reads every image (as --duplicates)",
    )  # fmt: skip
    validate.set_defaults(func=_cmd_validate)

    train = commands.add_parser(
        "train", parents=[common], help="train the image's model on a dataset", description="Train the image's model."
    )
    _add_dataset_args(train)
    train.add_argument(
        "--output-dir",
        type=Path,
        default=Path(os.environ.get(ENV_OUTPUT_DIR.name) or "outputs"),
        help=f"where model, checkpoints and metrics go (env {ENV_OUTPUT_DIR.name})",
    )
    train.add_argument("--params", type=Path, metavar="FILE", help="hyperparameters from a JSON object file")
    train.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="one hyperparameter, e.g. --set epochs=10 (repeatable; wins over --params)",
    )
    train.add_argument(
        "--trainer",
        default=os.environ.get(ENV_TRAINER.name, ""),
        help=f"trainer folder, *_trainer.py file or module (env {ENV_TRAINER.name})",
    )
    train.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where to train (auto: a GPU if torch sees one)",
    )
    train.add_argument(
        "--resume",
        choices=("never", "auto"),
        default="never",
        help="auto: continue from the last good checkpoint if there is one",
    )
    train.add_argument(
        "--checkpoint-dir", type=Path, metavar="DIR", help="where checkpoints go (default OUTPUT_DIR/checkpoints)"
    )
    train.add_argument(
        "--checkpoint-every", type=int, default=100, metavar="N", help="checkpoint every N steps (0: epoch ends only)"
    )
    train.add_argument("--log-every", type=int, default=10, metavar="N", help="log metrics every N steps")
    train.add_argument("--eval-every", type=int, default=1, metavar="N", help="evaluate every N epochs")
    train.add_argument(
        "--experiment",
        default=os.environ.get("MLFLOW_EXPERIMENT_NAME") or "trainkit",
        help="MLflow experiment (env MLFLOW_EXPERIMENT_NAME)",
    )
    train.add_argument(
        "--register-as", metavar="NAME", help="register the final model under NAME in the MLflow model registry"
    )
    train.add_argument(
        "--data-report", choices=("on", "off"),
        help="on (the default): the dataset report of `validate --report` in OUTPUT_DIR/data_report and the "
        f"MLflow run (env {ENV_DATA_REPORT.name})",
    )  # fmt: skip
    train.add_argument(
        "--label-issues", choices=("on", "off"),
        help="on (the default): at the end, the validation labels the model disagrees with, as `evaluate "
        f"--label-issues` ranks them, in OUTPUT_DIR/label_issues.csv and the MLflow run (env {ENV_LABEL_ISSUES.name})",
    )  # fmt: skip
    train.add_argument(
        "--folds", type=int, default=0, metavar="K",
        help="a label review of every image: K models, each trained on K-1 folds of the training (and validation) "
        "images and scoring the fold it did not learn, in OUTPUT_DIR/folds/; their label_issues.csv merged in "
        "OUTPUT_DIR/label_issues.csv (no model trained on all images)",
    )  # fmt: skip
    train.set_defaults(func=_cmd_train)

    from trainkit.submit.command import add_arguments as add_submit_arguments
    from trainkit.submit.command import run as run_submit

    submit = commands.add_parser(
        "submit",
        parents=[common],
        help="run a trainer's published image as AzureML jobs",
        description="Run a trainer's published image (pinned by digest) as AzureML SDK v2 command jobs: one per "
        "dataset pair and hyperparameter grid point.",
    )
    add_submit_arguments(submit)
    submit.set_defaults(func=run_submit)

    from trainkit.submit.deploy import add_arguments as add_deploy_arguments
    from trainkit.submit.deploy import run as run_deploy

    deploy = commands.add_parser(
        "deploy",
        parents=[common],
        help="serve a registered model from an AzureML online or batch endpoint",
        description="Serve a registered trainkit model from an AzureML managed online endpoint or a batch "
        "endpoint (no-code MLflow deployment); --dry-run writes and checks the YAML offline.",
    )
    add_deploy_arguments(deploy)
    deploy.set_defaults(func=run_deploy)

    demo = commands.add_parser(
        "demo-data",
        parents=[common],
        help="write a small synthetic dataset in the label-API format",
        description="Write a small synthetic dataset in the label-API format.",
    )
    demo.add_argument("dir", type=Path, help="folder to create")
    demo.add_argument("--images", type=int, default=24, help="number of images")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--force", action="store_true", help="replace DIR if it exists")
    demo.add_argument(
        "--kind", choices=("shapes", "scenes"), default="shapes",
        help="shapes: 320x240 images, a few large shapes; scenes: 1600x1200 images of 12-32 px shapes (for tiling)",
    )  # fmt: skip
    demo.add_argument(
        "--label-noise", type=float, default=0.0, metavar="F",
        help="corrupt a share F of the objects' labels (a quarter each: removed, class swapped, shifted by 40%% "
        "of their size, a spurious box added): labels.csv noisy, labels_clean.csv true, label_noise.csv the changes",
    )  # fmt: skip
    demo.set_defaults(func=_cmd_demo)

    weights = commands.add_parser(
        "weights",
        parents=[common],
        help="list torchvision's named weights, or bake them into the cache",
        description="Named pretrained weights (torchvision:NAME for a trainer's weights): list them, or download "
        "them into the torch hub cache (TORCH_HOME) with torchvision's hash checked. Training never downloads.",
    )
    weights_commands = weights.add_subparsers(dest="weights_command", required=True, parser_class=_Parser)
    listing = weights_commands.add_parser("list", help="every named weights, and whether the cache holds it")
    listing.add_argument("--present", action="store_true", help="only those in the cache")
    listing.add_argument("--json", action="store_true",
                         help="as JSON, with each baked Hugging Face checkpoint's commit and sha256s")  # fmt: skip
    listing.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    listing.set_defaults(func=_cmd_weights_list)
    fetch = weights_commands.add_parser("download", help="download weights into the cache (or --dir)")
    fetch.add_argument(
        "names", nargs="+", metavar="NAME",
        help="torchvision's name, e.g. FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1, the URL of a file "
        "named the torch.hub way (NAME-<sha256 prefix>.pth), or a Hugging Face checkpoint, hf:ORG/NAME@REVISION "
        "(its config, safetensors and preprocessor config, into HF_HOME; mirror: HF_ENDPOINT)",
    )  # fmt: skip
    fetch.add_argument("--dir", type=Path, help="folder to download into (default: the torch hub cache)")
    fetch.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    fetch.set_defaults(func=_cmd_weights_download)

    predict = commands.add_parser(
        "predict",
        parents=[common],
        help="run a trained model over an image set",
        description="Run a trained model over an image set: predictions.csv (label rows that validate and train "
        "read), predictions.jsonl (AutoML's JSON Lines), drawn/ and predict.json in --output-dir.",
    )
    _add_model_run_args(
        predict,
        labelset="predict the images of these rows (default: every image file)",
        min_score="leave out detections below X (default: the model's)",
        draw="draw the predictions on the first N images",
    )
    predict.add_argument(
        "--agnostic-nms", type=float, default=1.0, metavar="IOU",
        help="one box per object: of detections overlapping by more than IOU, whatever their classes, keep the "
        "best (e.g. 0.7; default 1: keep all)",
    )  # fmt: skip
    predict.add_argument(
        "--rank", choices=("uncertainty",),
        help="also write label_queue.csv: the images the model is least sure about first, its detections as "
        "pre-labels in the labelling API's format (what to label next)",
    )  # fmt: skip
    predict.add_argument("--top", type=int, default=0, metavar="N", help="--rank: the N most uncertain (0: all)")
    predict.set_defaults(func=_cmd_predict)

    evaluate = commands.add_parser(
        "evaluate",
        parents=[common],
        help="measure a trained model on a labelled set",
        description="Measure a trained model on a labelled set: mAP and per-class AP, precision-recall curves, "
        "precision and recall at the score threshold, a confusion matrix with background, the worst images "
        "drawn; metrics.json and PNGs in --output-dir, and the active MLflow run.",
    )
    _add_model_run_args(
        evaluate,
        labelset="the label set to measure against",
        labelled=True,
        min_score="score threshold for precision, recall, confusion (default: the model's)",
        draw="draw the N images with the most errors",
    )
    evaluate.add_argument(
        "--min-confidence",
        type=float,
        default=0.0,
        metavar="X",
        help="leave out objects labelled with confidence below X",
    )
    evaluate.add_argument(
        "--label-issues", action="store_true",
        help="rank the labels the model disagrees with (missing, spurious, swapped class, loose box): "
        "label_issues.csv in the labelling API's format, the worst --draw images drawn (use images the model "
        "did not train on)",
    )  # fmt: skip
    evaluate.set_defaults(func=_cmd_evaluate)

    export = commands.add_parser(
        "export",
        parents=[common],
        help="export a trained model for use outside Python (ONNX)",
        description="Export a trained model as ONNX with its post-processing (boxes, labels, scores; dynamic batch; "
        "opset 17), the class map and settings in its metadata; checked by onnx.checker.",
    )
    export.add_argument("--model", required=True, help=MODEL_HELP)
    export.add_argument("--format", choices=("onnx",), default="onnx", help="the export format")
    export.add_argument("--output", type=Path, required=True, metavar="FILE", help="the file to write, e.g. model.onnx")
    export.set_defaults(func=_cmd_export)

    serve = commands.add_parser(
        "serve", parents=[common], help="answer HTTP requests with a trained model (MLflow's scoring server)",
        description="Serve a trained model locally with MLflow's scoring server (POST /invocations, GET /ping), "
        "run by this Python whether or not its venv is activated; Ctrl-C or SIGTERM stops it.",
    )  # fmt: skip
    serve.add_argument("--model", required=True, help=MODEL_HELP)
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=5000, help="the port to listen on")
    serve.add_argument("--workers", type=int, default=1, metavar="N", help="server processes (each loads the model)")
    serve.set_defaults(func=_cmd_serve)

    convert = commands.add_parser(
        "convert", parents=[common], help="a label set in another format (csv, jsonl, coco, yolo)",
        description="Convert a label set between the labelling API's CSV, AzureML AutoML JSON Lines (with its "
        "MLTable), COCO and a YOLO folder, reading the image sizes from the image set.",
    )  # fmt: skip
    convert.add_argument("--labelset", type=Path, required=True, metavar="PATH", help="the label set to read")
    convert.add_argument("--imageset", type=Path, required=True, metavar="DIR", help="its image set (for sizes)")
    convert.add_argument("--to", choices=CONVERT_FORMATS, required=True, help="the format to write")
    convert.add_argument("--output", type=Path, required=True, metavar="PATH", help="the file (yolo: folder) to write")
    convert.add_argument("--datastore-name", default=os.environ.get(ENV_DATASTORE_NAME.name), metavar="NAME",
                         help="as for validate")  # fmt: skip
    convert.add_argument("--box-units", choices=("auto", "pixel", "relative"), default="auto", help="as for validate")
    convert.add_argument("--on-bad-row", choices=("error", "skip"), default="error", help="as for validate")
    convert.add_argument("--image-url-prefix", default="", metavar="P", help="as for validate")
    convert.set_defaults(func=_cmd_convert)

    report = commands.add_parser(
        "sweep-report",
        parents=[common],
        help="the runs of an MLflow experiment (a sweep's trials) as a table, best first",
        description="The runs of an MLflow experiment as a table, best first: their objective, state, best epoch "
        "and the hyperparameters that differ between them.",
    )
    report.add_argument("--experiment", required=True, help="the experiment (a sweep's, or local runs')")
    report.add_argument("--objective", default="best/value", help="the metric to rank by (default best/value)")
    report.add_argument("--tracking-uri", default="", help="the MLflow store (default MLFLOW_TRACKING_URI)")
    report.set_defaults(func=_cmd_sweep_report)

    contract = commands.add_parser(
        "contract", parents=[common], help="print the contract (arguments, environment, exit codes) as Markdown"
    )
    contract.set_defaults(func=_cmd_contract)
    return parser


def _add_model_run_args(
    p: argparse.ArgumentParser, *, labelset: str, min_score: str, draw: str, labelled: bool = False
) -> None:
    """What `predict` and `evaluate` share: the model, the images, where results go, how it runs."""
    p.add_argument("--model", required=True, help=MODEL_HELP + ", or an exported .onnx file")
    p.add_argument("--imageset", type=Path, required=True, metavar="DIR", help="the image set folder")
    p.add_argument("--labelset", type=Path, required=labelled, metavar="PATH", help=labelset)
    p.add_argument("--output-dir", type=Path, required=True, metavar="DIR", help="where results go")
    p.add_argument(
        "--datastore-name", default=os.environ.get(ENV_DATASTORE_NAME.name), metavar="NAME",
        help=f"folder between the image set and image_url (env {ENV_DATASTORE_NAME.name}); image_url is relative to it",
    )  # fmt: skip
    p.add_argument("--min-score", type=float, metavar="X", help=min_score)
    p.add_argument("--draw", type=int, default=10, metavar="N", help=draw)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the model runs")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="images per batch")
    g = p.add_argument_group("tiles", "small objects in large images: predict on overlapping windows (and the "
                             "whole image) and merge their boxes; default: as the model was trained")  # fmt: skip
    g.add_argument("--tile-grid", metavar="CxR", help="COLUMNSxROWS, e.g. 3x2; none: whole images only")
    g.add_argument("--tile-size", type=int, metavar="PX", help="square tiles of PX source pixels instead of a grid")
    g.add_argument("--tile-overlap", type=float, metavar="F", help="share of a tile neighbours overlap (0.25)")
    g.add_argument("--tile-nms", type=float, metavar="IOU", help="overlap above which boxes merge (0.25)")
    g.add_argument("--tile-merge", choices=("nms", "nmm"), help="class-wise NMS, or SAHI's merging (NMM)")
    g.add_argument("--tile-whole", choices=("yes", "no"), help="the whole image is a window too (yes)")


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("dataset")
    g.add_argument("--imageset", type=Path, metavar="DIR", help="the image set folder (the mount)")
    g.add_argument(
        "--labelset",
        type=Path,
        metavar="PATH",
        help="label file (CSV, Parquet, AutoML .jsonl, COCO .json), a folder of them, or an MLTable folder",
    )
    g.add_argument(
        "--train-set",
        action="append",
        default=[],
        metavar="LABELSET:IMAGESET[:DATASTORE]",
        help="a training pair (repeatable; with --imageset/--labelset too); DATASTORE overrides DATASTORE_NAME",
    )
    g.add_argument(
        "--test-set",
        action="append",
        default=[],
        metavar="LABELSET:IMAGESET[:DATASTORE]",
        help="a validation pair (repeatable)",
    )
    # The predecessor's spelling: one option, a list of pairs.
    g.add_argument("--train_sets", nargs="+", default=[], metavar="PAIR", help="as --train-set, several at once")
    g.add_argument("--test_sets", nargs="+", default=[], metavar="PAIR", help="as --test-set, several at once")
    g.add_argument(
        "--datastore-name",
        default=os.environ.get(ENV_DATASTORE_NAME.name),
        metavar="NAME",
        help=f"folder between the image set and image_url (env {ENV_DATASTORE_NAME.name}; empty: ML-studio layout; "
        "unset: found from where the images are)",
    )
    g.add_argument("--box-units", choices=("auto", "pixel", "relative"), default="auto", help="box coordinate units")
    g.add_argument(
        "--min-confidence", type=float, default=0.0, metavar="X", help="drop objects whose confidence is below X"
    )
    g.add_argument(
        "--on-bad-row", choices=("error", "skip"), default="error", help="stop at a bad row, or skip and count it"
    )
    g.add_argument("--val-labelset", type=Path, metavar="PATH", help="a separate validation label set")
    g.add_argument("--val-imageset", type=Path, metavar="DIR", help="its image set (default: --imageset)")
    g.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        metavar="F",
        help="hold out F of the images for validation",
    )
    g.add_argument("--split-seed", type=int, default=0, metavar="N", help="seed of the validation split")
    g.add_argument("--decode-check", action="store_true", help="decode every image fully instead of reading headers")
    g.add_argument(
        "--class-names", choices=CLASS_NAMES, default="error",
        help="class names that differ only in case: error (name them), fold-case (merge), exact (keep apart)",
    )  # fmt: skip
    g.add_argument(
        "--class-map", type=Path, metavar="FILE",
        help="fix the classes and their ids: a JSON list of names, {name: id}, or an earlier run's class_map.json "
        "or output folder; rows naming other classes are bad rows",
    )  # fmt: skip
    g.add_argument(
        "--image-url-prefix", default="", metavar="P",
        help="drop the leading folder(s) P from image_url URIs' paths (the image set is the datastore's folder P)",
    )  # fmt: skip
    g.add_argument(
        "--max-cell-chars",
        type=int,
        default=DEFAULT_MAX_CELL_CHARS,
        metavar="N",
        help="refuse label cells longer than N",
    )


def _cmd_validate(args: argparse.Namespace) -> int:
    from trainkit.atomic import write_json_atomic
    from trainkit.config import data_config_from_args
    from trainkit.data.checks import CheckOptions
    from trainkit.data.dataset import load_dataset
    from trainkit.data.report import dataset_checks, dataset_splits, summary_json, summary_text

    if args.image_size < 32:
        raise UserError(f"--image-size {args.image_size}: the trainer's image_size, at least 32 pixels")
    config = data_config_from_args(args)
    if args.report:
        from trainkit.data.visual_report import check_report_folder

        check_report_folder(args.report)
    dataset = load_dataset(config)
    checks = dataset_checks(dataset, CheckOptions(duplicates=args.duplicates or args.report is not None))
    print(summary_text(dataset, config.options.on_bad_row, args.image_size, checks))
    if args.json:
        write_json_atomic(args.json, summary_json(dataset, config.options.on_bad_row, args.image_size, checks))
    if args.report:
        from trainkit.data.visual_report import write_report

        print(f"report     {write_report(dataset_splits(dataset), checks, args.report)}")
    reason = dataset.usable(config.options.on_bad_row)
    if reason:
        raise UserError(reason)
    return ExitCode.OK


def _cmd_convert(args: argparse.Namespace) -> int:
    from trainkit.data.convert import convert
    from trainkit.data.dataset import DatasetOptions, DatasetPair

    datastore = None if args.datastore_name is None else args.datastore_name.strip().strip("/")
    options = DatasetOptions(datastore_name=datastore, box_units=args.box_units, on_bad_row=args.on_bad_row,
                             image_url_prefix=args.image_url_prefix.strip().strip("/"))  # fmt: skip
    done = convert(DatasetPair(args.imageset, args.labelset), options, args.to, args.output)
    for path in done.written:
        print(path)
    skipped = f", {done.skipped_rows} bad rows left out" if done.skipped_rows else ""
    log.info("%d images, %d objects written as %s%s", done.images, done.objects, args.to, skipped)
    return ExitCode.OK


def _cmd_train(args: argparse.Namespace) -> int:
    from trainkit.config import train_config_from_args
    from trainkit.data.dataset import load_dataset_strict
    from trainkit.params import parse_params
    from trainkit.training.discovery import load_trainer
    from trainkit.training.harness import run_training

    config = train_config_from_args(args)
    loaded = load_trainer(config.trainer)
    parse_params(loaded.trainer.Params, config.hyperparameters)  # bad hyperparameters fail before data is read
    dataset = load_dataset_strict(config.data)
    for report in dataset.reports:
        skipped = f"; {sum(report.problems.values())} bad rows skipped" if report.problems else ""
        log.info(
            "%s set: %d images under %s (%s), box units %s%s", report.name, report.usable_images, report.image_root,
            report.datastore_reason, report.box_units_reason, skipped,
        )  # fmt: skip
    log.info("%d classes; %s", len(dataset.class_map), dataset.split)
    if config.folds:
        from trainkit.training.folds import run_folds

        return run_folds(config, dataset, loaded)
    return run_training(config, dataset, loaded)


def _cmd_predict(args: argparse.Namespace) -> int:
    from trainkit.inference.predict import PredictConfig, run_predict

    config = PredictConfig(
        model=args.model, imageset=args.imageset, output_dir=args.output_dir, labelset=args.labelset,
        datastore_name=args.datastore_name, min_score=args.min_score, draw=args.draw, device=args.device,
        batch_size=args.batch_size, agnostic_nms=args.agnostic_nms, tiles=_tile_options(args), rank=args.rank,
        top=args.top,
    )  # fmt: skip
    summary = run_predict(config)
    print(f"{summary.images} images predicted, {summary.objects} objects, {len(summary.skipped)} skipped: "
          f"{config.output_dir / 'predictions.csv'}")  # fmt: skip
    return ExitCode.OK


def _tile_options(args: argparse.Namespace) -> dict[str, object]:
    """The --tile-* options given, as trainkit.params.override_tiles takes them."""
    names = ("grid", "size", "overlap", "nms", "merge", "whole")
    options = {name: getattr(args, f"tile_{name}") for name in names if getattr(args, f"tile_{name}") is not None}
    if "whole" in options:
        options["whole"] = options["whole"] == "yes"
    return options


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from trainkit.inference.evaluate import EvaluateConfig, run_evaluate

    config = EvaluateConfig(
        model=args.model, imageset=args.imageset, labelset=args.labelset, output_dir=args.output_dir,
        datastore_name=args.datastore_name, min_score=args.min_score, min_confidence=args.min_confidence,
        draw=args.draw, device=args.device, batch_size=args.batch_size, tiles=_tile_options(args),
        label_issues=args.label_issues,
    )  # fmt: skip
    metrics = run_evaluate(config)
    headline = ("map", "map_50", "map_75") if "map" in metrics else ("accuracy",)
    print(", ".join(f"{name} {metrics[name]:.3f}" for name in headline) + f": {config.output_dir / 'metrics.json'}")
    return ExitCode.OK


def _cmd_export(args: argparse.Namespace) -> int:
    import tempfile

    from trainkit.inference.onnx_export import export_onnx
    from trainkit.inference.predictor import load_predictor
    from trainkit.inference.sources import resolve_model

    with tempfile.TemporaryDirectory(prefix="trainkit-model-") as scratch:
        predictor = load_predictor(resolve_model(args.model, Path(scratch)), "cpu")
    print(export_onnx(predictor, args.output))
    return ExitCode.OK


def _cmd_serve(args: argparse.Namespace) -> int:
    from trainkit.inference.serve import ServeConfig, run_serve

    return run_serve(ServeConfig(args.model, args.host, args.port, args.workers))


def _cmd_sweep_report(args: argparse.Namespace) -> int:
    from trainkit.training.sweep_report import report_table, trial_rows

    rows = trial_rows(args.experiment, args.objective, args.tracking_uri)
    print(report_table(rows, args.objective))
    return ExitCode.OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from trainkit.data.demo import write_demo_dataset

    demo = write_demo_dataset(args.dir, images=args.images, seed=args.seed, force=args.force, kind=args.kind,
                              label_noise=args.label_noise)  # fmt: skip
    print(f"wrote {args.images} images and {demo.labels_csv}")
    print(f"  datastore layout: --imageset {demo.imageset_datastore} --datastore-name {demo.datastore_name}")
    print(f"  ML-studio layout: --imageset {demo.imageset_studio} --datastore-name ''")
    return ExitCode.OK


def _cmd_weights_list(args: argparse.Namespace) -> int:
    from trainkit.detection_archs import coco_weights_users
    from trainkit.hf_weights import baked_checkpoints
    from trainkit.weights import all_named_weights, cache_dir

    users = coco_weights_users()
    named = [(weights, weights.path().is_file()) for weights in all_named_weights()]
    named = [(weights, present) for weights, present in named if present or not args.present]
    hub = baked_checkpoints()
    if args.json:
        print(json.dumps({
            "cache": str(cache_dir()),
            "torchvision": [{"name": w.name, "file": w.path().name, "present": present} for w, present in named],
            "hf": hub,
        }, indent=1))  # fmt: skip
        return ExitCode.OK
    print(f"cache: {cache_dir()}")
    for weights, present in named:
        use = f"  (detector arch={users[weights.name]}: its weights=coco)" if weights.name in users else ""
        print(f"{'present' if present else '-':<8} {weights.name}{use}")
    for spec, record in hub.items():
        print(f"{'present':<8} {spec}  (commit {record.get('commit', '?')}; baked by `weights download`)")
    return ExitCode.OK


def _cmd_weights_download(args: argparse.Namespace) -> int:
    from trainkit.hf_weights import download_hub, is_hub, parse_hub
    from trainkit.weights import download, downloadable

    hub = [parse_hub(name) for name in args.names if is_hub(name)]  # every name is checked before any fetch
    known = [downloadable(name) for name in args.names if not is_hub(name)]
    if hub and args.dir:
        raise UserError("--dir is for torchvision's files; Hugging Face checkpoints go to the cache HF_HOME names")
    for weights in known:
        print(f"{weights.name}: {download(weights.name, args.dir)}")
    for checkpoint in hub:
        commit, digests = download_hub(checkpoint.spec)
        print(f"{checkpoint.spec} commit {commit}")
        for name, digest in digests.items():
            print(f"{checkpoint.spec} {name} sha256:{digest}")
    return ExitCode.OK


def contract_markdown(parser: argparse.ArgumentParser | None = None) -> str:
    """The contract as Markdown tables, generated from the parser itself so docs/command.md cannot drift."""
    parser = parser or build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    rows: dict[tuple[str, str, str], list[str]] = {}
    for name in ("validate", "train", "demo-data"):
        for action in subparsers.choices[name]._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            option = action.option_strings[0] if action.option_strings else action.dest.upper()
            rows.setdefault((option, _default_text(action), action.help or ""), []).append(name)
    lines = ["| option | commands | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{opt}` | {', '.join(cmds)} | {default} | {text} |" for (opt, default, text), cmds in rows.items()]
    lines += ["", "| environment variable | option | meaning |", "|---|---|---|"]
    lines += [f"| `{env.name}` | `{env.option}` | {env.help} |" for env in ENV_VARS]
    lines += ["", "| exit code | meaning |", "|---|---|"]
    lines += [f"| {int(code)} | {text} |" for code, text in EXIT_CODE_HELP.items()]
    return "\n".join(lines)


def _default_text(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if action.dest in {"datastore_name", "output_dir", "trainer", "experiment"}:
        return {
            "output_dir": "env, else `outputs`",
            "experiment": "env, else `trainkit`",
            "datastore_name": "env, else detected",
        }.get(action.dest, "env, else empty")
    if action.default is None or action.default is False or action.default == []:
        return ""
    return f"`{action.default}`"


def _cmd_contract(args: argparse.Namespace) -> int:
    print(contract_markdown())
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `trainkit` command; returns the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="trainkit: %(levelname)s: %(message)s",
        stream=sys.stderr,
        force=True,  # bind to the current stderr, also when main() runs more than once in a process
    )
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # its font-cache chatter is not ours to show
    if args.command == "train":
        # The training loop answers SIGTERM by checkpointing (trainkit.training.harness); before and
        # after it, SIGTERM stops the run at once, with the same exit code and failure file.
        signal.signal(signal.SIGTERM, _stop)
    if args.command in DECODING_COMMANDS:
        from trainkit.data.native_messages import installed

        with installed():  # the image decoders' own stderr lines stay out of trainkit's log
            code, reason = _run(args)
    else:
        code, reason = _run(args)
    if reason:
        print(f"trainkit: {reason}", file=sys.stderr)
    if args.command == "train":
        _record_outcome(args.output_dir, code, reason)
    return code


def _stop(signum: int, frame: object) -> None:
    raise Stopped("SIGTERM outside the training loop (while starting or saving)")


def _run(args: argparse.Namespace) -> tuple[int, str]:
    """Run the command: (exit code, the one-line reason for a non-zero exit, prefixed by its kind)."""
    try:
        code = int(args.func(args))
    except UserError as exc:
        if args.debug:
            traceback.print_exc()
        return ExitCode.BAD_INPUT, f"error: {_one_line(exc)}"
    except BrokenPipeError:
        # The reader of stdout left (`trainkit weights list | head`): what it wanted was written.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK, ""
    except PermissionError as exc:
        if args.debug:
            traceback.print_exc()
        return ExitCode.BAD_INPUT, (
            f"error: permission denied: {exc.filename}; make it readable (inputs) or writable (outputs) "
            f"for the user trainkit runs as (uid {os.getuid()})"
        )
    except Stopped as exc:
        return ExitCode.PREEMPTED, f"stopped: {exc}; rerun with --resume auto to continue from the last checkpoint"
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED, "interrupted"
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        full = _disk_full(exc)
        if full:
            return ExitCode.BAD_INPUT, f"error: {full}"
        return ExitCode.INTERNAL_ERROR, (
            f"internal error: {type(exc).__name__}: {_one_line(exc)} (rerun with --debug for the traceback)"
        )
    return code, ""  # a non-zero code returned (preemption) was explained by the command itself


def _disk_full(exc: BaseException) -> str | None:
    """The one-line cause when `exc`, or what it wraps (MLflow and SQLAlchemy wrap it), is a full disk:
    the environment's to fix, not a bug."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc).lower()
        if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "database or disk is full" in text:
            where = Path(getattr(exc, "filename", None) or ".")
            folder = next((p for p in [where, *where.parents] if p.is_dir()), Path("."))
            free = shutil.disk_usage(folder).free / 1e9
            return (f"no space left on the disk writing {where} ({free:.2f} GB free under {folder}); free some "
                    "space, or give --output-dir / --checkpoint-dir on a larger disk")  # fmt: skip
        exc = exc.__cause__ or exc.__context__
    return None


def _record_outcome(output_dir: Path, code: int, reason: str) -> None:
    """Write the reason for a non-zero exit to OUTPUT_DIR/failure.txt (as SageMaker's failure file), so
    the AzureML UI and `trainkit submit` users see why; a successful run removes a stale one."""
    from trainkit.atomic import write_bytes_atomic

    path = Path(output_dir) / FAILURE_FILE
    try:
        if code == ExitCode.OK:
            path.unlink(missing_ok=True)
            return
        if code == ExitCode.PREEMPTED and not reason:  # the loop stopped itself, checkpoint written
            reason = "preempted: stopped by SIGTERM after writing a checkpoint; run again with --resume auto"
        text = reason.removeprefix("error: ") or f"exit code {code}"
        write_bytes_atomic(path, (text + "\n").encode("utf-8"))
    except OSError as exc:  # the output folder itself may be what failed
        log.warning("cannot write %s: %s", path, exc.strerror)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())

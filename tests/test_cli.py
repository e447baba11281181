"""The contract end to end: exit codes and one-line messages for every kind of bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SmallSet, make_image, obj, write_labels

from trainkit.data.demo import DemoDataset

SKELETON = Path(__file__).resolve().parents[1] / "trainers" / "skeleton"


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.code == 2, result.err
    lines = [line for line in result.err.splitlines() if not line.startswith("trainkit: INFO")]
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def validate_args(s: SmallSet, *extra: object) -> list[object]:
    return ["validate", "--imageset", s.imageset, "--labelset", s.labels, *extra]


def test_validate_demo_in_both_layouts(run_cli, demo: DemoDataset, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    result = run_cli(
        "validate",
        "--imageset",
        demo.imageset_datastore,
        "--labelset",
        demo.labels_csv,
        "--json",
        summary,
        env={"DATASTORE_NAME": demo.datastore_name},
    )
    assert result.code == 0, result.err
    assert "result     usable" in result.out and "box units  auto -> pixel" in result.out
    data = json.loads(summary.read_text())
    assert data["usable"] and data["classes"] == ["circle", "square", "triangle"]
    assert data["sets"][0]["images_found"] == 12 and data["sets"][0]["images_missing"] == 0
    studio = run_cli("validate", "--imageset", demo.imageset_studio, "--labelset", demo.labels_csv)
    assert studio.code == 0, studio.err
    assert studio.out.split("\n", 3)[3] == result.out.split("\n", 3)[3]  # same findings after the paths


def test_datastore_flag_overrides_env(run_cli, demo: DemoDataset) -> None:
    result = run_cli(
        "validate",
        "--imageset",
        demo.imageset_studio,
        "--labelset",
        demo.labels_csv,
        "--datastore-name",
        "",
        env={"DATASTORE_NAME": "wrong"},
    )
    assert result.code == 0, result.err


def test_validate_reports_problems_and_skip_makes_it_usable(run_cli, small_set: SmallSet, tmp_path: Path) -> None:
    labels = write_labels(
        tmp_path / "l.csv",
        [
            {"image_url": "set/a.jpg", "label": [obj("cat", 1, 30, 2, 40)]},
            {"image_url": "set/nope.jpg", "label": [obj("cat", 1, 2, 3, 4)]},
        ],
    )
    args = ["validate", "--imageset", small_set.imageset, "--labelset", labels]
    strict = run_cli(*args)
    assert_one_line_error(strict, f"{labels} row 2, field 'image_url': image ", "does not exist", "--on-bad-row skip")
    assert "problems   image_missing 1" in strict.out and "NOT usable" in strict.out
    skipped = run_cli(*args, "--on-bad-row", "skip")
    assert skipped.code == 0 and "problems   image_missing 1" in skipped.out and "result     usable" in skipped.out


def _labels(rows):
    return lambda tmp: write_labels(tmp / "bad.csv", rows)


def _raw(text: str):
    def make(tmp: Path) -> Path:
        (tmp / "bad.csv").write_text(text)
        return tmp / "bad.csv"

    return make


BOX = "'bottomX': 1, 'topX': 2, 'bottomY': 3, 'topY': 4"

BAD_LABEL_SETS = [
    ("missing column", _raw("image_url,labels\nset/a.jpg,[]\n"), ["bad.csv: no column 'label'"]),
    (
        "label syntax",
        _raw(f"image_url,label\nset/a.jpg,\"[{{'type': 'a', {BOX}\"\n"),
        ["bad.csv row 1, field 'label'", "not a Python literal"],
    ),
    ("label empty", _raw("image_url,label\nset/a.jpg,\n"), ["row 1, field 'label': label is empty; write []"]),
    ("not a list", _raw("image_url,label\nset/a.jpg,5\n"), ["label is a int, expected a list of objects"]),
    ("no class", _raw(f'image_url,label\nset/a.jpg,"[{{{BOX}}}]"\n'), ["object 1 has neither 'type' nor 'label'"]),
    (
        "classes disagree",
        _raw(f"image_url,label\nset/a.jpg,\"[{{'type': 'a', 'label': 'b', {BOX}}}]\"\n"),
        ["'type' 'a' but 'label' 'b'"],
    ),
    (
        "missing coordinate",
        _raw("image_url,label\nset/a.jpg,\"[{'type': 'a', 'bottomX': 1}]\"\n"),
        ["object 1 has no 'topX'"],
    ),
    (
        "nan coordinate",
        _raw(f"image_url,label\nset/a.jpg,\"[{{'type': 'a', {BOX.replace('1', 'nan')}}}]\"\n"),
        ["'bottomX' is nan, expected a finite number"],
    ),
    (
        "confidence mismatch",
        _labels([{"image_url": "set/a.jpg", "label": [obj("a", 1, 2, 3, 4)], "label_confidence": [0.5, 0.4]}]),
        ["field 'label_confidence': label_confidence has 2 values but label has 1 objects"],
    ),
    (
        "confidence nan",
        _labels([{"image_url": "set/a.jpg", "label": [obj("a", 1, 2, 3, 4)], "label_confidence": [float("nan")]}]),
        ["label_confidence holds a value that is not a finite number"],
    ),
    ("escaping path", _labels([{"image_url": "../x.jpg", "label": []}]), ["field 'image_url'", "leaves the image set"]),
    ("absolute path", _labels([{"image_url": "/etc/x.jpg", "label": []}]), ["is absolute"]),
    ("missing image", _labels([{"image_url": "set/zz.jpg", "label": []}]), ["set/zz.jpg does not exist"]),
    (
        "duplicate image",
        _labels([{"image_url": "set/a.jpg", "label": []}, {"image_url": "set/a.jpg", "label": []}]),
        ["bad.csv row 2, field 'image_url'", "is also on", "bad.csv row 1"],
    ),
    ("nothing usable", _labels([{"image_url": "set/c.png", "label": []}]), ["no objects left in the training set"]),
    ("not a table", _raw("\x00\x01"), ["bad.csv"]),
]


@pytest.mark.parametrize(("case", "make", "fragments"), BAD_LABEL_SETS, ids=[c[0] for c in BAD_LABEL_SETS])
@pytest.mark.parametrize("command", ["validate", "train"])
def test_bad_label_sets_exit_2_with_one_line(
    run_cli, small_set: SmallSet, tmp_path: Path, command, case, make, fragments
) -> None:
    labels = make(tmp_path)
    result = (
        run_cli(
            command,
            "--imageset",
            small_set.imageset,
            "--labelset",
            labels,
            "--output-dir",
            tmp_path / "out",
            "--trainer",
            SKELETON,
        )
        if command == "train"
        else run_cli(command, "--imageset", small_set.imageset, "--labelset", labels)
    )
    assert_one_line_error(result, *fragments)


def test_oversized_cell(run_cli, small_set: SmallSet) -> None:
    result = run_cli(*validate_args(small_set, "--max-cell-chars", 20))
    assert_one_line_error(result, "row 1, field 'label'", "over the limit of 20")


def test_unreadable_image_needs_decode_check(run_cli, tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "imgs" / "t.jpg"
    path.parent.mkdir()
    Image.effect_noise((128, 128), 64).convert("RGB").save(path)
    path.write_bytes(path.read_bytes()[:-600])
    labels = write_labels(tmp_path / "l.csv", [{"image_url": "t.jpg", "label": [obj("a", 1, 20, 1, 20)]}])
    args = ["validate", "--imageset", tmp_path / "imgs", "--labelset", labels, "--val-fraction", 0]
    assert run_cli(*args).code == 0
    assert_one_line_error(run_cli(*args, "--decode-check"), "t.jpg cannot be read")


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--box-units", "inches"], ["trainkit validate: error: argument --box-units: invalid choice"]),
        (["--min-confidence", "2"], ["--min-confidence must be between 0 and 1"]),
        (["--val-fraction", "1"], ["--val-fraction must be at least 0 and below 1"]),
        (["--val-imageset", "x"], ["--val-imageset needs --val-labelset"]),
        (["--datastore-name", "nope"], ["has no folder 'nope'", "DATASTORE_NAME"]),
        (["--nonsense"], ["unrecognized arguments: --nonsense"]),
    ],
)
def test_bad_options(run_cli, small_set: SmallSet, extra, fragments) -> None:
    assert_one_line_error(run_cli(*validate_args(small_set, *extra)), *fragments)


def test_missing_dataset_options_are_one_line(run_cli, small_set: SmallSet) -> None:
    assert_one_line_error(run_cli("validate", "--labelset", small_set.labels), "give both --imageset and --labelset")
    assert_one_line_error(run_cli("validate"), "no training data: pass --imageset and --labelset, or --train-set")
    assert_one_line_error(
        run_cli("validate", "--train-set", "only-one-part"), "--train-set 'only-one-part': expected LABELSET:IMAGESET"
    )


def test_missing_label_set(run_cli, small_set: SmallSet, tmp_path: Path) -> None:
    result = run_cli("validate", "--imageset", small_set.imageset, "--labelset", tmp_path / "none.csv")
    assert_one_line_error(result, "none.csv does not exist")


def train_args(s: SmallSet, tmp_path: Path, *extra: object) -> list[object]:
    return [
        "train",
        "--imageset",
        s.imageset,
        "--labelset",
        s.labels,
        "--output-dir",
        tmp_path / "out",
        "--trainer",
        SKELETON,
        *extra,
    ]


@pytest.mark.parametrize(
    ("extra", "params", "fragments"),
    [
        (["--set", "epochs"], None, ["--set 'epochs': expected key=value"]),
        (["--set", "bad key=1"], None, ["'bad key' is not a hyperparameter name"]),
        (["--params", "PARAMS"], "[1, 2]", ["expected a JSON object"]),
        (["--params", "PARAMS"], "{nope", ["not valid JSON"]),
        (["--params", "MISSING"], None, ["cannot read it"]),
    ],
)
def test_bad_hyperparameters(run_cli, small_set: SmallSet, tmp_path: Path, extra, params, fragments) -> None:
    params_file = tmp_path / "params.json"
    if params is not None:
        params_file.write_text(params)
    extra = [
        str(params_file) if e == "PARAMS" else str(tmp_path / "missing.json") if e == "MISSING" else e for e in extra
    ]
    assert_one_line_error(run_cli(*train_args(small_set, tmp_path, *extra)), *fragments)


def test_hyperparameters_merge(small_set: SmallSet, tmp_path: Path) -> None:
    from trainkit.cli import build_parser
    from trainkit.config import train_config_from_args

    params = tmp_path / "p.json"
    params.write_text('{"epochs": 5, "lr": 0.1}')
    args = build_parser().parse_args(
        [
            str(a)
            for a in train_args(
                small_set,
                tmp_path,
                "--params",
                params,
                "--set",
                "epochs=2",
                "--set",
                "name=x y",
                "--set",
                "sizes=[1,2]",
            )
        ]
    )
    config = train_config_from_args(args)
    assert dict(config.hyperparameters) == {"epochs": 2, "lr": 0.1, "name": "x y", "sizes": [1, 2]}
    assert config.to_json()["data"]["train"][0]["labelset"] == str(small_set.labels)


def test_train_without_a_trainer_says_so(run_cli, small_set: SmallSet, tmp_path: Path) -> None:
    result = run_cli("train", "--imageset", small_set.imageset, "--labelset", small_set.labels)
    assert_one_line_error(result, "no trainer given: set TRAINKIT_TRAINER", "--trainer trainers/detector")


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ("nowhere/at_all.py", ["trainer file nowhere/at_all.py does not exist"]),
        ("no_such_module_x", ["is neither a trainer folder, a .py file nor an importable module"]),
        ("json", ["must define TRAINER"]),
    ],
)
def test_bad_trainer(run_cli, small_set: SmallSet, tmp_path: Path, spec: str, fragments) -> None:
    args = ["train", "--imageset", small_set.imageset, "--labelset", small_set.labels, "--trainer", spec]
    assert_one_line_error(run_cli(*args), *fragments)


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--set", "epoch=1"], ["unknown hyperparameter 'epoch' for this trainer; it accepts:", "epochs"]),
        (["--set", "epochs=two"], ["hyperparameter 'epochs' must be int, got 'two'"]),
        (["--set", "epochs=0"], ["hyperparameter 'epochs' = 0 is out of range"]),
        (["--set", "width=12"], ["hyperparameter 'width' must be a multiple of 8, got 12"]),
        (["--set", "norm=layer"], ["hyperparameter 'norm' must be one of group, batch, got 'layer'"]),
        (["--set", "amp=maybe"], ["hyperparameter 'amp' must be bool"]),
    ],
)
def test_bad_typed_hyperparameters(run_cli, small_set: SmallSet, tmp_path: Path, extra, fragments) -> None:
    assert_one_line_error(run_cli(*train_args(small_set, tmp_path, *extra)), *fragments)


def test_output_dir_env_fallback(small_set: SmallSet, tmp_path: Path, monkeypatch) -> None:
    from trainkit.cli import build_parser

    monkeypatch.setenv("TRAINKIT_OUTPUT_DIR", str(tmp_path / "env-out"))
    args = build_parser().parse_args(["train", "--imageset", "i", "--labelset", "l"])
    assert args.output_dir == tmp_path / "env-out"
    monkeypatch.delenv("TRAINKIT_OUTPUT_DIR")
    assert build_parser().parse_args(["train", "--imageset", "i", "--labelset", "l"]).output_dir == Path("outputs")


def test_internal_errors_exit_1_and_debug_shows_traceback(run_cli, small_set: SmallSet, monkeypatch) -> None:
    import trainkit.data.dataset

    def boom(*args, **kwargs):
        raise RuntimeError("kaput")

    monkeypatch.setattr(trainkit.data.dataset, "load_dataset", boom)
    result = run_cli(*validate_args(small_set))
    assert result.code == 1 and "internal error: RuntimeError: kaput (rerun with --debug" in result.err
    assert "Traceback" not in result.err
    debug = run_cli(*validate_args(small_set, "--debug"))
    assert debug.code == 1 and "Traceback" in debug.err


def test_demo_data_refuses_a_non_empty_folder(run_cli, tmp_path: Path) -> None:
    make_image(tmp_path / "d" / "keep.jpg")
    assert_one_line_error(run_cli("demo-data", tmp_path / "d"), "exists and is not empty; pass --force")
    assert (tmp_path / "d" / "keep.jpg").exists()
    assert run_cli("demo-data", tmp_path / "d", "--force", "--images", 3).code == 0
    assert not (tmp_path / "d" / "keep.jpg").exists()


def test_demo_labels_are_the_api_format(demo: DemoDataset) -> None:
    import ast

    import pandas as pd

    frame = pd.read_csv(demo.labels_csv, index_col=0)
    assert list(frame.columns[:3]) == ["image_url", "label", "label_confidence"]
    for label, confidence in zip(frame["label"], frame["label_confidence"], strict=True):
        objects = ast.literal_eval(label)
        assert all(list(o) == ["type", "bottomX", "topX", "bottomY", "topY"] for o in objects)
        assert len(ast.literal_eval(confidence)) == len(objects)
    assert (demo.imageset_datastore / demo.datastore_name / frame["image_url"].iloc[0]).is_file()
    assert (demo.imageset_studio / frame["image_url"].iloc[0]).is_file()


def test_console_script_exit_codes(small_set: SmallSet, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("trainkit")
    ok = subprocess.run(
        [exe, *map(str, validate_args(small_set, "--val-fraction", "0"))], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [exe, "validate", "--imageset", str(tmp_path), "--labelset", str(tmp_path / "x.csv")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_permission_denied_is_a_user_error(run_cli, small_set: SmallSet, tmp_path: Path, monkeypatch) -> None:
    import trainkit.data.dataset

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(small_set.imageset))

    monkeypatch.setattr(trainkit.data.dataset, "load_dataset", denied)
    result = run_cli(*validate_args(small_set))
    assert_one_line_error(result, f"permission denied: {small_set.imageset}", "for the user trainkit runs as (uid")


def test_demo_data_is_readable_by_others(demo: DemoDataset) -> None:
    assert demo.root.stat().st_mode & 0o005 == 0o005


def _second_set(tmp_path: Path) -> tuple[Path, Path]:
    """A pair in the datastore layout under folder 'ds2', with a class the demo does not have."""
    make_image(tmp_path / "imgs2" / "ds2" / "more" / "p.png", (80, 60))
    labels = write_labels(
        tmp_path / "more.csv",
        [{"image_url": "more/p.png", "label": [obj("pentagon", 5, 40, 5, 40)], "label_confidence": [0.9]}],
    )
    return labels, tmp_path / "imgs2"


@pytest.mark.parametrize("spelling", ["repeated", "predecessor"])
def test_several_pairs_one_class_map_reports_per_pair(run_cli, demo: DemoDataset, tmp_path: Path, spelling) -> None:
    labels2, images2 = _second_set(tmp_path)
    first = f"{demo.labels_csv}:{demo.imageset_datastore}:{demo.datastore_name}"
    second = f"{labels2}:{images2}"  # its datastore folder, ds2, is found
    test = f"{labels2}:{images2}:ds2"
    if spelling == "repeated":
        pairs = ["--train-set", first, "--train-set", second, "--test-set", test]
    else:
        pairs = ["--train_sets", first, second, "--test_sets", test]
    result = run_cli("validate", *pairs, "--json", tmp_path / "v.json")
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "v.json").read_text())
    sets = summary["sets"]
    assert [s["name"] for s in sets] == ["train 1", "train 2", "validation"]
    assert sets[0]["image_root"].endswith(demo.datastore_name) and sets[1]["image_root"].endswith("ds2")
    assert "found under datastore folder 'ds2'" in sets[1]["datastore_reason"]
    assert summary["classes"] == ["circle", "pentagon", "square", "triangle"]
    assert "[train 2]" in result.out and "[validation]" in result.out


@pytest.mark.parametrize(
    ("source", "fragments"),
    [
        ("import torch\nTRAINER = (\n", ["broken_trainer.py:2: syntax error:"]),
        ("import no_such_package_here\n", ["broken_trainer.py:1: ModuleNotFoundError", "no_such_package_here"]),
        ("X = 1\nraise RuntimeError('setup failed')\n", ["broken_trainer.py:2: RuntimeError: setup failed"]),
    ],
)
def test_a_trainer_that_does_not_import_is_one_line(run_cli, small_set: SmallSet, tmp_path: Path, source, fragments):
    (tmp_path / "broken_trainer.py").write_text(source)
    result = run_cli("train", "--trainer", tmp_path / "broken_trainer.py", "--imageset", small_set.imageset,
                     "--labelset", small_set.labels, "--output-dir", tmp_path / "out")  # fmt: skip
    assert_one_line_error(result, "trainer file", *fragments)


def test_resume_auto_refuses_when_no_checkpoint_is_readable(run_cli, demo: DemoDataset, tmp_path: Path) -> None:
    checkpoints = tmp_path / "out" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.pt").write_bytes(b"torn by a full disk")
    (checkpoints / "previous.pt").write_bytes(b"")
    result = run_cli("train", "--trainer", SKELETON, "--imageset", demo.imageset_studio,
                     "--labelset", demo.labels_csv, "--datastore-name", "", "--output-dir", tmp_path / "out",
                     "--resume", "auto", "--device", "cpu", "--set", "epochs=1")  # fmt: skip
    last = result.err.strip().splitlines()[-1]
    assert result.code == 2 and "Traceback" not in result.err, result.err
    for fragment in ("trainkit: error: --resume auto: no checkpoint in", "last.pt", "previous.pt", "move them away"):
        assert fragment in last, last
    assert (checkpoints / "last.pt").read_bytes() == b"torn by a full disk"  # nothing overwritten


def test_decode_check_names_files_that_train_through_the_cpu_fallback(run_cli, tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("plain.jpg", "quirk.jpg"):
        Image.effect_noise((64, 48), 40).convert("RGB").save(folder / name)
    data = (folder / "quirk.jpg").read_bytes()
    (folder / "quirk.jpg").write_bytes(data[:2] + b"\xff\x00" + data[2:])  # Pillow reads it, DALI does not
    rows = [{"image_url": n, "label": [obj("a", 1, 20, 1, 20)]} for n in ("plain.jpg", "quirk.jpg")]
    labels = write_labels(tmp_path / "l.csv", rows)
    args = ["validate", "--imageset", folder, "--labelset", labels, "--val-fraction", 0, "--decode-check"]
    result = run_cli(*args, "--json", tmp_path / "v.json")
    assert result.code == 0, result.err
    expected = "1 images train through the CPU fallback (DALI's decoder refuses them, Pillow reads them)"
    assert f"decoding   {expected}: {folder / 'quirk.jpg'}" in result.out
    assert json.loads((tmp_path / "v.json").read_text())["sets"][0]["decoded_on_cpu"] == [str(folder / "quirk.jpg")]


def test_a_full_disk_is_one_line_exit_2_even_wrapped(run_cli, monkeypatch, tmp_path: Path) -> None:
    import errno

    from trainkit.data import demo

    def full(root, **_):
        try:
            raise OSError(errno.ENOSPC, "No space left on device", str(root / "labels.csv"))
        except OSError as exc:  # as SQLAlchemy and MLflow wrap it
            raise RuntimeError("(sqlite3.OperationalError) could not write") from exc

    monkeypatch.setattr(demo, "write_demo_dataset", full)
    result = run_cli("demo-data", tmp_path / "d")
    assert_one_line_error(result, f"no space left on the disk writing {tmp_path / 'd' / 'labels.csv'}", "GB free under")

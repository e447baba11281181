"""A trained model, used: the MLflow model's two flavours, the pyfunc endpoints serve, `trainkit predict`.

Most tests use the BrightBox trainer (tests/trainers), whose model boxes the bright pixels exactly,
so where a predicted box lands in the original image can be checked to the pixel.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
from ast import literal_eval
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import vm
from PIL import Image
from trained import assert_same_answer, built_model_dir, sample_images

from trainkit.classmap import ClassMap
from trainkit.inference.label_issues import REVIEW_FLOOR as FLOOR
from trainkit.inference.package import build_model_dir
from trainkit.inference.settings import ModelSettings
from trainkit.params import parse_params
from trainkit.training.discovery import load_trainer

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BRIGHTBOX = Path(__file__).resolve().parent / "trainers" / "brightbox_trainer.py"
CLASSES = ClassMap(("lamp", "window"))
RECT = (40, 30, 120, 90)  # x0, y0, x1, y1 of the bright rectangle in a 200 x 150 image


def picture(rect: tuple[int, int, int, int] | None = RECT, size: tuple[int, int] = (200, 150)) -> Image.Image:
    image = Image.new("RGB", size, (20, 30, 40))
    if rect is not None:
        image.paste((250, 250, 250), rect)
    return image


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    loaded = load_trainer(str(BRIGHTBOX))
    params = parse_params(loaded.trainer.Params, {})
    settings = ModelSettings.of(loaded.trainer, loaded.module.__name__, params)
    model = loaded.trainer.build_model(params, CLASSES)
    return build_model_dir(tmp_path_factory.mktemp("model") / "model", model, settings, CLASSES, loaded.source)


def expected_box(rect: tuple[int, int, int, int] = RECT, size: tuple[int, int] = (200, 150)) -> np.ndarray:
    return np.array(rect, np.float32)


def test_the_model_folder_has_both_flavours_and_what_endpoints_need(model_dir: Path) -> None:
    from mlflow.models import Model

    model = Model.load(str(model_dir / "MLmodel"))
    assert set(model.flavors) == {"python_function", "pytorch"}
    assert json.loads(model.signature.to_dict()["params"])[0]["name"] == "min_score"
    assert (model_dir / "input_example.json").is_file() and (model_dir / "serving_input_example.json").is_file()
    assert (model_dir / "code" / "trainkit" / "inference" / "pyfunc.py").is_file()
    assert (model_dir / "code" / "brightbox_trainer.py").is_file()
    assert not list(model_dir.rglob("__pycache__"))
    settings = json.loads((model_dir / "artifacts" / "settings.json").read_text())
    assert settings["schema"] == "trainkit.model/v1" and settings["image_size"] == 64
    requirements = (model_dir / "requirements.txt").read_text()
    assert "torch==" in requirements and "+cu" not in requirements


def test_a_fresh_process_loads_the_pyfunc_and_answers_as_automl(model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "photo.png").write_bytes(encoded(picture()))
    code = f"""
import base64, json, mlflow.pyfunc, pandas as pd, torch, mlflow.pytorch
model = mlflow.pyfunc.load_model({str(model_dir)!r})
data = open({str(tmp_path / "photo.png")!r}, 'rb').read()
frame = pd.DataFrame({{"image": [base64.b64encode(data).decode()]}})
answer = model.predict(frame).to_dict("records")
module = mlflow.pytorch.load_model({str(model_dir)!r})
print(json.dumps({{"answer": answer, "module": type(module).__name__}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["module"] == "BrightBox"
    [row] = out["answer"]
    [box] = row["boxes"]
    assert box["label"] == "lamp" and box["score"] == 0.9 and row["filename"] == "0"
    corners = [box["box"][k] for k in ("topX", "topY", "bottomX", "bottomY")]
    # Resized to 64 px and back: within a resized pixel of the rectangle (200/64 = 3.1 px across).
    assert np.allclose(corners, [40 / 200, 30 / 150, 120 / 200, 90 / 150], atol=3.2 / 150)


def test_the_pyfunc_takes_bytes_paths_arrays_and_min_score(model_dir: Path, tmp_path: Path) -> None:
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model(str(model_dir))
    path = tmp_path / "photo.jpg"
    picture().save(path, quality=95)
    array = np.asarray(picture())
    for given in ([encoded(picture())], [str(path)], pd.DataFrame({"image": [str(path)]}), array, array[None]):
        [row] = model.predict(given).to_dict("records")
        assert len(row["boxes"]) == 1, type(given)
    assert model.predict([str(path)]).iloc[0]["filename"] == str(path)
    assert model.predict([str(path)], params={"min_score": 0.95}).iloc[0]["boxes"] == []
    assert model.predict([encoded(picture(rect=None))]).iloc[0]["boxes"] == []
    with pytest.raises(MlflowException, match=r"image 1 \(1\): neither an existing file path nor base64"):
        model.predict(pd.DataFrame({"image": [base64.b64encode(encoded(picture())).decode(), "not an image"]}))
    assert len(model.predict([str(path)], params={"agnostic_nms": 0.5}).iloc[0]["boxes"]) == 1
    with pytest.raises(MlflowException, match=r"parameter agnostic_nms: agnostic_nms 2.0: must be an IoU"):
        model.predict([str(path)], params={"agnostic_nms": 2.0})


class _TwoClassesOnOneObject:
    """A detector's raw answer: one object taken for both classes (IoU 0.85 between the boxes), and a
    second object far away."""

    @staticmethod
    def outputs() -> dict[str, np.ndarray]:
        boxes = np.array([[10, 10, 60, 60], [12, 12, 62, 58], [100, 100, 140, 130]], np.float32)
        return {"boxes": boxes, "labels": np.array([0, 1, 1]), "scores": np.array([0.9, 0.7, 0.8], np.float32)}


def test_agnostic_nms_keeps_one_box_per_object_whatever_its_classes() -> None:
    from trainkit.inference.predictor import BasePredictor
    from trainkit.inference.settings import ModelSettings

    class Fixed(BasePredictor):
        classes = CLASSES
        settings = ModelSettings("t", "t", "detection", 200, (0.0,) * 3, (1.0,) * 3)
        device = __import__("torch").device("cpu")

        def run(self, images, sizes):
            return [_TwoClassesOnOneObject.outputs() for _ in range(len(images))]

    image = np.zeros((200, 200, 3), np.uint8)
    [both] = Fixed().predict([image], 0.5)
    assert both.labels.tolist() == [0, 1, 1]
    [one] = Fixed().predict([image], 0.5, agnostic_nms=0.7)
    assert one.labels.tolist() == [0, 1] and one.scores.tolist() == pytest.approx([0.9, 0.8])
    assert one.boxes[1].tolist() == [100, 100, 140, 130]
    [kept] = Fixed().predict([image], 0.5, agnostic_nms=0.9)  # overlapping less than that: both stay
    assert len(kept.labels) == 3


@pytest.mark.slow
def test_trainkit_serve_answers_real_requests_without_the_venv_on_path(model_dir: Path, tmp_path: Path) -> None:
    """`trainkit serve` runs MLflow's scoring server with its own interpreter: PATH without the venv's
    bin/ (a venv that is not activated) is enough. It prints the URL and an example request that
    works, answers a bad image with 400, and stops cleanly on SIGTERM."""
    import signal
    import urllib.error
    import urllib.request

    port = vm.free_port()
    log = tmp_path / "serve.log"
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p).resolve() != BIN.resolve())
    with log.open("w") as sink:
        server = subprocess.Popen(
            [str(BIN / "trainkit"), "serve", "--model", str(model_dir.parent), "--port", str(port)],
            stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "PATH": path},
        )  # fmt: skip
    try:
        vm.wait_for_port(port, server, 180, log)
        deadline = time.monotonic() + 180
        while "example request" not in log.read_text() and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)

        def post(body: dict | bytes) -> tuple[int, dict]:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data,
                                             {"Content-Type": "application/json"})  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        image = base64.b64encode(encoded(picture())).decode()
        status, answer = post({"dataframe_split": {"columns": ["image"], "data": [[image]]}})
        assert status == 200, answer
        [row] = answer["predictions"]
        assert row["boxes"][0]["label"] == "lamp" and row["boxes"][0]["box"]["topX"] == pytest.approx(0.2, abs=0.02)
        status, answer = post({"dataframe_split": {"columns": ["image"], "data": [["bm90IGFuIGltYWdl"]]}})
        assert status == 400 and "image 0 (0): not a decodable image" in answer["message"]
        # The printed example is a request the server answers.
        printed = log.read_text()
        assert f"http://127.0.0.1:{port}/invocations" in printed, printed
        example = printed.split("example request:", 1)[1].split("-d '", 1)[1].split("'", 1)[0]
        status, answer = post(example.encode())
        assert status == 200 and len(answer["predictions"]) == 1 and "boxes" in answer["predictions"][0], answer
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0, log.read_text()[-2000:]
        assert "stopped by SIGTERM" in log.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
    with socket.create_server(("127.0.0.1", port)):  # the server and its workers are gone: the port is free
        pass


def test_trainkit_serve_refuses_a_port_in_use(model_dir: Path, run_cli) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = run_cli("serve", "--model", model_dir, "--port", port)
    assert result.code == 2 and f"cannot listen on 127.0.0.1:{port}" in result.err, result.err


def test_predict_writes_label_rows_that_validate_jsonl_and_pictures(model_dir: Path, run_cli, tmp_path: Path) -> None:
    images = tmp_path / "imageset" / "main_datastore"
    (images / "day").mkdir(parents=True)
    picture().save(images / "day" / "a.png")
    picture((10, 10, 60, 40), (120, 80)).save(images / "day" / "b.jpg", quality=95)
    picture(None).save(images / "night.png")
    (images / "broken.jpg").write_bytes(b"")
    out = tmp_path / "out"
    result = run_cli("predict", "--model", model_dir.parent, "--imageset", tmp_path / "imageset",
                     "--datastore-name", "main_datastore", "--output-dir", out, "--draw", "2")  # fmt: skip
    assert result.code == 0, result.err
    assert "3 images predicted, 2 objects, 1 skipped" in result.out
    rows = pd.read_csv(out / "predictions.csv")
    assert rows.image_url.tolist() == ["day/a.png", "day/b.jpg", "night.png"]
    first = eval(rows.label[0])[0]  # the labelling API's Python literal
    assert first["type"] == "lamp" and abs(first["bottomX"] - 40) <= 3.2 and abs(first["topY"] - 90) <= 3.2
    assert rows.label[2] == "[]"
    summary = json.loads((out / "predict.json").read_text())
    assert list(summary["skipped"]) == [str(images / "broken.jpg")]
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert lines[1]["image_details"] == {"width": 120, "height": 80} and lines[1]["label"][0]["topX"] > 0.05
    assert sorted(p.name for p in (out / "drawn").iterdir()) == ["pred_00.png", "pred_01.png"]
    # The predictions are a label set: validate reads them unchanged, with the same image set.
    checked = run_cli("validate", "--imageset", tmp_path / "imageset", "--labelset", out / "predictions.csv",
                      "--datastore-name", "main_datastore", "--val-fraction", "0")  # fmt: skip
    assert checked.code == 0, checked.err + checked.out
    again = run_cli("predict", "--model", model_dir, "--imageset", tmp_path / "imageset", "--labelset",
                    out / "predictions.csv", "--output-dir", tmp_path / "again", "--draw", "0")  # fmt: skip
    assert again.code == 0, again.err
    assert pd.read_csv(tmp_path / "again" / "predictions.csv").image_url.tolist() == rows.image_url.tolist()


def test_predict_names_what_is_wrong_in_one_line(model_dir: Path, run_cli, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    cases = [
        (["--model", tmp_path, "--imageset", tmp_path / "empty"], "holds no MLflow model"),
        (["--model", tmp_path / "nowhere", "--imageset", tmp_path / "empty"], "no such folder"),
        (["--model", model_dir, "--imageset", tmp_path / "empty"], "no image files"),
        (["--model", model_dir, "--imageset", tmp_path / "empty", "--min-score", "2"], "between 0 and 1"),
        (["--model", model_dir, "--imageset", tmp_path / "empty", "--agnostic-nms", "1.5"], "--agnostic-nms 1.5: must"),
    ]
    for args, message in cases:
        result = run_cli("predict", *args, "--output-dir", tmp_path / "out")
        lines = result.err.strip().splitlines()
        assert result.code == 2 and message in lines[-1] and lines[-1].startswith("trainkit: error:"), result.err


PARITY_CLASSES = ClassMap(("circle", "square", "triangle"))
CUT = 0.5  # answers are compared above it, with trained.assert_same_answer's margin


def _fewer_rois(model) -> None:
    """Faster R-CNN R50 v2's box head is four convolutions per RoI: sample 16 RoIs, not 512, to train in time."""
    model.roi_heads.fg_bg_sampler.batch_size_per_image = 16
    model.rpn._pre_nms_top_n, model.rpn._post_nms_top_n = (
        {"training": 300, "testing": 300},
        {"training": 100, "testing": 100},
    )


def _detector(arch: str, size: int, lr: float, steps: int, adjust=None):
    """A parity case of the detector's `arch`, from scratch: the steps that make it sure take up to a minute."""
    overrides = {"arch": arch, "image_size": size, "weights": "", "lr": lr}
    return pytest.param("detector", overrides, steps, adjust, marks=pytest.mark.slow, id=f"detector-{arch}")


@pytest.mark.parametrize(
    ("trainer", "overrides", "steps", "adjust"),
    [
        ("skeleton", {"image_size": 128}, 60, None),
        ("classifier", {"image_size": 64, "arch": "mobilenet_v3_small"}, 40, None),
        _detector("fasterrcnn_mobilenet_v3_large_fpn", 64, 0.02, 200),
        _detector("fasterrcnn_resnet50_fpn_v2", 64, 0.02, 60, _fewer_rois),
        # RetinaNet's smallest anchors are 32 px: at 64 px the scenes' objects match none
        _detector("retinanet_resnet50_fpn_v2", 96, 0.01, 80),
        _detector("fcos_resnet50_fpn", 64, 0.01, 100),
        _detector("ssdlite320_mobilenet_v3_large", 64, 0.02, 100),
    ],
)
def test_onnx_export_answers_as_the_torch_model_does(
    trainer: str, overrides: dict, steps: int, adjust, tmp_path: Path
) -> None:
    import onnx

    from trainkit.inference.onnx_export import export_onnx
    from trainkit.inference.onnx_predictor import OnnxPredictor
    from trainkit.inference.predictor import load_predictor

    folder = built_model_dir(ROOT / "trainers" / trainer, tmp_path / "model", overrides, PARITY_CLASSES, steps, adjust)
    predictor = load_predictor(folder)
    path = export_onnx(predictor, tmp_path / "model.onnx")
    model = onnx.load(str(path))
    assert model.opset_import[0].version >= 17
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert {p.key for p in model.metadata_props} == {"trainkit.settings", "trainkit.classes"}
    exported = OnnxPredictor(path)
    assert exported.classes == PARITY_CLASSES and exported.settings == predictor.settings
    images = sample_images(predictor.trainer, overrides["image_size"])
    compared = 0
    for batch in (images[:1], images):  # the batch is dynamic
        floor = CUT - 0.05
        expected, got = predictor.predict(batch, floor), exported.predict(batch, floor)
        compared += sum(assert_same_answer(e, g, CUT) for e, g in zip(expected, got, strict=True))
    # The trained model is sure of most of what it sees: the comparison is never empty.
    assert compared >= len(images), compared


def _from_row(row: pd.Series):
    """A predictions.csv row (the labelling API's pixel dicts) back as a Prediction, to compare as one."""
    from trainkit.inference.predictor import Prediction

    objects, scores = eval(row.label), eval(row.label_confidence)
    boxes = np.array([[o["bottomX"], o["bottomY"], o["topX"], o["topY"]] for o in objects], np.float32).reshape(-1, 4)
    labels = np.array([PARITY_CLASSES.names.index(o["type"]) for o in objects], np.int64)
    return Prediction(0, 0, boxes, labels, np.array(scores, np.float32))


def test_export_and_predict_with_the_onnx_file(run_cli, tmp_path: Path) -> None:
    folder = built_model_dir(
        ROOT / "trainers" / "skeleton", tmp_path / "run" / "model", {"image_size": 96}, PARITY_CLASSES, 60
    )
    result = run_cli("export", "--model", folder.parent, "--output", tmp_path / "model.onnx")
    assert result.code == 0, result.err
    images = tmp_path / "images"
    images.mkdir()
    for seed, image in enumerate(sample_images(load_trainer(str(ROOT / "trainers" / "skeleton")).trainer, 96)):
        Image.fromarray(image).save(images / f"scene{seed}.png")
    # Rows above the cut-off, with a margin either side: near it, either runtime may keep a box the other drops.
    common = ["--imageset", images, "--datastore-name", "", "--draw", "0", "--min-score", str(CUT - 0.05)]
    torch_run = run_cli("predict", "--model", folder, "--output-dir", tmp_path / "torch", *common)
    onnx_run = run_cli("predict", "--model", tmp_path / "model.onnx", "--output-dir", tmp_path / "onnx", *common)
    assert torch_run.code == 0 and onnx_run.code == 0, torch_run.err + onnx_run.err
    by_torch = pd.read_csv(tmp_path / "torch" / "predictions.csv")
    by_onnx = pd.read_csv(tmp_path / "onnx" / "predictions.csv")
    assert by_torch.image_url.tolist() == by_onnx.image_url.tolist()
    compared = sum(assert_same_answer(_from_row(a), _from_row(b), CUT) for (_, a), (_, b) in
                   zip(by_torch.iterrows(), by_onnx.iterrows(), strict=True))  # fmt: skip
    assert compared >= len(by_torch), compared
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    refused = run_cli("predict", "--model", broken, "--output-dir", tmp_path / "x", *common)
    assert refused.code == 2 and "not a loadable ONNX model" in refused.err


def test_evaluate_counts_hits_misses_false_detections_and_wrong_classes(model_dir: Path, run_cli, tmp_path) -> None:
    import mlflow

    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for name, rect, labels in [
        ("hit.png", RECT, [("lamp", RECT)]),
        ("wrong_class.png", (10, 10, 60, 40), [("window", (10, 10, 60, 40))]),
        ("missed.png", None, [("lamp", (50, 50, 100, 100))]),
        ("false.png", RECT, []),
        ("unknown.png", None, [("door", (5, 5, 50, 50))]),
    ]:
        picture(rect).save(images / name)
        objects = [{"type": t, "bottomX": x0, "topX": x1, "bottomY": y0, "topY": y1} for t, (x0, y0, x1, y1) in labels]
        rows.append({"image_url": name, "label": objects, "label_confidence": [1.0] * len(objects)})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "out"
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.set_experiment("evaluate")  # this store's, not one an earlier test left active
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        result = run_cli("evaluate", "--model", model_dir, "--imageset", images, "--labelset", tmp_path / "labels.csv",
                         "--datastore-name", "", "--output-dir", out)  # fmt: skip
    mlflow.set_tracking_uri("")
    assert result.code == 0, result.err
    assert "classes the model does not know: door" in result.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["confusion_matrix"] == {
        "labels": ["lamp", "window", "background"],
        "rows_truth_columns_predicted": [[1, 0, 1], [1, 0, 0], [1, 0, 0]],
    }
    assert metrics["precision_class/lamp"] == pytest.approx(1 / 3) and metrics["recall_class/lamp"] == 0.5
    assert metrics["recall_class/window"] == 0.0
    assert (metrics["missed_objects"], metrics["false_detections"]) == (2, 2)
    assert 0 < metrics["map_50"] < 1 and metrics["unknown_classes"] == ["door"]
    assert {p.name for p in out.iterdir()} == {"metrics.json", "pr_curves.png", "confusion_matrix.png", "worst"}
    assert len(list((out / "worst").iterdir())) == 3
    logged = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run.info.run_id)
    assert logged.data.metrics["eval/map_50"] == pytest.approx(metrics["map_50"])


def test_evaluate_names_an_image_it_cannot_decode_once(model_dir: Path, run_cli, tmp_path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    picture().save(images / "good.png")
    whole = encoded(picture(), "JPEG")
    (images / "cut.jpg").write_bytes(whole[: len(whole) // 2])  # its header reads; its pixels do not decode
    rows = [{"image_url": name, "label": [{"type": "lamp", "bottomX": 40, "topX": 120, "bottomY": 30, "topY": 90}],
             "label_confidence": [1.0]} for name in ("good.png", "cut.jpg")]  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    result = run_cli("evaluate", "--model", model_dir, "--imageset", images, "--labelset", tmp_path / "labels.csv",
                     "--datastore-name", "", "--output-dir", tmp_path / "out")  # fmt: skip
    assert result.code == 0, result.err
    assert result.err.count("cut.jpg") == 1, result.err
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["images"] == 2


def test_evaluate_a_crop_classifier(demo, run_cli, tmp_path: Path) -> None:
    settings = {"image_size": 32, "arch": "mobilenet_v3_small"}
    folder = built_model_dir(
        ROOT / "trainers" / "classifier", tmp_path / "model", settings, ClassMap(("circle", "square", "triangle"))
    )
    result = run_cli("evaluate", "--model", folder, "--imageset", demo.imageset_studio, "--labelset", demo.labels_csv,
                     "--datastore-name", "", "--output-dir", tmp_path / "out")  # fmt: skip
    assert result.code == 0, result.err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    matrix = np.array(metrics["confusion_matrix"]["rows_truth_columns_predicted"])
    assert matrix.shape == (3, 3) and matrix.sum() > 0
    assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert (tmp_path / "out" / "pr_curves.png").is_file() and (tmp_path / "out" / "confusion_matrix.png").is_file()
    refused = run_cli("evaluate", "--model", folder, "--imageset", demo.imageset_studio, "--labelset",
                      demo.labels_csv, "--datastore-name", "", "--output-dir", tmp_path / "issues",
                      "--label-issues")  # fmt: skip
    assert refused.code == 2 and "need a detection model" in refused.err, refused.err


# Every kind of label error on its own image, as the bright-box model (a lamp, score 0.9) sees them.
LABEL_ERRORS = {"swap.png": ["swap"], "spurious.png": ["spurious"], "missing.png": ["missing"], "loose.png": ["loose"]}


def label_error_cases(folder: Path) -> tuple[Path, Path]:
    """An image set of one right label and one image per kind of error, and its labels.csv. Four errors
    in five images put the perfect bright-box model under the review's floor (the labels disagree with
    it more than with most models): the tests of what the review finds lower the floor."""
    images = folder / "images"
    images.mkdir(parents=True)
    shifted = (RECT[0] + 32, RECT[1], RECT[2] + 32, RECT[3])  # 40% of the width to the right
    cases = [
        ("right.png", RECT, [("lamp", RECT)]),
        ("swap.png", RECT, [("window", RECT)]),
        ("spurious.png", None, [("lamp", (50, 50, 100, 100))]),
        ("missing.png", RECT, []),
        ("loose.png", RECT, [("lamp", shifted)]),
    ]
    rows = []
    for name, rect, labels in cases:
        picture(rect).save(images / name)
        objects = [{"type": t, "bottomX": x0, "topX": x1, "bottomY": y0, "topY": y1} for t, (x0, y0, x1, y1) in labels]
        rows.append({"image_url": name, "label": objects, "label_confidence": [1.0] * len(objects)})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return images, folder / "labels.csv"


def issue_kinds(table: pd.DataFrame) -> dict[str, list[str]]:
    return {url: literal_eval(k) for url, k in zip(table.image_url, table.issue_kinds, strict=True)}


@pytest.fixture
def no_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every review written whatever the model's mAP (trainkit runs in this process)."""
    import trainkit.inference.label_issues

    monkeypatch.setattr(trainkit.inference.label_issues, "REVIEW_FLOOR", 0.0)


def test_evaluate_label_issues_ranks_each_kind_of_label_error(
    model_dir: Path, run_cli, tmp_path, monkeypatch, no_floor
) -> None:
    images, labels = label_error_cases(tmp_path)
    out = tmp_path / "out"
    result = run_cli("evaluate", "--model", model_dir, "--imageset", images, "--labelset", labels,
                     "--datastore-name", "", "--output-dir", out, "--label-issues")  # fmt: skip
    assert result.code == 0, result.err
    table = pd.read_csv(out / "label_issues.csv")
    assert issue_kinds(table) == LABEL_ERRORS and len(table) == 4
    assert list(table.issue_score) == sorted(table.issue_score, reverse=True)  # the worst first
    swap = literal_eval(table.issues[table.image_url == "swap.png"].item())[0]
    assert swap["object"]["type"] == "window" and swap["proposal"]["type"] == "lamp"
    metrics = json.loads((out / "metrics.json").read_text())
    assert {k: metrics[f"label_issues/{k}"] for k in ("missing", "spurious", "swap", "loose")} == dict.fromkeys(
        ("missing", "spurious", "swap", "loose"), 1)  # fmt: skip
    assert len(list((out / "label_issues").glob("issue_*.png"))) == 4
    # The file is a label set: validate reads it back (its extra columns ignored).
    back = run_cli("validate", "--imageset", images, "--labelset", out / "label_issues.csv", "--datastore-name", "")
    assert back.code == 0, back.err
    assert "4 found, 0 missing" in back.out
    # Evaluated again into the same folder with the swap fixed: three drawings, none left from before.
    table = pd.read_csv(labels)
    table.loc[table.image_url == "swap.png", "label"] = table.label[table.image_url == "right.png"].item()
    table.to_csv(labels, index=False)
    again = run_cli("evaluate", "--model", model_dir, "--imageset", images, "--labelset", labels,
                    "--datastore-name", "", "--output-dir", out, "--label-issues")  # fmt: skip
    assert again.code == 0, again.err
    assert set(pd.read_csv(out / "label_issues.csv").image_url) == set(LABEL_ERRORS) - {"swap.png"}
    assert len(list((out / "label_issues").glob("issue_*.png"))) == 3
    # A model that finds none of the labelled objects is no judge of them: under the review's floor, one
    # line, no suspicions, and the earlier review's files gone.
    import trainkit.inference.label_issues

    monkeypatch.setattr(trainkit.inference.label_issues, "REVIEW_FLOOR", FLOOR)
    table["label"] = repr([{"type": "lamp", "bottomX": 150, "topX": 190, "bottomY": 100, "topY": 140}])
    table.to_csv(labels, index=False)
    weak = run_cli("evaluate", "--model", model_dir, "--imageset", images, "--labelset", labels,
                   "--datastore-name", "", "--output-dir", out, "--label-issues")  # fmt: skip
    assert weak.code == 0, weak.err
    assert "too weak to judge them, so no suspicions are written" in weak.err
    assert not (out / "label_issues.csv").exists() and not list((out / "label_issues").glob("issue_*.png"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["label_issues/model_map_50"] == 0.0 and "label_issues/missing" not in metrics


def train_brightbox(run_cli, images: Path, labels: Path, out: Path, *options: object):
    return run_cli("train", "--trainer", BRIGHTBOX, "--imageset", images, "--labelset", labels, "--datastore-name",
                   "", "--output-dir", out, "--device", "cpu", "--set", "max_steps=1", "--set", "batch_size=2",
                   *options, env={"MLFLOW_TRACKING_URI": ""})  # fmt: skip


def test_training_reviews_its_validation_labels_at_the_end(run_cli, monkeypatch, tmp_path, no_floor) -> None:
    from mlflow import MlflowClient

    monkeypatch.delenv("TRAINKIT_LABEL_ISSUES")  # the default: on (the other tests turn it off)
    images, labels = label_error_cases(tmp_path)
    out = tmp_path / "out"
    result = train_brightbox(run_cli, images, labels, out, "--val-labelset", labels)
    assert result.code == 0, result.err
    table = pd.read_csv(out / "label_issues.csv")
    assert issue_kinds(table) == LABEL_ERRORS
    assert len(list((out / "label_issues").glob("issue_*.png"))) == 4
    record = json.loads((out / "run.json").read_text())
    client = MlflowClient(tracking_uri=record["mlflow_tracking_uri"])
    run = client.get_run(record["mlflow_run_id"])
    logged_metrics = run.data.metrics
    assert {kind: logged_metrics[f"label_issues/{kind}"] for kind in ("missing", "spurious", "swap", "loose")} == {
        kind: 1.0 for kind in ("missing", "spurious", "swap", "loose")}  # fmt: skip
    assert logged_metrics["label_issues/floor"] == 0.0 and 0 < logged_metrics["label_issues/model_map_50"] < 1
    logged = {a.path for a in client.list_artifacts(record["mlflow_run_id"])}
    assert {"label_issues.csv", "label_issues"} <= logged
    off = train_brightbox(run_cli, images, labels, tmp_path / "off", "--val-labelset", labels, "--label-issues", "off")
    assert off.code == 0, off.err
    assert not (tmp_path / "off" / "label_issues.csv").exists()


def test_folds_review_every_image_with_a_model_that_did_not_learn_it(run_cli, tmp_path, no_floor) -> None:
    images, labels = label_error_cases(tmp_path)
    out = tmp_path / "out"
    result = train_brightbox(run_cli, images, labels, out, "--folds", "2")
    assert result.code == 0, result.err
    runs = [json.loads((out / "folds" / f"fold{i}" / "run.json").read_text()) for i in (1, 2)]
    assert sorted(r["val_images"] for r in runs) == [2, 3] and [r["train_images"] + r["val_images"] for r in runs] == [
        5, 5]  # fmt: skip
    assert all((out / "folds" / f"fold{i}" / "model" / "MLmodel").is_file() for i in (1, 2))
    table = pd.read_csv(out / "label_issues.csv")
    assert issue_kinds(table) == LABEL_ERRORS and len(table) == 4  # each image once, by the fold that held it out
    for i in (1, 2):
        held = pd.read_csv(out / "folds" / f"fold{i}" / "label_issues.csv").image_url
        assert set(table.image_url[table.fold == i]) == set(held)
    assert list(table.issue_score) == sorted(table.issue_score, reverse=True)
    assert not (out / "model").exists()  # a review: no model of all the images
    bad = train_brightbox(run_cli, images, labels, tmp_path / "bad", "--folds", "9")
    assert bad.code == 2 and "--folds 9: needs 2 to 5 folds for 5 images" in bad.err


def test_predict_rank_writes_the_label_queue_pre_labelled(model_dir: Path, run_cli, tmp_path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name, rect in (("dark_a.png", None), ("bright.png", RECT), ("dark_b.png", None)):
        picture(rect).save(images / name)
    out = tmp_path / "out"
    result = run_cli("predict", "--model", model_dir, "--imageset", images, "--output-dir", out, "--rank",
                     "uncertainty", "--top", "2")  # fmt: skip
    assert result.code == 0, result.err
    table = pd.read_csv(out / "label_queue.csv")
    # The bright image's lamp (score 0.9) is the only doubt there is: first; then a dark image, nothing to pre-label.
    assert len(table) == 2 and table.image_url[0] == "bright.png" and table.uncertainty[0] == pytest.approx(0.2)
    [lamp] = literal_eval(table.label[0])
    corners = [lamp[k] for k in ("bottomX", "bottomY", "topX", "topY")]
    assert lamp["type"] == "lamp" and corners == pytest.approx(RECT, abs=1.5)  # the resize's rounding
    assert literal_eval(table.label[1]) == [] and table.uncertainty[1] == 0
    back = run_cli("validate", "--imageset", images, "--labelset", out / "label_queue.csv", "--datastore-name", "",
                   "--val-fraction", "0")  # fmt: skip
    assert back.code == 0, back.err


def test_a_model_of_a_task_this_trainkit_does_not_know_is_refused_in_one_line(model_dir: Path, run_cli, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    settings = copy / "artifacts" / "settings.json"
    settings.write_text(settings.read_text().replace('"task": "detection"', '"task": "image_labels"'))
    images = tmp_path / "images"
    images.mkdir()
    picture().save(images / "a.png")
    result = run_cli("predict", "--model", copy, "--imageset", images, "--output-dir", tmp_path / "out")
    assert result.code == 2
    assert "field 'task' is 'image_labels', a task this trainkit does not know" in result.err
    assert "Traceback" not in result.err

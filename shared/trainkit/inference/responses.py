"""Predictions written for others to read: AutoML-for-images' answers (what AzureML tooling reads from
an image model), AutoML's JSON Lines dataset form, and the labelling API's own rows (which
`trainkit validate` and `train` read, so that a model can pre-label the next set)."""

from __future__ import annotations

from trainkit.classmap import ClassMap
from trainkit.inference.predictor import Prediction


def automl_answer(prediction: Prediction, classes: ClassMap, filename: str) -> dict:
    """One image as AutoML answers: detection `boxes` with corners normalised to 0..1, or `probs` and `labels`."""
    if prediction.probabilities is not None:
        return {"filename": filename, "probs": _rounded(prediction.probabilities, 5), "labels": list(classes.names)}
    boxes = []
    for (x0, y0, x1, y1), label, score in _objects(prediction):
        box = {"topX": x0 / prediction.width, "topY": y0 / prediction.height,
               "bottomX": x1 / prediction.width, "bottomY": y1 / prediction.height}  # fmt: skip
        boxes.append({"box": {k: round(v, 5) for k, v in box.items()}, "label": classes.names[label],
                      "score": round(score, 4)})  # fmt: skip
    return {"filename": filename, "boxes": boxes}


def labelling_row(prediction: Prediction, classes: ClassMap, image_url: str) -> dict:
    """A label-set row: `label` as the labelling API writes it (pixels; bottom is where a range starts)."""
    if prediction.probabilities is not None:
        whole = {"type": classes.names[int(prediction.labels[0])], "bottomX": 0, "topX": prediction.width,
                 "bottomY": 0, "topY": prediction.height}  # fmt: skip
        return {"image_url": image_url, "label": [whole], "label_confidence": _rounded(prediction.scores, 4)}
    objects, confidences = [], []
    for box, label, score in _objects(prediction):
        objects.append(labelled_object(box, classes.names[label]))
        confidences.append(round(score, 4))
    return {"image_url": image_url, "label": objects, "label_confidence": confidences}


def labelled_object(box, name: str) -> dict:
    """An object (x0, y0, x1, y1 in pixels) as the labelling API writes it: bottom is where a range starts."""
    x0, y0, x1, y1 = (round(float(v), 1) for v in box)
    return {"type": name, "bottomX": x0, "topX": x1, "bottomY": y0, "topY": y1}


def jsonl_line(prediction: Prediction, classes: ClassMap, image_url: str) -> dict:
    """A line of AutoML's JSON Lines dataset form (normalised corners), with the scores beside the labels."""
    details = {"width": prediction.width, "height": prediction.height}
    if prediction.probabilities is not None:
        label = classes.names[int(prediction.labels[0])]
        return {"image_url": image_url, "image_details": details, "label": label,
                "label_confidence": _rounded(prediction.scores, 4)}  # fmt: skip
    answer = automl_answer(prediction, classes, image_url)
    labels = [{"label": box["label"], **box["box"], "isCrowd": 0} for box in answer["boxes"]]
    return {"image_url": image_url, "image_details": details, "label": labels,
            "label_confidence": [box["score"] for box in answer["boxes"]]}  # fmt: skip


def _objects(prediction: Prediction):
    for box, label, score in zip(prediction.boxes.tolist(), prediction.labels.tolist(), prediction.scores.tolist(),
                                 strict=True):  # fmt: skip
        yield box, int(label), float(score)


def _rounded(values, digits: int) -> list[float]:
    return [round(float(v), digits) for v in values]

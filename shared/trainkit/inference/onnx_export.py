"""A trained model as ONNX, post-processing included, for use outside Python and torch.

    input   images  uint8 (N, 3, S, S): RGB images resized to the model's square side S, as training
                    resized them (bilinear, antialiased); N is dynamic
    outputs: the task's (its `onnx_outputs`); detection's, per image up to D detections (D: the model's
    detections per image), padded:
            boxes   float32 (N, D, 4)  xyxy in the S x S input's pixels
            labels  int64   (N, D)     class ids (class_map order), -1 in the padding
            scores  float32 (N, D)
            count   int64   (N,)       how many of the D are real
    classification outputs:
            scores  float32 (N, C)     every class's probability
            labels  int64   (N,)       the best class
The model's metadata holds `trainkit.settings` (settings.json: S, normalisation, task, score
threshold) and `trainkit.classes` (the class names by id).

How: the trainer's own `predict` is traced for one image with torch's TorchScript exporter (torch.export
cannot trace torchvision's detectors), and an ONNX Loop runs that graph once per image of the batch,
so the batch stays dynamic although detectors' per-image post-processing is not batchable.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from trainkit.atomic import write_bytes_atomic
from trainkit.batch import to_float
from trainkit.errors import UserError
from trainkit.inference.predictor import Predictor

log = logging.getLogger(__name__)

OPSET = 17
DEFAULT_DETECTIONS = 100


class _OneImage(nn.Module):
    """The trainer's `predict` for one uint8 (3, S, S) image, as the task's ONNX outputs (detections
    padded to `limit`)."""

    def __init__(self, predictor: Predictor, limit: int) -> None:
        super().__init__()
        self.model = predictor.model
        self.trainer = predictor.trainer
        self.settings = predictor.settings
        self.task = predictor.task
        self.limit = limit

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        images = to_float(image.unsqueeze(0), self.settings.mean, self.settings.std)
        out = self.trainer.predict(self.model, images, None)[0]
        return self.task.onnx_outputs(out, self.limit)


def export_onnx(predictor: Predictor, path: Path) -> Path:
    """Write `predictor`'s model (on the CPU) to `path` as ONNX (see the module doc), checked by
    onnx.checker; the file appears only once complete."""
    import onnx

    if not predictor.trainer.exports_onnx:
        raise UserError(f"trainer {predictor.trainer.name} does not export to ONNX (its exports_onnx is False)")
    if predictor.device.type != "cpu":
        raise ValueError("export_onnx traces on the CPU: load the predictor there")
    task = predictor.task
    limit = _detections(predictor.model)
    wrapper = _OneImage(predictor, limit).eval()
    size = predictor.settings.image_size
    names = task.onnx_names
    with (
        tempfile.TemporaryDirectory(prefix="trainkit-onnx-") as scratch,
        torch.no_grad(),
        warnings.catch_warnings(),
        _dynamic_level_merge(),
    ):
        warnings.simplefilter("ignore")  # the tracer's notes on Python values it fixes; the parity test checks
        single = Path(scratch) / "one_image.onnx"
        # Noise rather than a blank image, so that the trace follows the paths real images take.
        example = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        torch.onnx.export(wrapper, (example,), str(single), opset_version=OPSET, dynamo=False,
                          input_names=["image"], output_names=list(names))  # fmt: skip
        one = onnx.load(str(single))
    outputs = task.onnx_output_types(limit, len(predictor.classes))
    model = _batched(one, names, size, outputs)
    metadata = {"trainkit.settings": json.dumps(predictor.settings.to_json()),
                "trainkit.classes": json.dumps(list(predictor.classes.names))}  # fmt: skip
    for key, value in metadata.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    # The structural check: strict shape inference (full_check) trips over the shapes torch's exporter
    # notes for torchvision's multi-level RoIAlign, which onnxruntime runs correctly (the parity test).
    onnx.checker.check_model(model)
    return write_bytes_atomic(path, model.SerializeToString())


@contextmanager
def _dynamic_level_merge() -> Iterator[None]:
    """torchvision's multi-level RoIAlign, traced so that each level's RoI count stays dynamic, and
    merged with one gather.

    Its ONNX path expands each level's indices to `index.size(0)` RoIs, which the tracer records
    as the example image's count: any image whose RoIs fall otherwise across the FPN levels then
    fails in onnxruntime ("invalid expand shape"). It also scatters every level's pooled features
    (RoIs x 256 x 7 x 7) into place, which took a quarter of Faster R-CNN's time in onnxruntime.
    Here the levels' results are concatenated in level order and put back in RoI order by
    gathering them with the inverse of that order.
    """
    from torchvision.ops import poolers

    def merge(levels: torch.Tensor, unmerged: list[torch.Tensor]) -> torch.Tensor:
        order = torch.cat([torch.where(levels == level)[0] for level in range(len(unmerged))])
        # `order` is a permutation of the RoIs: sorting it gives each RoI's place in the concatenation
        return torch.cat(unmerged).index_select(0, torch.argsort(order))

    original = poolers._onnx_merge_levels
    poolers._onnx_merge_levels = merge
    try:
        yield
    finally:
        poolers._onnx_merge_levels = original


def _detections(model: nn.Module) -> int:
    """How many detections the model keeps per image: torchvision's `detections_per_img`, on Faster
    R-CNN's RoI heads or on the model itself (RetinaNet, FCOS, SSD; trainers' own models may say too)."""
    for holder in (getattr(model, "roi_heads", None), model):
        if holder is not None and hasattr(holder, "detections_per_img"):
            return int(holder.detections_per_img)
    return DEFAULT_DETECTIONS


def _batched(one, names: tuple[str, ...], size: int, types: list[tuple[str, int, list]]):
    """An ONNX model that runs the one-image graph `one` in a Loop over the batch of `images`; `types`:
    each output's (name, element type, shape)."""
    from onnx import TensorProto, helper

    graph = one.graph
    image = graph.input[0].name
    body = helper.make_graph(
        [helper.make_node("Gather", ["images", "index"], [image], axis=0),
         helper.make_node("Identity", ["go_on"], ["go_on_out"]), *graph.node],
        "one_image",
        [helper.make_tensor_value_info("index", TensorProto.INT64, []),
         helper.make_tensor_value_info("go_on", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("go_on_out", TensorProto.BOOL, []), *graph.output],
        value_info=list(graph.value_info),
    )  # fmt: skip
    outputs = [helper.make_tensor_value_info(name, kind, shape) for name, kind, shape in types]
    nodes = [
        helper.make_node("Shape", ["images"], ["images_shape"]),
        helper.make_node("Constant", [], ["first"], value=helper.make_tensor("first", TensorProto.INT64, [], [0])),
        helper.make_node("Gather", ["images_shape", "first"], ["batch_size"], axis=0),
        helper.make_node("Constant", [], ["always"], value=helper.make_tensor("always", TensorProto.BOOL, [], [True])),
        helper.make_node("Loop", ["batch_size", "always"], list(names), body=body),
    ]
    main = helper.make_graph(
        nodes, "trainkit", [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", 3, size, size])],
        outputs, initializer=list(graph.initializer),
    )  # fmt: skip
    model = helper.make_model(main, opset_imports=list(one.opset_import), producer_name="trainkit")
    model.ir_version = one.ir_version
    return model

"""trainkit trainer: a Hugging Face transformers object detector (RT-DETR, RT-DETRv2, D-FINE; DETR,
Conditional DETR, YOLOS), fine-tuned from a checkpoint.

`weights` is a checkpoint: hf:ORG/NAME@REVISION baked into the Hugging Face cache (the image does it
at build, `trainkit weights download` in a venv), a local checkpoint folder (config.json,
model.safetensors, preprocessor_config.json), an earlier run's model (continue training), or empty:
transformers' default configuration of `arch`, from scratch (every trainer's `weights=`). The
class layers are replaced for the dataset's classes, and the load is checked: any other tensor
that does not fit means the checkpoint is of another architecture, an error. Images are normalised
as the checkpoint's preprocessor config says, inside the model (so the saved model, the served one
and the ONNX file normalise alike); predictions go through the checkpoint's own post-processing.
Nothing is fetched at run time: HF_HUB_OFFLINE=1 and no Hub kernels (use_kernels=False).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from trainkit.classmap import ClassMap
from trainkit.errors import UserError
from trainkit.hf_weights import is_hub, parse_hub, resolve_hub
from trainkit.params import CommonParams, require_choice
from trainkit.trainer import Batch, Trainer
from trainkit.weights import require_present

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers reads it: training never downloads
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

log = logging.getLogger("trainkit")

DEFAULT_WEIGHTS = "hf:PekingU/rtdetr_r18vd@main"
# model_type -> what its class layers are called (replaced for new classes; nothing else may mismatch)
# and how it scores: sigmoid over classes (focal loss, top-k over queries x classes) or softmax with a
# last "no object" column.
FAMILIES = {
    "rt_detr": (("class_embed", "enc_score_head", "denoising_class_embed"), "sigmoid"),
    "rt_detr_v2": (("class_embed", "enc_score_head", "denoising_class_embed"), "sigmoid"),
    "d_fine": (("class_embed", "enc_score_head", "denoising_class_embed"), "sigmoid"),
    "detr": (("class_labels_classifier",), "softmax"),
    "conditional_detr": (("class_labels_classifier",), "sigmoid"),
    "yolos": (("class_labels_classifier",), "softmax"),
}
# What `weights=` (from scratch) builds: transformers' default configuration of these (the DETR
# family's defaults need timm backbones: start those from a checkpoint with scratch=true instead).
SCRATCH_ARCHS = ("rt_detr", "rt_detr_v2", "d_fine")
# The loss terms logged alone; the auxiliary decoder layers' and the denoising queries' are summed.
MAIN_TERMS = ("loss_vfl", "loss_bbox", "loss_giou", "loss_fgl", "loss_ddf", "loss_ce", "loss_focal")


@dataclass(frozen=True)
class HFDetectorParams(CommonParams):
    """Fine-tuning options on top of the common hyperparameters (RT-DETR's published fine-tuning
    recipe: AdamW at 1e-4, the backbone at a tenth of it, gradients clipped at 0.1, 640 px)."""

    weights: str = DEFAULT_WEIGHTS
    image_size: int = 640
    lr: float = 1e-4
    backbone_lr_factor: float = 0.1  # the backbone's learning rate is lr times this
    weight_decay: float = 1e-4
    grad_clip: float = 0.1
    warmup_steps: int = 300
    scratch: bool = False  # the checkpoint's architecture with fresh weights (for comparisons)
    arch: str = "rt_detr"  # with weights= only: the architecture built from scratch (SCRATCH_ARCHS)
    detections_per_image: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        require_choice(self, "arch", SCRATCH_ARCHS)
        if is_hub(self.weights):
            parse_hub(self.weights)  # the form; its presence is checked where training runs
        elif self.weights:
            require_present(self.weights)
        if self.backbone_lr_factor < 0:
            raise ValueError(f"hyperparameter 'backbone_lr_factor' = {self.backbone_lr_factor} is out of range")
        if self.image_size % 32:
            raise ValueError(f"hyperparameter 'image_size' = {self.image_size}: these detectors take multiples "
                             "of 32 pixels")  # fmt: skip


class HFDetector(nn.Module):
    """A transformers detector with its checkpoint's normalisation and post-processing around it.

    forward(images) takes (N, 3, S, S) floats in 0..1: with `targets` (one dict per image, class ids
    and xyxy boxes in pixels) it returns the losses, else per image `boxes` (xyxy pixels), `labels`,
    `scores`, best first, at most `limit`.
    """

    def __init__(self, model: nn.Module, preprocessing: dict, scoring: str, limit: int) -> None:
        super().__init__()
        self.model = model
        self.preprocessing, self.scoring, self.limit = preprocessing, scoring, limit
        # The harness hands 0..1 (x / 255): a checkpoint that rescales by another factor, or not at all,
        # is given what its processor would give it.
        scale = preprocessing.get("rescale_factor", 1 / 255) * 255 if preprocessing.get("do_rescale", True) else 255
        normalize = preprocessing.get("do_normalize", False)
        mean = preprocessing.get("image_mean", (0.0,) * 3) if normalize else (0.0,) * 3
        std = preprocessing.get("image_std", (1.0,) * 3) if normalize else (1.0,) * 3
        # (x * scale - mean) / std, as one multiply and one subtract
        self.register_buffer("gain", scale / torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("offset", torch.tensor(mean).view(1, 3, 1, 1) / torch.tensor(std).view(1, 3, 1, 1),
                             persistent=False)  # fmt: skip

    @property
    def detections_per_img(self) -> int:
        """The most detections an image gets (torchvision's name, which the ONNX export reads)."""
        return self.limit

    def forward(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None):
        pixels = images * self.gain - self.offset
        if targets is not None:
            size = images.new_tensor([images.shape[-1], images.shape[-2]] * 2)
            labels = [{"class_labels": t["labels"], "boxes": _xyxy_to_cxcywh(t["boxes"]) / size} for t in targets]
            out = self.model(pixel_values=pixels, labels=labels)
            return _loss_terms(out.loss, out.loss_dict)
        out = self.model(pixel_values=pixels)
        return self.post_process(out.logits, out.pred_boxes, images.shape[-2], images.shape[-1])

    def post_process(self, logits: torch.Tensor, boxes: torch.Tensor, height: int, width: int) -> list[dict]:
        """transformers' post-processing of these families (sigmoid: top-k over queries x classes;
        softmax: the best class but "no object"), every score kept, the best `limit` of them."""
        scale = boxes.new_tensor([width, height, width, height])
        corners = _cxcywh_to_xyxy(boxes.float()) * scale
        logits = logits.float()
        if self.scoring == "sigmoid":
            classes = logits.shape[-1]
            scores, index = torch.topk(logits.sigmoid().flatten(1), min(self.limit, logits.shape[1] * classes), dim=1)
            labels, queries = index % classes, index // classes
        else:
            scores, labels = logits.softmax(-1)[..., :-1].max(-1)
            scores, queries = torch.topk(scores, min(self.limit, scores.shape[1]), dim=1)
            labels = labels.gather(1, queries)
        picked = corners.gather(1, queries.unsqueeze(-1).expand(-1, -1, 4))
        return [{"boxes": b, "labels": c, "scores": s} for b, c, s in zip(picked, labels, scores, strict=True)]


class HFDetectorTrainer(Trainer):
    name = "hf_detector"
    Params = HFDetectorParams

    def build_model(self, params: HFDetectorParams, classes: ClassMap) -> nn.Module:
        if not params.weights:
            return _fresh(params.arch, classes, params)
        path = resolve_hub(params.weights) if is_hub(params.weights) else Path(params.weights)
        if not (path / "config.json").is_file():
            return _continue_from(path, classes, params)
        config = json.loads((path / "config.json").read_text())
        heads, scoring = _family(config.get("model_type", ""), path)
        preprocessing = json.loads((path / "preprocessor_config.json").read_text())
        model = _load(path, classes, heads, params.scratch, _queries(config, params.image_size))
        return HFDetector(model, preprocessing, scoring, params.detections_per_image)

    def loss(self, model: nn.Module, images: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        """The checkpoint's own loss (Hungarian matching; for RT-DETR / D-FINE also the denoising queries)."""
        return model(images, batch.targets)

    def predict(self, model: nn.Module, images: torch.Tensor, batch: Batch) -> list[dict[str, torch.Tensor]]:
        return model(images)

    def amp_dtype(self, device: torch.device) -> torch.dtype | None:
        """bfloat16 where the GPU has it; else full precision (float16 gives D-FINE and RT-DETR NaNs)."""
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None

    def configure_optimizer(self, model: nn.Module, params: HFDetectorParams) -> torch.optim.Optimizer:
        """AdamW; the backbone at lr x backbone_lr_factor; no weight decay on norms and biases."""
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                groups.setdefault((".backbone." in f".{name}", parameter.ndim <= 1), []).append(parameter)
        return torch.optim.AdamW(
            [
                {"params": ps, "lr": params.lr * (params.backbone_lr_factor if backbone else 1.0),
                 "weight_decay": 0.0 if flat else params.weight_decay}
                for (backbone, flat), ps in sorted(groups.items())
            ],
            lr=params.lr,
        )  # fmt: skip


def _fresh(arch: str, classes: ClassMap, params: HFDetectorParams) -> HFDetector:
    """transformers' default configuration of `arch` with fresh weights; its images in 0..1, as RT-DETR's."""
    from transformers import AutoConfig, AutoModelForObjectDetection

    config = AutoConfig.for_model(arch, **_labels(classes))
    for key, value in _queries(config.to_dict(), params.image_size).items():
        setattr(config, key, value)
    model = AutoModelForObjectDetection.from_config(config)
    return HFDetector(model, {"do_normalize": False}, "sigmoid", params.detections_per_image)


def _queries(config: dict, image_size: int) -> dict[str, int]:
    """RT-DETR and D-FINE pick their queries as the top-k of the encoder's anchors, one per cell of each
    feature map: a small image has fewer than the checkpoint's num_queries, so fewer are picked (their
    queries have no weights of their own, so nothing mismatches)."""
    if config.get("model_type") not in SCRATCH_ARCHS:
        return {}
    anchors = sum(math.ceil(image_size / stride) ** 2 for stride in config.get("feat_strides", (8, 16, 32)))
    wanted = config.get("num_queries", 300)
    if anchors >= wanted:
        return {}
    log.info("%d px images give %d anchors: %d queries, not %d", image_size, anchors, anchors, wanted)
    return {"num_queries": anchors}


def _labels(classes: ClassMap) -> dict[str, dict]:
    return {"id2label": dict(enumerate(classes.names)), "label2id": {n: i for i, n in enumerate(classes.names)}}


def _family(family: str, source: Path) -> tuple[tuple[str, ...], str]:
    if family not in FAMILIES:
        raise UserError(f"hyperparameter 'weights': {source} holds a {family or 'unknown'!r} model; this trainer "
                        f"fine-tunes {', '.join(FAMILIES)}")  # fmt: skip
    return FAMILIES[family]


def _load(folder: Path, classes: ClassMap, heads: tuple[str, ...], scratch: bool, overrides: dict) -> nn.Module:
    """The checkpoint's model for `classes` (its config changed by `overrides`): class layers new, every
    other tensor the checkpoint's."""
    import transformers
    from transformers import AutoConfig, AutoModelForObjectDetection

    transformers.logging.set_verbosity_error()  # its load report is replaced by the check and the line below
    transformers.logging.disable_progress_bar()
    labels = {**_labels(classes), **overrides}
    if scratch:
        config = AutoConfig.from_pretrained(folder, **labels)
        return AutoModelForObjectDetection.from_config(config)
    try:
        model, info = AutoModelForObjectDetection.from_pretrained(
            folder, **labels, ignore_mismatched_sizes=True, output_loading_info=True, use_kernels=False
        )
    except ImportError as exc:  # DETR's and Conditional DETR's published checkpoints build timm backbones
        raise UserError(f"hyperparameter 'weights': {folder} needs a package this environment lacks ({exc}); "
                        "install it, or use a checkpoint with transformers' own backbone") from None  # fmt: skip
    except (OSError, ValueError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise UserError(f"hyperparameter 'weights': {folder} does not load ({reason})") from None
    mismatched = sorted(key for key, *_ in info["mismatched_keys"])
    foreign = [k for k in mismatched if not any(head in k for head in heads)]
    foreign += sorted(info["missing_keys"]) + sorted(info["unexpected_keys"])
    if foreign:
        raise UserError(
            f"hyperparameter 'weights': {folder} does not fit its config's architecture ({len(foreign)} "
            f"tensors, e.g. {foreign[0]}); is its model.safetensors another model's?"
        )
    log.info("weights %s: every tensor loaded but the class layers (%d replaced for %d classes)",
             folder, len(mismatched), len(classes))  # fmt: skip
    return model


def _continue_from(path: Path, classes: ClassMap, params: HFDetectorParams) -> HFDetector:
    """Continue from an earlier run's model (its output folder or MLflow model): its architecture and
    preprocessing, every tensor whose name and shape fit (the class layers, when the classes differ, not)."""
    from transformers import AutoModelForObjectDetection

    from trainkit.weights import load_matching, require_present

    require_present(str(path))
    folder = next((f for f in (path, path / "model") if (f / "MLmodel").is_file()), None)
    if folder is None:
        raise UserError(f"hyperparameter 'weights': {path} is neither a checkpoint folder (config.json, "
                        "model.safetensors, preprocessor_config.json) nor an earlier hf_detector run")  # fmt: skip
    import mlflow.pytorch

    earlier = mlflow.pytorch.load_model(str(folder), map_location="cpu")
    if not hasattr(earlier, "preprocessing"):
        raise UserError(f"hyperparameter 'weights': {folder} is a {type(earlier).__name__}, not an hf_detector model")
    config = earlier.model.config
    config.id2label, config.label2id = _labels(classes).values()
    _family(config.model_type, folder)
    for key, value in _queries(config.to_dict(), params.image_size).items():
        setattr(config, key, value)
    model = HFDetector(AutoModelForObjectDetection.from_config(config), earlier.preprocessing, earlier.scoring,
                       params.detections_per_image)  # fmt: skip
    load_matching(model, earlier.state_dict(), str(folder))
    return model


def _loss_terms(total: torch.Tensor, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {"loss": total}
    for name, value in terms.items():
        kind = "loss_dn" if "_dn_" in name else "loss_aux" if ("_aux_" in name or "_enc" in name) else name
        if kind in MAIN_TERMS or kind in ("loss_dn", "loss_aux"):
            out[kind] = out.get(kind, 0) + value.detach()
    return out


def _xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], -1)


def _cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


TRAINER = HFDetectorTrainer()

"""Tiny randomly initialised transformers detectors, saved as checkpoint folders like published ones
(config.json, model.safetensors, preprocessor_config.json): the hf_detector tests' offline stand-ins."""

from __future__ import annotations

from pathlib import Path

FAMILIES = ("rt_detr", "rt_detr_v2", "d_fine", "detr", "conditional_detr", "yolos")
COCO_LABELS = 80


def _rt_detr_backbone():
    from transformers import RTDetrResNetConfig

    return RTDetrResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                              layer_type="basic", out_features=["stage2", "stage3", "stage4"])  # fmt: skip


_DECODER = {"d_model": 32, "decoder_ffn_dim": 64, "decoder_layers": 2, "decoder_attention_heads": 2, "num_queries": 20}
_ENCODER = {"encoder_hidden_dim": 32, "encoder_ffn_dim": 64, "encoder_attention_heads": 2}


def _resnet_backbone():
    from transformers import ResNetConfig

    return ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], layer_type="basic",
                        out_features=["stage4"])  # fmt: skip


def tiny_model(family: str, labels: int = COCO_LABELS, queries: int = 20):
    """(a tiny model of `family` with `labels` classes and `queries` object queries, its image processor)."""
    import transformers as t

    names = {"id2label": {i: f"class{i}" for i in range(labels)}}
    decoder = {**_DECODER, "num_queries": queries}
    detr_like = {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_ffn_dim": 64,
                 "decoder_ffn_dim": 64, "encoder_attention_heads": 2, "decoder_attention_heads": 2,
                 "num_queries": queries, "backbone_config": _resnet_backbone(), "use_timm_backbone": False}  # fmt: skip
    if family in ("rt_detr", "rt_detr_v2"):
        config_class, model_class = {
            "rt_detr": (t.RTDetrConfig, t.RTDetrForObjectDetection),
            "rt_detr_v2": (t.RTDetrV2Config, t.RTDetrV2ForObjectDetection),
        }[family]
        config = config_class(backbone_config=_rt_detr_backbone(), encoder_in_channels=[32, 64, 128],
                              decoder_in_channels=[32, 32, 32], num_denoising=10, **_ENCODER, **decoder,
                              **names)  # fmt: skip
        return model_class(config), t.RTDetrImageProcessor(size={"height": 64, "width": 64})
    if family == "d_fine":
        backbone = t.HGNetV2Config(
            stage_in_channels=[16, 64, 128, 256], stage_mid_channels=[16, 32, 64, 128],
            stage_out_channels=[64, 128, 256, 512], stage_num_blocks=[1, 1, 2, 1],
            stage_downsample=[False, True, True, True], stage_light_block=[False, False, True, True],
            stage_kernel_size=[3, 3, 5, 5], stage_numb_of_layers=[3, 3, 3, 3], embeddings_size=10,
            hidden_sizes=[64, 128, 256, 512], depths=[1, 1, 2, 1], out_features=["stage2", "stage3", "stage4"],
            stem_channels=[3, 16, 16],
        )  # fmt: skip
        config = t.DFineConfig(backbone_config=backbone, encoder_in_channels=[128, 256, 512],
                               decoder_in_channels=[32, 32, 32], decoder_n_points=[3, 6, 3], depth_mult=0.34,
                               hidden_expansion=0.5, num_denoising=10, **_ENCODER, **decoder, **names)  # fmt: skip
        return t.DFineForObjectDetection(config), t.RTDetrImageProcessor(size={"height": 64, "width": 64})
    if family == "detr":
        return t.DetrForObjectDetection(t.DetrConfig(**detr_like, **names)), t.DetrImageProcessor()
    if family == "conditional_detr":
        model = t.ConditionalDetrForObjectDetection(t.ConditionalDetrConfig(**detr_like, **names))
        return model, t.ConditionalDetrImageProcessor()
    if family == "yolos":
        config = t.YolosConfig(image_size=[64, 64], patch_size=16, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=2, intermediate_size=64, num_detection_tokens=queries,
                               **names)  # fmt: skip
        return t.YolosForObjectDetection(config), t.YolosImageProcessor()
    raise ValueError(family)


def tiny_checkpoint(family: str, folder: Path, labels: int = COCO_LABELS, queries: int = 20) -> Path:
    """A tiny `family` checkpoint saved in `folder` as published checkpoints are."""
    import torch

    torch.manual_seed(0)
    model, processor = tiny_model(family, labels, queries)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder

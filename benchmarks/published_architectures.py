"""The architectures of the small published transformers detectors, built with fresh weights.

hf_detector's `weights=` (from scratch) builds transformers' default configuration of an arch, which
for RT-DETR and D-FINE is the R50 / L size: several times the checkpoints users start from. The
from-scratch rows of `benchmarks/quality.py --archs` train the published small architectures
instead, written here as checkpoint folders (`weights=FOLDER scratch=true`). The sizes are those of
transformers' conversion scripts for the checkpoints (convert_rt_detr_original_pytorch_checkpoint_to_hf,
convert_d_fine_original_pytorch_checkpoint_to_hf); `python benchmarks/published_architectures.py`
prints each one's parameter count against the published one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# ResNet-18-vd under RT-DETR's hybrid encoder with three decoder layers: PekingU/rtdetr_r18vd (20 M)
# and RT-DETRv2's r18vd.
_R18 = {
    "backbone_config": {"hidden_sizes": [64, 128, 256, 512], "depths": [2, 2, 2, 2], "layer_type": "basic"},
    "encoder_in_channels": [128, 256, 512],
    "hidden_expansion": 0.5,
    "decoder_layers": 3,
}
# HGNetV2-B0 feeding two levels, 128 wide: ustc-community/dfine-nano-coco (4 M).
_DFINE_N = {
    "backbone_config": {
        "hidden_sizes": [128, 256, 512, 1024], "stem_channels": [3, 16, 16],
        "stage_in_channels": [16, 64, 256, 512], "stage_mid_channels": [16, 32, 64, 128],
        "stage_out_channels": [64, 256, 512, 1024], "stage_num_blocks": [1, 1, 2, 1],
        "stage_downsample": [False, True, True, True], "stage_light_block": [False, False, True, True],
        "stage_kernel_size": [3, 3, 5, 5], "stage_numb_of_layers": [3, 3, 3, 3], "out_indices": [3, 4],
        "use_learnable_affine_block": True,
    },
    "num_feature_levels": 2, "feat_strides": [16, 32], "encoder_in_channels": [512, 1024], "encode_proj_layers": [1],
    "d_model": 128, "encoder_hidden_dim": 128, "encoder_ffn_dim": 512, "decoder_ffn_dim": 512,
    "decoder_in_channels": [128, 128], "decoder_n_points": [6, 6], "decoder_layers": 3,
    "depth_mult": 0.5, "hidden_expansion": 0.34,
}  # fmt: skip
# arch -> (what it is, its changes to transformers' default configuration, published parameters in millions)
ARCHITECTURES = {
    "rt_detr": ("RT-DETR R18-vd (PekingU/rtdetr_r18vd)", _R18, 20),
    "rt_detr_v2": ("RT-DETRv2 R18-vd (PekingU/rtdetr_v2_r18vd)", _R18, 20),
    "d_fine": ("D-FINE N (ustc-community/dfine-nano-coco)", _DFINE_N, 4),
}
# RT-DETR's and D-FINE's processors: 0..1 pixels, no mean or std
PREPROCESSOR = {"do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": False}


def config(arch: str) -> object:
    """transformers' configuration of `arch` at its published small size."""
    from transformers import AutoConfig

    _, changes, _ = ARCHITECTURES[arch]
    built = AutoConfig.for_model(arch)
    for key, value in changes.items():
        if key == "backbone_config":
            for name, setting in value.items():
                setattr(built.backbone_config, name, setting)
        else:
            setattr(built, key, value)
    if getattr(built, "head_dim", None):  # stored beside d_model in D-FINE's config, and checked against it
        built.head_dim = built.d_model // built.decoder_attention_heads
    built.validate()
    return built


def write_folder(arch: str, folder: Path) -> Path:
    """A checkpoint folder (config.json, preprocessor_config.json, fresh model.safetensors) of `arch`'s
    published small architecture, for hf_detector's `weights=FOLDER scratch=true`."""
    from transformers import AutoModelForObjectDetection

    folder.mkdir(parents=True, exist_ok=True)
    AutoModelForObjectDetection.from_config(config(arch)).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    return folder


def main() -> int:
    from transformers import AutoModelForObjectDetection

    for arch, (name, _, published) in ARCHITECTURES.items():
        model = AutoModelForObjectDetection.from_config(config(arch))
        built = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name:<45} {built:5.1f} M parameters (published {published} M)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Convert the original research release's .pth state dicts (module.v.*, packed qkv) to the public layout."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import torch

from ast_audio.model.configuration import ASTConfig
from ast_audio.errors import CheckpointError
from ast_audio.labels import read_class_labels
from ast_audio.features.preprocessor_config import (
    AUDIOSET_MEAN,
    AUDIOSET_STD,
    default_preprocessor_config,
    write_preprocessor_config,
)
from ast_audio.checkpoints.files import SAFE_WEIGHTS_NAME, load_weights_file, save_safetensors

logger = logging.getLogger(__name__)

PREFIX = "audio_spectrogram_transformer."
_BLOCK_RENAMES = {
    "norm1": "layernorm_before",
    "attn.proj": "attention.output.dense",
    "norm2": "layernorm_after",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
_TOP_RENAMES = {
    "v.cls_token": PREFIX + "embeddings.cls_token",
    "v.dist_token": PREFIX + "embeddings.distillation_token",
    "v.pos_embed": PREFIX + "embeddings.position_embeddings",
    "v.patch_embed.proj.weight": PREFIX + "embeddings.patch_embeddings.projection.weight",
    "v.patch_embed.proj.bias": PREFIX + "embeddings.patch_embeddings.projection.bias",
    "v.norm.weight": PREFIX + "layernorm.weight",
    "v.norm.bias": PREFIX + "layernorm.bias",
    "mlp_head.0.weight": "classifier.layernorm.weight",
    "mlp_head.0.bias": "classifier.layernorm.bias",
    "mlp_head.1.weight": "classifier.dense.weight",
    "mlp_head.1.bias": "classifier.dense.bias",
}
_UNUSED = re.compile(r"^v\.(head|head_dist)\.")
_BLOCK = re.compile(r"^v\.blocks\.(\d+)\.(.+)\.(weight|bias)$")


@dataclass(frozen=True)
class Geometry:
    """How the spectrogram is cut into patches."""

    frequency_stride: int
    time_stride: int
    max_length: int

    def flags(self) -> str:
        return f"--fstride {self.frequency_stride} --tstride {self.time_stride} --frames {self.max_length}"


# What a release model plausibly used: the strides of the released checkpoints (10, 12, 14, 16; the frequency
# and time strides need not be equal) and input lengths that are powers of two (AudioSet 1024, ESC-50 512,
# Speech Commands 128). Any other model converts with flags; a geometry is never guessed among several.
PLAUSIBLE_STRIDES = (10, 12, 14, 16)
PLAUSIBLE_FRAMES = tuple(2**k for k in range(4, 13))


def geometry_candidates(
    num_patches: int, patch_size: int = 16, num_mel_bins: int = 128, frequency_stride: int | None = None,
    time_stride: int | None = None, max_length: int | None = None,
) -> list[Geometry]:
    """Every (frequency stride, time stride, frames) that gives `num_patches` patches among PLAUSIBLE_STRIDES
    (equal or not; up to the patch size) and PLAUSIBLE_FRAMES, each narrowed to the value given when one is."""
    strides = strides_tried(patch_size)
    found = []
    for f_stride in [frequency_stride] if frequency_stride else strides:
        f_patches = (num_mel_bins - patch_size) // f_stride + 1
        if num_patches % f_patches:
            continue
        for t_stride in [time_stride] if time_stride else strides:
            for frames in [max_length] if max_length else PLAUSIBLE_FRAMES:
                if frames >= patch_size and f_patches * ((frames - patch_size) // t_stride + 1) == num_patches:
                    found.append(Geometry(f_stride, t_stride, frames))
    return found


def strides_tried(patch_size: int) -> list[int]:
    return [s for s in PLAUSIBLE_STRIDES if s <= patch_size] or [patch_size]


def infer_geometry(
    num_patches: int, patch_size: int = 16, num_mel_bins: int = 128, frequency_stride: int | None = None,
    time_stride: int | None = None, max_length: int | None = None,
) -> Geometry:
    """The one geometry that fits `num_patches` patch tokens (given values always win); refuses, listing the
    candidates and the flags that pick one, when none or several fit. Never a silent guess."""
    candidates = geometry_candidates(num_patches, patch_size, num_mel_bins, frequency_stride, time_stride, max_length)
    if len(candidates) == 1:
        return candidates[0]
    given = ", ".join(f"{k} {v}" for k, v in dict(frequency_stride=frequency_stride, time_stride=time_stride,
                                                   frames=max_length).items() if v)
    setting = f"{num_patches} patches of {patch_size}x{patch_size} over {num_mel_bins} mel bins" + (
        f" with {given}" if given else "")
    if not candidates:
        raise CheckpointError(
            f"no geometry among strides {'/'.join(map(str, strides_tried(patch_size)))} and frames "
            f"{'/'.join(map(str, PLAUSIBLE_FRAMES))} gives "
            f"{setting}; pass the model's --fstride, --tstride and --frames"
        )
    listed = "; ".join(f"strides {g.frequency_stride}/{g.time_stride}, {g.max_length} frames" for g in candidates[:8])
    more = f" and {len(candidates) - 8} more" if len(candidates) > 8 else ""
    raise CheckpointError(
        f"{len(candidates)} geometries give {setting}: {listed}{more}; choose with flags, e.g. "
        f"{candidates[0].flags()}"
    )


def _unwrap(state: dict) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def rename_original_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map release names to public names, splitting each packed qkv into query, key and value."""
    converted: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if _UNUSED.match(name):
            continue
        if name in _TOP_RENAMES:
            converted[_TOP_RENAMES[name]] = tensor
            continue
        block = _BLOCK.match(name)
        if not block:
            raise CheckpointError(f"unexpected tensor {name!r} in an AST release checkpoint")
        index, part, kind = block.groups()
        layer = f"{PREFIX}encoder.layer.{index}."
        if part == "attn.qkv":
            query, key, value = tensor.chunk(3, dim=0)  # packed along the output dimension in q, k, v order
            for short, piece in (("query", query), ("key", key), ("value", value)):
                converted[f"{layer}attention.attention.{short}.{kind}"] = piece.clone()
        elif part in _BLOCK_RENAMES:
            converted[f"{layer}{_BLOCK_RENAMES[part]}.{kind}"] = tensor
        else:
            raise CheckpointError(f"unexpected tensor {name!r} in an AST release checkpoint")
    return converted


@dataclass(frozen=True)
class DatasetPreset:
    """What a release recipe trained with: normalisation, loss (as a problem type) and input frames."""

    mean: float
    std: float
    problem_type: str
    frames: int


# The release's recipes (AST_FACTS): AudioSet and Speech Commands trained with BCE (multi-label scores),
# ESC-50 with cross-entropy.
DATASET_PRESETS = {
    "audioset": DatasetPreset(AUDIOSET_MEAN, AUDIOSET_STD, "multi_label_classification", 1024),
    "esc50": DatasetPreset(-6.6268077, 5.358466, "single_label_classification", 512),
    "speechcommands": DatasetPreset(-6.845978, 5.5654526, "multi_label_classification", 128),
}
# The release's LayerNorm epsilons: timm's ViT blocks and final norm 1e-6, the head PyTorch's default 1e-5.
RELEASE_ENCODER_EPS, RELEASE_HEAD_EPS = 1e-6, 1e-5
CONVERTED_EPS = 1e-12  # what the public converted checkpoints use everywhere


def check_supported_layout(state: dict[str, torch.Tensor]) -> None:
    """Refuse, naming what was found, the layouts AST's public architecture cannot hold."""
    pretraining = sorted(k for k in state if k.split(".")[0] in ("cpredlayer", "gpredlayer", "mask_embed", "unfold"))
    if pretraining:
        raise CheckpointError(
            f"an SSAST pretraining checkpoint (found {', '.join(pretraining[:3])}): its masked-patch heads are "
            "not a classifier; fine-tune it (with SSAST's code) before converting"
        )
    kernel = state.get("v.patch_embed.proj.weight")
    if kernel is not None and kernel.shape[-1] != kernel.shape[-2]:
        raise CheckpointError(
            f"patches of {kernel.shape[-2]}x{kernel.shape[-1]} (an SSAST frame-based model): only square patches "
            "(AST's 16x16) are supported"
        )
    if "v.cls_token" in state and "v.dist_token" not in state:
        raise CheckpointError(
            "one CLS token and no distillation token (a 'nokd' or ViT-initialised model): AST pools the CLS and "
            "distillation tokens, so this model's outputs cannot be reproduced"
        )
    if "v.cls_token" not in state and "v.dist_token" not in state and "v.pos_embed" in state:
        raise CheckpointError(
            "no CLS or distillation token (a mean-pooled SSAST model): AST's head reads the two tokens, so this "
            "model's outputs cannot be reproduced"
        )


def config_from_original(
    state: dict[str, torch.Tensor], *, num_mel_bins: int = 128, frequency_stride: int | None = None,
    time_stride: int | None = None, max_length: int | None = None, num_attention_heads: int | None = None,
    id2label: dict[int, str] | None = None, match_release: bool = False, problem_type: str | None = None,
) -> ASTConfig:
    """An `ASTConfig` for a release state dict (names without ``module.``), inferred from tensor shapes.

    `match_release` keeps the release's LayerNorm epsilons (1e-6 in the encoder, 1e-5 in the head), so the
    converted model gives the original code's logits; without it, 1e-12 everywhere, as the public converted
    checkpoints (their logits differ from the release's by about 1e-4)."""
    check_supported_layout(state)
    for required in ("v.pos_embed", "v.patch_embed.proj.weight", "mlp_head.1.weight", "v.blocks.0.attn.qkv.weight"):
        if required not in state:
            raise CheckpointError(f"not an AST research-release state dict: no tensor 'module.{required}'")
    hidden_size = state["v.pos_embed"].shape[-1]
    patch_size = state["v.patch_embed.proj.weight"].shape[-1]
    num_layers = 1 + max(int(m.group(1)) for m in map(_BLOCK.match, state) if m)
    geometry = infer_geometry(
        state["v.pos_embed"].shape[1] - 2, patch_size, num_mel_bins, frequency_stride, time_stride, max_length
    )
    num_labels = state["mlp_head.1.weight"].shape[0]
    if id2label is not None and len(id2label) != num_labels:
        raise CheckpointError(f"the class labels list {len(id2label)} names but the checkpoint's head has {num_labels}")
    return ASTConfig(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        # DeiT models use 64-dimensional heads (tiny 3, small 6, base 12); shapes do not record the head count.
        num_attention_heads=num_attention_heads or max(1, hidden_size // 64),
        intermediate_size=state["v.blocks.0.mlp.fc1.weight"].shape[0],
        layer_norm_eps=RELEASE_ENCODER_EPS if match_release else CONVERTED_EPS,
        classifier_layer_norm_eps=RELEASE_HEAD_EPS if match_release else None,
        patch_size=patch_size,
        qkv_bias="v.blocks.0.attn.qkv.bias" in state,
        frequency_stride=geometry.frequency_stride,
        time_stride=geometry.time_stride,
        max_length=geometry.max_length,
        num_mel_bins=num_mel_bins,
        num_labels=None if id2label else num_labels,
        id2label=id2label,
        problem_type=problem_type,
        architectures=["ASTForAudioClassification"],
        dtype="float32",
    )


def convert_original(
    checkpoint_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    labels_csv: str | os.PathLike | None = None,
    dataset: str | None = None,
    frequency_stride: int | None = None,
    time_stride: int | None = None,
    max_length: int | None = None,
    num_mel_bins: int = 128,
    num_attention_heads: int | None = None,
    match_release: bool = False,
    problem_type: str | None = None,
    mean: float | None = None,
    std: float | None = None,
) -> ASTConfig:
    """Convert a release .pth into a checkpoint directory that `from_pretrained` loads.

    Writes config.json, model.safetensors and preprocessor_config.json into `output_dir` and returns the
    config. Strides and frames are inferred from tensor shapes only when one geometry fits (else refused with
    the candidates); `dataset` ("audioset", "esc50", "speechcommands") sets the recipe's mean/std, problem
    type and frames; explicit arguments win. The directory is checked to load before it replaces `output_dir`.
    """
    preset = _preset(dataset)
    state = _unwrap(load_weights_file(checkpoint_path))
    id2label = {c.index: c.display_name for c in read_class_labels(labels_csv)} if labels_csv else None
    try:
        config = config_from_original(
            state, num_mel_bins=num_mel_bins, frequency_stride=frequency_stride, time_stride=time_stride,
            max_length=max_length or (preset.frames if preset else None), num_attention_heads=num_attention_heads,
            id2label=id2label, match_release=match_release,
            problem_type=problem_type or (preset.problem_type if preset else None),
        )
        converted = rename_original_state_dict(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{checkpoint_path}: {exc}") from None
    mean, std = _normalisation(checkpoint_path, preset, mean, std)
    if id2label is None:
        logger.warning("%s: labels are unnamed (LABEL_0 ... LABEL_%d); pass --labels-csv to name them",
                       checkpoint_path, config.num_labels - 1)
    _write_checked(output_dir, converted, config, mean, std)
    return config


def _preset(dataset: str | None) -> DatasetPreset | None:
    if dataset is None:
        return None
    if dataset not in DATASET_PRESETS:
        raise CheckpointError(f"unknown dataset preset {dataset!r}; choose one of {', '.join(DATASET_PRESETS)}")
    return DATASET_PRESETS[dataset]


def _normalisation(path: Any, preset: DatasetPreset | None, mean: float | None, std: float | None) -> tuple[float, float]:
    if mean is not None and std is not None:
        return mean, std
    if preset is not None:
        return (preset.mean if mean is None else mean), (preset.std if std is None else std)
    logger.warning("%s: no --dataset or --mean/--std given: assuming AudioSet's normalisation (mean %g, std %g)",
                   path, AUDIOSET_MEAN, AUDIOSET_STD)
    return (AUDIOSET_MEAN if mean is None else mean), (AUDIOSET_STD if std is None else std)


def _write_checked(output_dir: str | os.PathLike, state: dict[str, torch.Tensor], config: ASTConfig, mean: float,
                   std: float) -> None:
    """Write the checkpoint beside `output_dir`, load it back, then move it into place (never a directory that
    fails to load)."""
    from ast_audio.model.modeling import ASTForAudioClassification

    output_dir = os.fspath(output_dir)
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.", dir=parent)
    try:
        save_safetensors({k: v.float() for k, v in state.items()}, os.path.join(staging, SAFE_WEIGHTS_NAME))
        config.save_pretrained(staging)
        write_preprocessor_config(
            staging, default_preprocessor_config(config.num_mel_bins, config.max_length, mean=mean, std=std)
        )
        ASTForAudioClassification.from_pretrained(staging)  # raises CheckpointError on any mismatch
        os.makedirs(output_dir, exist_ok=True)
        for name in os.listdir(staging):
            os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)

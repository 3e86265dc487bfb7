"""Convert the original research release's .pth state dicts (module.v.*, packed qkv) to the public layout."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

import torch

from ast_audio.model.configuration import ASTConfig
from ast_audio.errors import CheckpointError
from ast_audio.audio.files import read_class_labels
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


def _frames_preference(frames: int) -> tuple[int, int]:
    """Rank frame counts a release model plausibly used: powers of two first (1024, 512, 128), then round ones."""
    if frames & (frames - 1) == 0:
        return (0, frames)
    if frames % 100 == 0:
        return (1, frames)
    if frames % 10 == 0:
        return (2, frames)
    return (3, frames)


def infer_geometry(
    num_patches: int, patch_size: int = 16, num_mel_bins: int = 128, frequency_stride: int | None = None,
    time_stride: int | None = None, max_length: int | None = None,
) -> Geometry:
    """Strides and frame count consistent with `num_patches` patch tokens; given values are kept and checked.

    Several frame counts give the same number of time patches; the most plausible one (a power of two, else a
    round number) is chosen. Without given strides, equal frequency and time strides are assumed, as in
    every released model.
    """
    candidates: list[tuple[tuple, Geometry]] = []
    strides = [frequency_stride] if frequency_stride else range(1, patch_size + 1)
    for f_stride in strides:
        t_stride = time_stride or f_stride
        f_patches = (num_mel_bins - patch_size) // f_stride + 1
        if num_patches % f_patches:
            continue
        t_patches = num_patches // f_patches
        lowest = (t_patches - 1) * t_stride + patch_size
        frames_range = [max_length] if max_length else range(lowest, lowest + t_stride)
        for frames in frames_range:
            if (frames - patch_size) // t_stride + 1 != t_patches:
                continue
            rank = (*_frames_preference(frames), abs(f_stride - 10))
            candidates.append((rank, Geometry(f_stride, t_stride, frames)))
    if not candidates:
        given = {k: v for k, v in dict(frequency_stride=frequency_stride, time_stride=time_stride,
                                       max_length=max_length).items() if v}
        raise CheckpointError(
            f"no patch geometry gives {num_patches} patches for {num_mel_bins} mel bins and {patch_size}x"
            f"{patch_size} patches{' with ' + str(given) if given else ''}; pass the strides and frame count"
        )
    return min(candidates, key=lambda item: item[0])[1]


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


def config_from_original(
    state: dict[str, torch.Tensor], *, num_mel_bins: int = 128, frequency_stride: int | None = None,
    time_stride: int | None = None, max_length: int | None = None, num_attention_heads: int | None = None,
    id2label: dict[int, str] | None = None, layer_norm_eps: float = 1e-12, problem_type: str | None = None,
) -> ASTConfig:
    """An `ASTConfig` for a release state dict (names without ``module.``), inferred from tensor shapes."""
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
        layer_norm_eps=layer_norm_eps,
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
    frequency_stride: int | None = None,
    time_stride: int | None = None,
    max_length: int | None = None,
    num_mel_bins: int = 128,
    num_attention_heads: int | None = None,
    layer_norm_eps: float = 1e-12,
    problem_type: str | None = None,
    mean: float = AUDIOSET_MEAN,
    std: float = AUDIOSET_STD,
) -> ASTConfig:
    """Convert a release .pth into a checkpoint directory that `from_pretrained` loads.

    Writes config.json, model.safetensors and preprocessor_config.json into `output_dir` and returns the
    config. Strides, frame count and label count are inferred from tensor shapes unless given; label names
    come from `labels_csv` (the release's class_labels_indices.csv) when given.
    """
    state = load_weights_file(checkpoint_path)
    state = _unwrap(state)
    id2label = {c.index: c.display_name for c in read_class_labels(labels_csv)} if labels_csv else None
    try:
        config = config_from_original(
            state, num_mel_bins=num_mel_bins, frequency_stride=frequency_stride, time_stride=time_stride,
            max_length=max_length, num_attention_heads=num_attention_heads, id2label=id2label,
            layer_norm_eps=layer_norm_eps, problem_type=problem_type,
        )
        converted = rename_original_state_dict(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{checkpoint_path}: {exc}") from None
    logger.info(
        "%s: %d layers, hidden %d, strides %d/%d, %d frames, %d labels", checkpoint_path, config.num_hidden_layers,
        config.hidden_size, config.frequency_stride, config.time_stride, config.max_length, config.num_labels,
    )
    os.makedirs(output_dir, exist_ok=True)
    save_safetensors({k: v.float() for k, v in converted.items()}, os.path.join(output_dir, SAFE_WEIGHTS_NAME))
    config.save_pretrained(output_dir)
    write_preprocessor_config(
        output_dir, default_preprocessor_config(config.num_mel_bins, config.max_length, mean=mean, std=std)
    )
    return config

"""Starting points for fine-tuning: an AST checkpoint of another geometry, a timm ViT/DeiT file, or scratch.

Position embeddings are adapted as the release does: the patch grid (frequency x time) is cut from the
middle along an axis that shrinks and bilinearly interpolated along one that grows.
"""

from __future__ import annotations

import logging
import math
import os

import torch

from ast_audio.checkpoints.release import rename_original_state_dict
from ast_audio.errors import CheckpointError
from ast_audio.model.modeling import ASTForAudioClassification
from ast_audio.checkpoints.pretrained import load_checkpoint_state, load_state_dict_into_model
from ast_audio.checkpoints.files import load_weights_file

logger = logging.getLogger(__name__)

POSITION_KEY = "audio_spectrogram_transformer.embeddings.position_embeddings"


def _fit_axis(grid: torch.Tensor, axis: int, size: int) -> torch.Tensor:
    """Cut `grid` (1, D, F, T) from the middle along `axis` (2 or 3) or interpolate it up to `size`."""
    current = grid.shape[axis]
    if size == current:
        return grid
    if size < current:
        start = current // 2 - size // 2
        return grid.narrow(axis, start, size)
    target = (size, grid.shape[3]) if axis == 2 else (grid.shape[2], size)
    return torch.nn.functional.interpolate(grid, size=target, mode="bilinear")


def adapt_position_embeddings(
    position_embeddings: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], tokens: int = 2
) -> torch.Tensor:
    """(1, tokens + F*T, D) position embeddings for an (F, T) patch grid -> for an (F', T') grid.

    The token embeddings are kept; time is adapted first, then frequency, as in the release.
    """
    (old_f, old_t), (new_f, new_t) = old_grid, new_grid
    dim = position_embeddings.shape[-1]
    if position_embeddings.shape[1] != tokens + old_f * old_t:
        raise CheckpointError(
            f"position embeddings hold {position_embeddings.shape[1]} positions, expected {tokens} + {old_f}x{old_t}"
        )
    head = position_embeddings[:, :tokens]
    grid = position_embeddings[:, tokens:].reshape(1, old_f, old_t, dim).permute(0, 3, 1, 2).float()
    grid = _fit_axis(grid, 3, new_t)
    grid = _fit_axis(grid, 2, new_f)
    patches = grid.permute(0, 2, 3, 1).reshape(1, new_f * new_t, dim).to(position_embeddings.dtype)
    return torch.cat([head, patches], dim=1)


def init_from_ast(model: ASTForAudioClassification, checkpoint: str | os.PathLike, **hub_kwargs) -> dict:
    """Load an AST checkpoint into `model` whatever its input length, strides or label count.

    The encoder is copied, the position embeddings adapted to the model's patch grid, and the head kept only
    when its label count matches (else it is re-initialised, with a warning).
    """
    source_config, state, name = load_checkpoint_state(checkpoint, **hub_kwargs)
    config = model.config
    if (source_config.hidden_size, source_config.num_hidden_layers, source_config.patch_size) != (
        config.hidden_size, config.num_hidden_layers, config.patch_size
    ):
        raise CheckpointError(
            f"{name}: encoder of hidden size {source_config.hidden_size}, {source_config.num_hidden_layers} layers, "
            f"patch {source_config.patch_size} cannot initialise a model of {config.hidden_size}, "
            f"{config.num_hidden_layers} layers, patch {config.patch_size}"
        )
    if POSITION_KEY in state:
        old = (source_config.frequency_patches, source_config.time_patches)
        new = (config.frequency_patches, config.time_patches)
        if old != new:
            logger.info("%s: adapting position embeddings from a %dx%d to a %dx%d patch grid", name, *old, *new)
            state[POSITION_KEY] = adapt_position_embeddings(state[POSITION_KEY], old, new)
    return load_state_dict_into_model(model, state, ignore_mismatched_sizes=True, source=name)


def init_from_timm(model: ASTForAudioClassification, path: str | os.PathLike) -> dict:
    """ImageNet initialisation from a timm ViT/DeiT checkpoint file (e.g. deit_base_distilled_patch16_384).

    The RGB patch kernel is summed to one channel, the square position grid cut or interpolated to the audio
    patch grid; a ViT without a distillation token gets a copy of its CLS token.
    """
    state = load_weights_file(path)
    for key in ("model", "state_dict"):
        if isinstance(state.get(key), dict):
            state = state[key]
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if "pos_embed" not in state or "patch_embed.proj.weight" not in state:
        raise CheckpointError(f"{path}: not a timm ViT/DeiT checkpoint (no pos_embed / patch_embed.proj.weight)")
    config = model.config
    tokens = 2 if "dist_token" in state else 1
    position = state["pos_embed"]
    side = math.isqrt(position.shape[1] - tokens)
    if side * side != position.shape[1] - tokens:
        raise CheckpointError(f"{path}: position embeddings of {position.shape[1]} positions are not a square grid")
    if tokens == 1:
        state["dist_token"] = state["cls_token"].clone()
        position = torch.cat([position[:, :1], position[:, :1], position[:, 1:]], dim=1)
    state["pos_embed"] = adapt_position_embeddings(
        position, (side, side), (config.frequency_patches, config.time_patches)
    )
    kernel = state["patch_embed.proj.weight"]
    if kernel.shape[-1] != config.patch_size:
        raise CheckpointError(f"{path}: {kernel.shape[-1]}x{kernel.shape[-1]} patches, the model uses {config.patch_size}")
    state["patch_embed.proj.weight"] = kernel.sum(dim=1, keepdim=True)
    renamed = rename_original_state_dict({f"v.{k}": v for k, v in state.items() if not k.startswith(("head", "fc_norm"))})
    return load_state_dict_into_model(model, renamed, ignore_mismatched_sizes=False, source=os.fspath(path))

"""from_pretrained / save_pretrained: checkpoints in the public Hugging Face layout."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from ast_audio.model.configuration import CONFIG_FIELDS, ASTConfig
from ast_audio.errors import CheckpointError, CheckpointNotFoundError, ConfigError
from ast_audio.hub import resolve_file
from ast_audio.checkpoints.files import (
    PT_WEIGHTS_INDEX_NAME,
    PT_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    load_weights_file,
    read_shard_index,
    save_safetensors,
    save_torch_pickle,
)

logger = logging.getLogger(__name__)

def resolve_dtype(dtype: str | torch.dtype | None, config: ASTConfig, state_dict: dict[str, torch.Tensor]) -> torch.dtype:
    """float32 by default; "auto" takes the checkpoint's dtype; names like "bfloat16" or torch dtypes as given."""
    if dtype is None:
        return torch.float32
    if dtype == "auto":
        if config.dtype:
            return resolve_dtype(str(config.dtype).replace("torch.", ""), config, state_dict)
        floating = [t.dtype for t in state_dict.values() if t.is_floating_point()]
        return floating[0] if floating else torch.float32
    if isinstance(dtype, str):
        candidate = getattr(torch, dtype.replace("torch.", ""), None)
        if not isinstance(candidate, torch.dtype) or not candidate.is_floating_point:
            raise ConfigError(f"dtype {dtype!r} is not a floating point torch dtype (float32, float16, bfloat16, ...)")
        return candidate
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    raise ConfigError(f"dtype must be a floating point torch dtype, a dtype name or 'auto', got {dtype!r}")


def _weight_files(name: str, hub_kwargs: dict[str, Any]) -> list[str]:
    """Local paths of the checkpoint's weight files: safetensors first, then pickles, sharded or not."""
    for single, index in ((SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME), (PT_WEIGHTS_NAME, PT_WEIGHTS_INDEX_NAME)):
        path = resolve_file(name, single, required=False, **hub_kwargs)
        if path:
            return [path]
        index_path = resolve_file(name, index, required=False, **hub_kwargs)
        if index_path:
            return [resolve_file(name, shard, **hub_kwargs) for shard in read_shard_index(index_path)]
    raise CheckpointNotFoundError(f"{name}: no {SAFE_WEIGHTS_NAME} or {PT_WEIGHTS_NAME} in the checkpoint")


def load_state_dict_files(paths: list[str]) -> dict[str, torch.Tensor]:
    state_dict: dict[str, torch.Tensor] = {}
    for path in paths:
        state_dict.update(load_weights_file(path))
    return state_dict


def load_checkpoint_state(
    name: str | os.PathLike, **hub_kwargs: Any
) -> tuple[ASTConfig, dict[str, torch.Tensor], str]:
    """A checkpoint's config, its tensors and a name for messages, without building a model."""
    name = os.fspath(name)
    config = ASTConfig.from_pretrained(name, **hub_kwargs)
    paths = _weight_files(name, hub_kwargs)
    return config, load_state_dict_files(paths), paths[0] if len(paths) == 1 else name


def _align_prefix(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Let a base-model checkpoint load into a head model and the other way round."""
    prefix = getattr(model, "base_model_prefix", "") + "."
    model_has_prefix = hasattr(model, prefix[:-1])
    ckpt_has_prefix = any(key.startswith(prefix) for key in state_dict)
    if model_has_prefix and not ckpt_has_prefix:
        return {prefix + key: value for key, value in state_dict.items()}
    if not model_has_prefix and ckpt_has_prefix:
        head = [key for key in state_dict if not key.startswith(prefix)]
        if head:
            logger.info("not loading the checkpoint's head tensors into the base model: %s", ", ".join(head))
        return {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
    return state_dict


def load_state_dict_into_model(
    model: torch.nn.Module, state_dict: dict[str, torch.Tensor], ignore_mismatched_sizes: bool = False,
    source: str = "checkpoint",
) -> dict[str, list[str]]:
    """Copy `state_dict` into `model`; initialise what is missing or (if allowed) of another shape.

    Returns the names that were missing, unexpected and mismatched. Raises `CheckpointError` naming every
    mismatched tensor and both shapes when `ignore_mismatched_sizes` is False.
    """
    state_dict = _align_prefix(model, state_dict)
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [
        key for key in expected if key in state_dict and tuple(state_dict[key].shape) != tuple(expected[key].shape)
    ]
    if mismatched and not ignore_mismatched_sizes:
        details = "; ".join(
            f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model {tuple(expected[key].shape)}" for key in mismatched
        )
        if all(key.startswith("classifier.") for key in mismatched):
            hint = "the checkpoint has another number of labels; pass ignore_mismatched_sizes=True for a new head"
        else:
            hint = "the config does not describe this checkpoint (hidden size, strides, max_length or mel bins)"
        raise CheckpointError(f"{source}: tensor shapes differ from the model ({details}); {hint}")

    to_initialise = set(missing) | set(mismatched)
    owners = {key.rsplit(".", 1)[0] for key in to_initialise}
    for owner in sorted(owners):
        model.init_module(model.get_submodule(owner))
    loadable = {key: value for key, value in state_dict.items() if key in expected and key not in to_initialise}
    model.load_state_dict(loadable, strict=False)

    if missing:
        logger.warning("%s: newly initialised (not in the checkpoint): %s", source, ", ".join(missing))
    if mismatched:
        logger.warning(
            "%s: re-initialised because shapes differ: %s", source,
            ", ".join(f"{k} {tuple(state_dict[k].shape)} -> {tuple(expected[k].shape)}" for k in mismatched),
        )
    if unexpected:
        logger.warning("%s: unused tensors in the checkpoint: %s", source, ", ".join(unexpected))
    return {"missing_keys": missing, "unexpected_keys": unexpected, "mismatched_keys": mismatched}


def _resolve_config(
    name: str, config: ASTConfig | str | os.PathLike | None, hub_kwargs: dict[str, Any],
    config_overrides: dict[str, Any],
) -> ASTConfig:
    """The config to build the model with: `config` as given (an ASTConfig, or a directory / Hub id to read
    it from), else the checkpoint's own config.json; `config_overrides` applied to it.

    A directory with weights but no config.json is what `transformers.Trainer.save_model` writes for a model
    that is not a transformers `PreTrainedModel`; the error says to pass `config=`."""
    if isinstance(config, ASTConfig):
        return ASTConfig.from_dict(config.to_dict(), **config_overrides) if config_overrides else config.copy()
    if config is not None:
        shared = {key: hub_kwargs[key] for key in ("cache_dir", "local_files_only", "token")}
        return ASTConfig.from_pretrained(os.fspath(config), **shared, **config_overrides)
    try:
        return ASTConfig.from_pretrained(name, **hub_kwargs, **config_overrides)
    except CheckpointNotFoundError:
        if resolve_file(name, SAFE_WEIGHTS_NAME, required=False, **hub_kwargs) is None:
            raise
    raise CheckpointNotFoundError(
        f"{name}: has {SAFE_WEIGHTS_NAME} but no config.json (transformers.Trainer saves only the weights of a "
        "model that is not a transformers PreTrainedModel); pass config= (the fine-tuned model's config, or the "
        "checkpoint it started from), or save with model.save_pretrained(dir)"
    ) from None


def load_pretrained(
    cls: type,
    pretrained_model_name_or_path: str | os.PathLike,
    *,
    config: ASTConfig | str | os.PathLike | None = None,
    dtype: str | torch.dtype | None = None,
    torch_dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    attn_implementation: str = "sdpa",
    ignore_mismatched_sizes: bool = False,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    subfolder: str = "",
    output_loading_info: bool = False,
    **config_overrides: Any,
):
    unknown = sorted(set(config_overrides) - CONFIG_FIELDS)
    if unknown:
        raise TypeError(f"{cls.__name__}.from_pretrained() got unexpected keyword arguments: {', '.join(unknown)}")
    name = os.fspath(pretrained_model_name_or_path)
    hub_kwargs = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token,
                      subfolder=subfolder)
    config = _resolve_config(name, config, hub_kwargs, config_overrides)
    paths = _weight_files(name, hub_kwargs)
    state_dict = load_state_dict_files(paths)
    target_dtype = resolve_dtype(dtype if dtype is not None else torch_dtype, config, state_dict)

    with torch.device("meta"):
        model = cls(config, attn_implementation=attn_implementation)
    model.to_empty(device="cpu")
    source = paths[0] if len(paths) == 1 else name
    info = load_state_dict_into_model(model, state_dict, ignore_mismatched_sizes, source=source)
    del state_dict
    model.to(dtype=target_dtype)
    if device is not None:
        model.to(device)
    model.eval()
    return (model, info) if output_loading_info else model


def save_pretrained(model: torch.nn.Module, save_directory: str | os.PathLike, safe_serialization: bool = True) -> None:
    """Write config.json and the weights into `save_directory`; each file is replaced atomically."""
    os.makedirs(save_directory, exist_ok=True)
    config = model.config.copy()
    config.architectures = [type(model).__name__]
    config.dtype = str(model.dtype).replace("torch.", "")
    state_dict = model.state_dict()
    if safe_serialization:
        save_safetensors(state_dict, os.path.join(save_directory, SAFE_WEIGHTS_NAME))
    else:
        save_torch_pickle(state_dict, os.path.join(save_directory, PT_WEIGHTS_NAME))
    config.save_pretrained(save_directory)

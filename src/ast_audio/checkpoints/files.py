"""Reading and writing weight files (safetensors, PyTorch pickles, sharded indexes) with clear errors."""

from __future__ import annotations

import json
import os

import torch

from ast_audio.errors import CheckpointError
from ast_audio.io_utils import atomic_path

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PT_WEIGHTS_NAME = "pytorch_model.bin"
PT_WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(os.fspath(path))
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({exc})") from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot read safetensors file ({exc})") from None


def load_torch_pickle(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a PyTorch state dict with ``weights_only=True`` (no arbitrary code from the file is run)."""
    try:
        obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read weights file ({exc})") from None
    except Exception as exc:  # garbage bytes can make the unpickler raise almost anything
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable PyTorch weights file (corrupt, truncated, or holding more than tensors: "
            f"{reason})"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    return obj


def load_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load one weights file, choosing the reader by extension (.safetensors, else a torch pickle)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such weights file")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: empty weights file")
    if path.endswith(".safetensors"):
        return load_safetensors(path)
    return load_torch_pickle(path)


def read_shard_index(path: str | os.PathLike) -> list[str]:
    """The shard file names listed by a ``*.index.json`` file, in order of first appearance."""
    try:
        with open(path, encoding="utf-8") as handle:
            weight_map = json.load(handle)["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a valid shard index ({exc})") from None
    return list(dict.fromkeys(weight_map.values()))


def save_safetensors(state_dict: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write tensors as safetensors with the ``format: pt`` metadata the public loaders look for."""
    from safetensors.torch import save_file

    tensors = {name: tensor.detach().contiguous() for name, tensor in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})


def save_torch_pickle(state_dict: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        torch.save({name: tensor.detach().contiguous() for name, tensor in state_dict.items()}, tmp)

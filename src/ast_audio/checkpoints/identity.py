"""Which model made an output: a checkpoint's resolved location and a fingerprint of its content.

A resumed job compares these (`jobs.comparison.option_differences`), so `--model ./tiny` and `--model tiny`
are the same model, and a `tiny` that is another checkpoint (another folder, or retrained in place) is not.
A leaf module: no torch, so building a job's options stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import os

# The files of a checkpoint directory that decide its numbers: its configs, and the weights the loader reads
# (`checkpoints.pretrained`: model.safetensors, else its shards, else pytorch_model.bin, else its shards); an
# ONNX file only for the backend that runs it. Other files (last.pt, logs, metrics) change nothing.
_CONFIG_NAMES = ("config.json", "preprocessor_config.json")
_WEIGHTS = (("model.safetensors", "model.safetensors.index.json"),
            ("pytorch_model.bin", "pytorch_model.bin.index.json"))


def model_location(model: str) -> str:
    """The absolute path of a checkpoint on disk (symlinks followed, `~` expanded), else the Hub id as given."""
    expanded = os.path.expanduser(model)
    return os.path.realpath(expanded) if os.path.exists(expanded) else model


def model_fingerprint(model: str, onnx_file: str | None = None) -> str | None:
    """The SHA-256 (hex) of the names and bytes of the files that decide a checkpoint's numbers: its configs and
    the weights the loader reads, and `onnx_file` (e.g. "model.onnx") for the onnxruntime backend; of a
    directory, of a weight file itself, or of a Hub id's cached snapshot. None when there is nothing to read (a
    Hub id not in the cache, a path that does not exist). Reads every weight byte (about 0.15 s per 100 MB on
    one core): a checkpoint copied elsewhere keeps its fingerprint, one retrained in place does not."""
    path = os.path.expanduser(model)
    if not os.path.exists(path):
        path = _cached_snapshot(model)
        if path is None:
            return None
    files = [path] if os.path.isfile(path) else _checkpoint_files(path, onnx_file)
    digest = hashlib.sha256()
    try:
        for file in files:
            digest.update(os.path.basename(file).encode("utf-8", "surrogateescape") + b"\0")
            with open(file, "rb") as handle:
                digest.update(hashlib.file_digest(handle, "sha256").digest())
    except OSError:
        return None  # unreadable: the model load that follows says why
    return digest.hexdigest()


def _checkpoint_files(folder: str, onnx_file: str | None) -> list[str]:
    """The files of checkpoint `folder` that `model_fingerprint` reads, those present, in a fixed order."""
    names = list(_CONFIG_NAMES)
    for single, index in _WEIGHTS:
        if os.path.isfile(os.path.join(folder, single)):
            names.append(single)
            break
        if os.path.isfile(os.path.join(folder, index)):
            names += [index, *_shards(os.path.join(folder, index))]
            break
    if onnx_file:
        names.append(onnx_file)
    return [os.path.join(folder, name) for name in names if os.path.isfile(os.path.join(folder, name))]


def _shards(index: str) -> list[str]:
    """The shard files a sharded checkpoint's index names (none when it cannot be read: the load says why)."""
    try:
        with open(index, encoding="utf-8") as handle:
            return sorted(set(json.load(handle)["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def model_identity(model: str, onnx_file: str | None = None) -> dict[str, str]:
    """{"model": `model_location`, "model_fingerprint": `model_fingerprint`} (no fingerprint key when there is
    none), the keys a job's recorded options hold."""
    fingerprint = model_fingerprint(model, onnx_file)
    identity = {"model": model_location(model)}
    if fingerprint is not None:
        identity["model_fingerprint"] = fingerprint
    return identity


def _cached_snapshot(repo_id: str) -> str | None:
    """The folder of a Hub repo's cached snapshot (the one holding its config.json), touching no network."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # not a valid repo id, or huggingface_hub missing: nothing cached to read
        return None
    return os.path.dirname(cached) if isinstance(cached, str) else None

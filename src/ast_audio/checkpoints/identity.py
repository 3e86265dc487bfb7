"""Which model made an output: a checkpoint's resolved location and a fingerprint of its content.

A resumed job compares these (`jobs.comparison.option_differences`), so `--model ./tiny` and `--model tiny`
are the same model, and a `tiny` that is another checkpoint (another folder, or retrained in place) is not.
A leaf module: no torch, so building a job's options stays cheap.
"""

from __future__ import annotations

import hashlib
import os

# The files of a checkpoint directory that decide its numbers: its configs, and weights by extension (an ONNX
# export added later, training logs and the like do not change the torch model's numbers).
_CONFIG_NAMES = ("config.json", "preprocessor_config.json", "model.safetensors.index.json",
                 "pytorch_model.bin.index.json")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


def model_location(model: str) -> str:
    """The absolute path of a checkpoint on disk (symlinks followed, `~` expanded), else the Hub id as given."""
    expanded = os.path.expanduser(model)
    return os.path.realpath(expanded) if os.path.exists(expanded) else model


def model_fingerprint(model: str) -> str | None:
    """The SHA-256 (hex) of the names and bytes of a checkpoint's configs and weight files: of a directory
    (its top-level files), of a weight file itself, or of a Hub id's cached snapshot. None when there is nothing
    to read (a Hub id not in the cache, a path that does not exist). Reads every weight byte (about 0.2 s per
    100 MB): a checkpoint copied elsewhere keeps its fingerprint, one retrained in place does not."""
    path = os.path.expanduser(model)
    if not os.path.exists(path):
        path = _cached_snapshot(model)
        if path is None:
            return None
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(path, name) for name in os.listdir(path)
        if (name in _CONFIG_NAMES or name.endswith(_WEIGHT_SUFFIXES)) and os.path.isfile(os.path.join(path, name)))
    digest = hashlib.sha256()
    try:
        for file in files:
            digest.update(os.path.basename(file).encode("utf-8", "surrogateescape") + b"\0")
            with open(file, "rb") as handle:
                digest.update(hashlib.file_digest(handle, "sha256").digest())
    except OSError:
        return None  # unreadable: the model load that follows says why
    return digest.hexdigest()


def model_identity(model: str) -> dict[str, str]:
    """{"model": `model_location`, "model_fingerprint": `model_fingerprint`} (no fingerprint key when there is
    none), the keys a job's recorded options hold."""
    fingerprint = model_fingerprint(model)
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

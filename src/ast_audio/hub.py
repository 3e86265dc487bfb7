"""Finding checkpoint files: in a local directory, or on the Hugging Face Hub through huggingface_hub's cache."""

from __future__ import annotations

import contextlib
import logging
import os

from ast_audio.errors import CheckpointNotFoundError


def _looks_like_local_path(name: str) -> bool:
    """Hub ids are 'name' or 'owner/name'; anything with more parts, a drive or a leading ./ or ~ is a path."""
    return (
        name.startswith((".", "/", "~", "\\"))
        or os.path.isabs(name)
        or name.count("/") > 1
        or "\\" in name
        or os.path.exists(name)
    )


def resolve_file(
    name_or_path: str | os.PathLike,
    filename: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    required: bool = True,
) -> str | None:
    """Return the local path of `filename` in a checkpoint directory or Hub repo.

    Returns None when `required` is False and the checkpoint exists but lacks the file. Raises
    `CheckpointNotFoundError` with a one-line explanation when the directory or Hub repo cannot be reached.
    """
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        path = os.path.join(name, filename)
        if os.path.isfile(path):
            return path
        if required:
            raise CheckpointNotFoundError(f"{name}: checkpoint directory has no {filename}")
        return None
    if _looks_like_local_path(name):
        raise CheckpointNotFoundError(f"{name}: no such checkpoint directory")
    return _download(name, filename, revision, cache_dir, local_files_only, token, required)


def _download(
    repo_id: str,
    filename: str,
    revision: str | None,
    cache_dir: str | os.PathLike | None,
    local_files_only: bool,
    token: str | bool | None,
    required: bool,
) -> str | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    hint = "pass a local checkpoint directory (config.json + model.safetensors) instead"
    try:
        # The cache first: no network at all when the file is there.
        return hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=True)
    except LocalEntryNotFoundError:
        if local_files_only:
            if not required and _cached_repo_exists(repo_id, revision, cache_dir):
                return None
            raise CheckpointNotFoundError(
                f"could not fetch {filename} of '{repo_id}': offline (local files only) and not in the local "
                f"Hugging Face cache; {hint}"
            ) from None
    except EntryNotFoundError:
        pass
    if not _hub_reachable():
        # Fail in a second instead of after huggingface_hub's retries (about 25 s).
        raise CheckpointNotFoundError(
            f"could not fetch {filename} of '{repo_id}' from the Hugging Face Hub: offline (cannot resolve its "
            f"host) and not in the local cache; {hint}"
        )
    try:
        with _quiet_hub_logging():
            return hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                token=token,
            )
    except LocalEntryNotFoundError:
        # Offline (or local_files_only) and not in the cache.
        if not required and _cached_repo_exists(repo_id, revision, cache_dir):
            return None
        raise CheckpointNotFoundError(
            f"could not fetch {filename} of '{repo_id}' from the Hugging Face Hub: offline or not in the local "
            f"cache; {hint}"
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointNotFoundError(
            f"'{repo_id}' is neither a local directory nor a model on the Hugging Face Hub (unknown id, private "
            f"without a token, or misspelt); {hint}"
        ) from None
    except RevisionNotFoundError:
        raise CheckpointNotFoundError(f"'{repo_id}' has no revision {revision!r} on the Hugging Face Hub") from None
    except EntryNotFoundError:
        if not required:
            return None
        raise CheckpointNotFoundError(f"'{repo_id}' on the Hugging Face Hub has no file {filename}") from None
    except (HfHubHTTPError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointNotFoundError(
            f"could not fetch {filename} of '{repo_id}' from the Hugging Face Hub ({reason}); {hint}"
        ) from None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub's host name resolves (offline machines fail this at once)."""
    import socket
    import urllib.parse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urllib.parse.urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    previous = socket.getdefaulttimeout()
    try:
        socket.setdefaulttimeout(timeout)
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(previous)


@contextlib.contextmanager
def _quiet_hub_logging():
    """huggingface_hub logs every retry as a warning; our own error says what went wrong once."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)


def _cached_repo_exists(repo_id: str, revision: str | None, cache_dir: str | os.PathLike | None) -> bool:
    """Whether some file of this repo is in the local cache (so a missing optional file is just absent)."""
    from huggingface_hub import try_to_load_from_cache

    for probe in ("config.json",):
        found = try_to_load_from_cache(repo_id, probe, cache_dir=cache_dir, revision=revision)
        if isinstance(found, str):
            return True
    return False

"""Hub access: finding checkpoint files in a local directory, or on the Hugging Face Hub through huggingface_hub's
cache. A leaf module: the model, the feature extractor, checkpoints and the classifier all resolve files here."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from typing import Any

from ast_audio.errors import CheckpointNotFoundError, ConfigError


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
    subfolder: str = "",
) -> str | None:
    """Return the local path of `filename` in a checkpoint directory or Hub repo (in its `subfolder`).

    Returns None when `required` is False and the checkpoint exists but lacks the file. Raises
    `CheckpointNotFoundError` with a one-line explanation when the directory or Hub repo cannot be reached.
    """
    name = os.fspath(name_or_path)
    if subfolder:
        filename = f"{subfolder.strip('/')}/{filename}"  # the Hub's path in the repo; a relative path on disk
    if os.path.isdir(name):
        path = os.path.join(name, filename)
        if os.path.isfile(path):
            return path
        if required:
            raise CheckpointNotFoundError(_missing_file_message(name, filename))
        return None
    if _looks_like_local_path(name):
        raise CheckpointNotFoundError(f"{name}: no such checkpoint directory")
    return _download(name, filename, revision, cache_dir, local_files_only, token, required)


TRAINING_RUN_CHECKPOINTS = ("best", "final", "averaged")  # what `ast-audio train` writes into its output folder


def _missing_file_message(directory: str, filename: str) -> str:
    """Why `directory` lacks `filename`: a training run's folder names the checkpoints it holds (best/, final/),
    since those are what the loaders want; any other directory simply lacks the file."""
    held = [sub for sub in TRAINING_RUN_CHECKPOINTS if os.path.isfile(os.path.join(directory, sub, filename))]
    if held:
        paths = [os.path.join(directory, sub) for sub in held]
        choices = " or ".join([", ".join(paths[:-1]), paths[-1]] if len(paths) > 1 else paths)
        return f"{directory} is a training run's folder: pass {choices}"
    return f"{directory}: checkpoint directory has no {filename}"


def read_json_object(path: str | os.PathLike) -> dict:
    """A JSON file that must hold an object; `ConfigError` naming the file otherwise."""
    import json

    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def resolve_json(name_or_path: str | os.PathLike, filename: str, **hub_kwargs) -> tuple[str, dict]:
    """(path, contents) of `filename` in a checkpoint directory or Hub repo, or of the JSON file given itself."""
    if os.path.isfile(name_or_path):
        path = os.fspath(name_or_path)
    else:
        path = resolve_file(name_or_path, filename, **hub_kwargs)
    return path, read_json_object(path)


def build_from_json(build: Any, name_or_path: str | os.PathLike, filename: str, overrides: dict[str, Any],
                    **hub_kwargs: Any) -> Any:
    """`build(settings, **overrides)` on a checkpoint's JSON file; errors name the file."""
    path, settings = resolve_json(name_or_path, filename, **hub_kwargs)
    try:
        return build(settings, **overrides)
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


_LOCAL_HINT = (
    "pass a local checkpoint directory (config.json + model.safetensors) instead: copy one from a machine that "
    "reaches the Hub, convert a research release with `ast-audio convert RELEASE.pth DIR`, or build a new one in "
    "Python with `ASTForAudioClassification(ASTConfig(...)).save_pretrained(DIR)` and train it (`ast-audio train`)"
)


@dataclasses.dataclass(frozen=True)
class _HubFile:
    """One file of a Hub repository, and what to say when it cannot be had."""

    repo_id: str
    filename: str
    revision: str | None
    cache_dir: str | os.PathLike | None
    token: str | bool | None
    required: bool

    def from_cache(self) -> str | None:
        """The cached copy's path, touching no network; None when it is not cached."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        try:
            return hf_hub_download(self.repo_id, self.filename, revision=self.revision, cache_dir=self.cache_dir,
                                   local_files_only=True)
        except (LocalEntryNotFoundError, EntryNotFoundError):
            return None

    def missing(self, why: str) -> None:
        """An optional file missing from a cached repo is just absent; anything else cannot be had."""
        if not self.required and _cached_repo_exists(self.repo_id, self.revision, self.cache_dir):
            return None
        raise CheckpointNotFoundError(
            f"could not fetch {self.filename} of '{self.repo_id}' from the Hugging Face Hub: {why} and not in the "
            f"local cache; {_LOCAL_HINT}"
        )

    def fetch(self) -> str | None:
        """Download it, turning each of the Hub's failures into one line that says what to do."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        repo = self.repo_id
        try:
            with _quiet_hub_logging():
                return hf_hub_download(repo, self.filename, revision=self.revision, cache_dir=self.cache_dir,
                                       token=self.token)
        except LocalEntryNotFoundError:
            return self.missing("offline")
        except RepositoryNotFoundError:
            raise CheckpointNotFoundError(
                f"'{repo}' is neither a local directory nor a model on the Hugging Face Hub (unknown id, private "
                f"without a token, or misspelt); {_LOCAL_HINT}"
            ) from None
        except RevisionNotFoundError:
            raise CheckpointNotFoundError(f"'{repo}' has no revision {self.revision!r} on the Hugging Face Hub") from None
        except EntryNotFoundError:
            if not self.required:
                return None
            raise CheckpointNotFoundError(f"'{repo}' on the Hugging Face Hub has no file {self.filename}") from None
        except (HfHubHTTPError, OSError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointNotFoundError(
                f"could not fetch {self.filename} of '{repo}' from the Hugging Face Hub ({reason}); {_LOCAL_HINT}"
            ) from None


def _download(
    repo_id: str,
    filename: str,
    revision: str | None,
    cache_dir: str | os.PathLike | None,
    local_files_only: bool,
    token: str | bool | None,
    required: bool,
) -> str | None:
    """The cache first (no network at all when the file is there), then the Hub unless offline."""
    hub_file = _HubFile(repo_id, filename, revision, cache_dir, token, required)
    cached = hub_file.from_cache()
    if cached is not None:
        return cached
    if local_files_only:
        return hub_file.missing("offline (local files only)")
    if not _hub_reachable():
        # Fail in a second instead of after huggingface_hub's retries (about 25 s).
        return hub_file.missing("offline (cannot resolve its host)")
    return hub_file.fetch()


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
    """Whether the repo's config.json is in the local cache (so a missing optional file is just absent)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache_dir, revision=revision)
    return isinstance(found, str)

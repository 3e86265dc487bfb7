"""Turning what a user points at (files, directories, globs, manifests) into lists of audio files."""

from __future__ import annotations

import csv
import glob
import json
import os
from dataclasses import dataclass, field

from ast_audio.errors import AudioError, ConfigError

AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64", ".rf64",
     ".m4a", ".aac", ".mp4", ".webm", ".wma", ".mka"}
)
_GLOB_CHARS = frozenset("*?[")


def is_audio_file(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in AUDIO_EXTENSIONS


@dataclass
class InputListing:
    """What a list of files, directories and globs expanded to: audio files, and the places that could not be
    read (path, reason), which a job reports as failed items."""

    files: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def scan_inputs(inputs: list[str] | str, recursive: bool = True) -> InputListing:
    """Expand files, directories (searched recursively for audio extensions, following symlinked folders
    once each) and glob patterns, in order. A file named explicitly is kept whatever its extension; a path
    that does not exist and matches no glob raises `AudioError` naming it."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    listing = InputListing()
    for item in map(os.fspath, inputs):
        if os.path.isfile(item):
            listing.files.append(item)
        elif os.path.isdir(item):
            _walk(item, recursive, listing)
        elif _GLOB_CHARS & set(item):
            matches = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            listing.files.extend(p for p in matches if is_audio_file(p))
        elif os.path.lexists(item):
            listing.problems.append((item, "a broken link" if os.path.islink(item) else "not a file or directory"))
        else:
            raise AudioError(f"{item}: no such file or directory")
    listing.files = list(dict.fromkeys(listing.files))
    return listing


def _walk(top: str, recursive: bool, listing: InputListing) -> None:
    """Audio files below `top`; symlinked folders are followed, each real folder visited once (no loops)."""
    visited: set[str] = set()

    def unreadable(error: OSError) -> None:
        reason = "permission denied" if isinstance(error, PermissionError) else (error.strerror or str(error))
        listing.problems.append((error.filename or top, f"folder cannot be read ({reason})"))

    for root, dirs, files in os.walk(top, onerror=unreadable, followlinks=True):
        real = os.path.realpath(root)
        if real in visited:  # a link back up the tree, or a second link to the same folder
            dirs.clear()
            continue
        visited.add(real)
        dirs.sort()
        listing.files.extend(os.path.join(root, name) for name in sorted(files) if is_audio_file(name))
        if not recursive:
            break


def find_audio_files(inputs: list[str] | str, recursive: bool = True) -> list[str]:
    """The audio files that `scan_inputs` finds (folders that cannot be read are skipped; use `scan_inputs`
    to report them)."""
    return scan_inputs(inputs, recursive).files


@dataclass
class ManifestEntry:
    """One clip of a manifest: its path and its label names (empty when the manifest has none)."""

    path: str
    labels: list[str] = field(default_factory=list)


def _resolve(path: str, base: str) -> str:
    if os.path.isabs(path) or os.path.exists(path):
        return path
    return os.path.join(base, path)


def read_manifest(manifest: str) -> list[ManifestEntry]:
    """Read a clip list: the release's JSON ({"data": [{"wav": path, "labels": "a,b"}]}), a CSV
    (path,label[,label...], with or without a header), or a text file with one path per line.

    Relative paths are taken relative to the manifest's folder when they do not exist from the working one.
    """
    base = os.path.dirname(os.path.abspath(manifest))
    try:
        with open(manifest, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise AudioError(f"{manifest}: cannot read manifest ({exc})") from None
    entries: list[ManifestEntry] = []
    if manifest.lower().endswith(".json"):
        try:
            data = json.loads(text)["data"]
            for item in data:
                labels = [label for label in str(item.get("labels", "")).split(",") if label]
                entries.append(ManifestEntry(_resolve(item["wav"], base), labels))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise AudioError(
                f"{manifest}: expected the release's JSON manifest {{\"data\": [{{\"wav\": ..., \"labels\": ...}}]}} "
                f"({type(exc).__name__}: {exc})"
            ) from None
    elif manifest.lower().endswith(".csv"):
        rows = [row for row in csv.reader(text.splitlines()) if row and any(cell.strip() for cell in row)]
        if rows and rows[0][0].strip().lower() in ("path", "wav", "file", "filename", "audio"):
            rows = rows[1:]
        for row in rows:
            labels = [cell.strip() for cell in row[1:] if cell.strip()]
            entries.append(ManifestEntry(_resolve(row[0].strip(), base), labels))
    else:
        for line in text.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                entries.append(ManifestEntry(_resolve(line.strip(), base)))
    if not entries:
        raise AudioError(f"{manifest}: the manifest lists no audio files")
    return entries


@dataclass
class ClassLabel:
    """One row of the release's class_labels_indices.csv."""

    index: int
    mid: str
    display_name: str


def read_class_labels(path: str | os.PathLike) -> list[ClassLabel]:
    """The rows of a class_labels_indices.csv (columns index, mid, display_name), in index order.

    Indices must run 0..n-1 without gaps: they are the model's output positions.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read the class labels CSV ({exc})") from None
    if not rows or not {"index", "mid", "display_name"} <= set(rows[0]):
        raise ConfigError(f"{path}: expected a CSV with columns index, mid, display_name")
    try:
        labels = sorted((ClassLabel(int(r["index"]), r["mid"], r["display_name"]) for r in rows), key=lambda c: c.index)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: the index column must hold integers ({exc})") from None
    if [label.index for label in labels] != list(range(len(labels))):
        raise ConfigError(f"{path}: indices must run 0..{len(labels) - 1} without gaps or repeats")
    return labels

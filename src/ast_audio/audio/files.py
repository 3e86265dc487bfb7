"""Turning what a user points at (files, directories, globs, manifests) into lists of audio files."""

from __future__ import annotations

import csv
import glob
import importlib.util
import io
import json
import os
import re
from dataclasses import dataclass, field

from ast_audio.errors import AudioError

# What libsndfile reads (1.1 and later: MP3 and Opus too), and what FFmpeg (through PyAV) reads besides:
# audio formats, and the phone, camera and web containers that hold audio.
SOUNDFILE_EXTENSIONS = frozenset(
    {".wav", ".wave", ".bwf", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd",
     ".caf", ".w64", ".rf64"}
)
PYAV_EXTENSIONS = frozenset(
    {".m4a", ".m4b", ".m4r", ".mp4", ".m4v", ".aac", ".3gp", ".3g2", ".mov", ".mkv", ".mka", ".webm", ".wma",
     ".asf", ".wmv", ".amr", ".awb", ".ac3", ".eac3", ".mp2", ".mpga", ".avi", ".flv", ".ts", ".mts", ".m2ts",
     ".mpg", ".mpeg", ".wv", ".ape", ".tta", ".spx", ".ogv"}
)
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS | (PYAV_EXTENSIONS if importlib.util.find_spec("av") else frozenset())
_GLOB_CHARS = frozenset("*?[")


def is_audio_file(path: str) -> bool:
    """Whether a folder scan takes `path`: its extension is one the installed decoders read."""
    return os.path.splitext(path)[1].lower() in AUDIO_EXTENSIONS


@dataclass
class InputListing:
    """What a list of files, directories and globs expanded to: audio files; the places that could not be
    read or do not exist (path, reason), which a job reports as failed items; and the files a folder or glob
    held that are not audio by their extension (skipped, counted in a job's summary)."""

    files: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        """The inputs that do not exist."""
        return [path for path, reason in self.problems if reason == MISSING]

    def require_some(self, inputs: list[str]) -> None:
        """Raise `AudioError` when there is nothing to do at all: no audio file, and no input that exists."""
        if self.files or len(self.missing) < len(self.problems):
            return
        if self.missing:
            more = f" (and {len(self.missing) - 1} more)" if len(self.missing) > 1 else ""
            raise AudioError(f"{self.missing[0]}: {MISSING}{more}")
        raise AudioError(f"no audio files found in {', '.join(map(os.fspath, inputs))}")


MISSING = "no such file or directory"


def scan_inputs(inputs: list[str] | str, recursive: bool = True) -> InputListing:
    """Expand files, directories (searched recursively for audio extensions, following symlinked folders
    once each) and glob patterns, in order. A file named explicitly is kept whatever its extension; a path
    that does not exist and matches no glob is a problem ("no such file or directory"), as is an unreadable
    folder."""
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
            listing.skipped.extend(p for p in matches if not is_audio_file(p))
        elif os.path.lexists(item):
            listing.problems.append((item, "a broken link" if os.path.islink(item) else "not a file or directory"))
        else:
            listing.problems.append((item, MISSING))
    listing.files = list(dict.fromkeys(listing.files))
    listing.skipped = list(dict.fromkeys(listing.skipped))
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
        for name in sorted(files):
            (listing.files if is_audio_file(name) else listing.skipped).append(os.path.join(root, name))
        if not recursive:
            break


def find_audio_files(inputs: list[str] | str, recursive: bool = True) -> list[str]:
    """The audio files that `scan_inputs` finds (folders that cannot be read are skipped; use `scan_inputs`
    to report them). Raises `AudioError` naming an input that does not exist."""
    listing = scan_inputs(inputs, recursive)
    if listing.missing:
        raise AudioError(f"{listing.missing[0]}: {MISSING}")
    return listing.files


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
        # surrogateescape: a listed name that is not valid UTF-8 stays the bytes it is
        with open(manifest, encoding="utf-8", errors="surrogateescape", newline="") as handle:
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
        rows = [row for row in csv.reader(io.StringIO(text, newline="")) if row and any(cell.strip() for cell in row)]
        if rows and rows[0][0].strip().lower() in ("path", "wav", "file", "filename", "audio"):
            rows = rows[1:]
        for row in rows:
            labels = [cell.strip() for cell in row[1:] if cell.strip()]
            entries.append(ManifestEntry(_resolve(row[0].strip(), base), labels))
    else:
        for line in re.split(r"\r\n|\r|\n", text):  # not splitlines(): a name may hold U+0085 or U+2028
            if line.strip() and not line.lstrip().startswith("#"):
                entries.append(ManifestEntry(_resolve(line.strip(), base)))
    if not entries:
        raise AudioError(f"{manifest}: the manifest lists no audio files")
    return entries

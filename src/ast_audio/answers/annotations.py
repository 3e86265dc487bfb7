"""Time-stamped annotations read from the files people make them in, and matched to audio files by name.

Three formats, told apart by content (not by extension, since Raven and Audacity both write `.txt`):

- **Raven selection table**: a tab-separated header with `Begin Time (s)` (read by `formats.read_raven`:
  extra columns, a `Begin Path`/`Begin File` column for tables over several files, a label column named
  `Annotation`, `Label`, `Species`, ...).
- **CSV / TSV with onset and offset** (DCASE's metadata format: `filename`, `onset`, `offset`,
  `event_label`): a header line naming at least an onset, an offset and a label column; separated by tabs
  if the header has a tab, else by semicolons if it has a semicolon and no comma, else by commas (quoted
  fields as the csv module reads them). Header names are matched case-insensitively, spaces and
  underscores alike, among `CSV_COLUMNS` (e.g. `onset`/`event_onset`/`start`/`start_time`/`begin`,
  `offset`/`event_offset`/`end`/`end_time`/`stop`, `event_label`/`label`/`class`/`event`/`species`,
  `filename`/`file`/`audio_filename`/`path`); times may carry an ` (s)` unit. Without a file column, the
  rows belong to the file the annotation file is named after. A row with a file name and empty onset,
  offset and label (DCASE's way to list a clip without events) marks that file as annotated, with none.
  An annotation file without any row (empty, or a header alone, in any format) marks the file it is named
  after as annotated, with no events: its detections are all false ones.
- **Audacity label track**: `start<TAB>end<TAB>label` lines without header (`formats.read_audacity`;
  frequency lines of the extended format are skipped).

Odd but valid content is read: rows in any order (events come out sorted by start), overlapping events
(kept as they are, also of one label), extra columns, labels the model does not have (kept; counted in
`Annotations.unknown_labels` when the model's labels are given). A bad row (a time that is not a number,
negative, an offset before its onset, an empty label, too many fields) raises `AnnotationError` naming the
file and line.

Matching to audio files (`match_annotations`): an annotation names its file by the table's file column
(CSV `filename`, Raven `Begin Path`/`Begin File`), or else by the annotation file's own name with its
extension and Raven's `.Table.N.selections` suffix removed (`rec01.Table.1.selections.txt` -> `rec01`).
Names are compared by stem (the base name without its last extension; `/` and `\\` both separate
folders), case-insensitively (annotation tools on Windows and macOS do not keep case reliably). When one
stem fits several audio files, the one whose path ends with the annotated path (compared the same way)
is taken; if that does not decide, `AnnotationError` names the annotation file and the candidates. Names
that match no audio file are reported (`Annotations.unmatched`), not fatal.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence

from ast_audio.answers.events import Event
from ast_audio.answers.formats import AnnotationError, read_audacity, read_raven

# Accepted header names per role, compared after `_column_key` (lower case, spaces for underscores, no unit).
CSV_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "filename": ("filename", "file", "file name", "audio filename", "audio file", "filepath", "path", "fname",
                 "begin file", "begin path", "recording"),
    "onset": ("onset", "event onset", "start", "start time", "begin", "begin time", "onset time"),
    "offset": ("offset", "event offset", "end", "end time", "stop", "stop time", "offset time"),
    "event_label": ("event label", "label", "class", "event", "category", "annotation", "species", "tag"),
}
RAVEN_TABLE_SUFFIX = re.compile(r"\.Table\.\d+\.selections$", re.IGNORECASE)


def _column_key(name: str) -> str:
    name = re.sub(r"\s*\((s|sec|seconds)\)\s*$", "", name.strip().strip('"').lower())
    return " ".join(name.replace("_", " ").split())


def _csv_roles(header: Sequence[str], source: str) -> dict[str, int]:
    keys = [_column_key(name) for name in header]
    roles = {}
    for role, names in CSV_COLUMNS.items():
        found = [index for index, key in enumerate(keys) if key in names]
        if found:
            roles[role] = found[0]
        elif role != "filename":
            raise AnnotationError(
                f"{source} line 1: no {role} column (one of {', '.join(names)}); the header is {', '.join(header)}"
            )
    return roles


def _delimiter(header: str) -> str:
    if "\t" in header:
        return "\t"
    return ";" if ";" in header and "," not in header else ","


def seconds_field(value: str, what: str, where: str) -> float:
    """A text field holding seconds (>= 0, finite); `AnnotationError` naming `where`, `what` and the value
    otherwise. Callers: this module's CSV reader, `answers.review` (a review file's start and end)."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise AnnotationError(f"{where}: {what} {value!r} must be a number of seconds >= 0")
    return number


def _csv_row(fields: list[str], roles: Mapping[str, int], width: int, where: str) -> tuple[str | None, Event | None]:
    if len(fields) > width:
        raise AnnotationError(f"{where}: {len(fields)} fields where the header has {width} columns")
    fields = [field.strip() for field in fields] + [""] * (width - len(fields))
    file = (fields[roles["filename"]] or None) if "filename" in roles else None
    onset, offset, label = (fields[roles[role]] for role in ("onset", "offset", "event_label"))
    if file is not None and not (onset or offset or label):
        return file, None  # a clip listed without events
    start, end = seconds_field(onset, "onset", where), seconds_field(offset, "offset", where)
    if end < start:
        raise AnnotationError(f"{where}: offset {end:g} is before onset {start:g}")
    if not label:
        raise AnnotationError(f"{where}: the event label is empty")
    return file, Event(label, start, end)


def read_csv_annotations(text: str, source: str = "<csv>") -> dict[str | None, list[Event]]:
    """The events of a CSV/TSV annotation table (module docstring), by file: {file or None: events sorted by
    start}. Raises `AnnotationError` ("source line N: ...")."""
    text = text.lstrip("\ufeff")
    lines = text.splitlines()
    first = next((index for index, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise AnnotationError(f"{source}: empty, no header line")
    rows = csv.reader(io.StringIO("\n".join(lines)), delimiter=_delimiter(lines[first]))
    by_file: dict[str | None, list[Event]] = {}
    roles, width = None, 0
    for row in rows:
        number = rows.line_num
        if not any(field.strip() for field in row):
            continue
        if roles is None:
            roles, width = _csv_roles([field.strip() for field in row], f"{source}"), len(row)
            continue
        file, event = _csv_row(row, roles, width, f"{source} line {number}")
        events = by_file.setdefault(file, [])
        if event is not None:
            events.append(event)
    return {file: sorted(events, key=lambda e: (e.start, e.end, e.label)) for file, events in by_file.items()}


def annotation_format(text: str) -> str:
    """"raven", "csv" or "audacity": the format of an annotation text by its first non-blank line."""
    line = next((line for line in text.lstrip("\ufeff").splitlines() if line.strip()), "")
    if "Begin Time (s)" in [field.strip() for field in line.split("\t")]:
        return "raven"
    first = line.split("\t")[0].strip()
    try:
        float(first)
        return "audacity"
    except ValueError:
        return "audacity" if first == "\\" else "csv"


def read_annotation_text(text: str, source: str) -> dict[str | None, list[Event]]:
    """{file or None: events} of an annotation text in any of the three formats (None: the file the
    annotation file is named after). A text with no event (empty, as Audacity exports an empty label track,
    or a header alone) is {None: []}: that file is annotated and has no events. Raises `AnnotationError`
    naming `source` and the line."""
    if not text.lstrip("\ufeff").strip():
        return {None: []}
    kind = annotation_format(text)
    if kind == "raven":
        found = read_raven(text, source)
    elif kind == "audacity":
        found = {None: read_audacity(text, source)}
    else:
        found = read_csv_annotations(text, source)
    return found or {None: []}


def read_annotation_file(path: str | os.PathLike) -> dict[str | None, list[Event]]:
    """`read_annotation_text` of a file (UTF-8, a byte-order mark allowed). Raises `AnnotationError` naming
    the file when it cannot be read or decoded."""
    return read_annotation_text(read_text(path, "annotations"), os.fspath(path))


def read_text(path: str | os.PathLike, what: str) -> str:
    """The text of a UTF-8 file (a byte-order mark allowed, line ends kept). Raises `AnnotationError` naming
    the file and `what` it was to hold when it cannot be read or decoded."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise AnnotationError(f"{os.fspath(path)}: cannot read {what} ({error})") from None


def _parts(path: str) -> list[str]:
    return [part.casefold() for part in re.split(r"[\\/]+", path) if part and part != "."]


def name_stem(path: str) -> str:
    """The stem by which names are matched: the base name without its last extension (and without Raven's
    `.Table.N.selections`), case-folded."""
    base = re.split(r"[\\/]", path)[-1]
    stem = os.path.splitext(base)[0]
    return RAVEN_TABLE_SUFFIX.sub("", stem).casefold()


@dataclasses.dataclass(frozen=True)
class Annotations:
    """Reference events matched to audio files.

    events: {audio path: events sorted by start}, every audio file some annotation names (possibly with
        no events). sources: {audio path: the annotation files it came from}.
    unmatched: "annotation file: name" for each name that fits no audio file (the annotation file alone
        where it names its audio by its own name).
    unknown_labels: {label: events} for labels not among the model's (when given), sorted by label.
    """

    events: Mapping[str, list[Event]]
    sources: Mapping[str, tuple[str, ...]]
    unmatched: tuple[str, ...] = ()
    unknown_labels: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def unannotated(self, audio_files: Iterable[str]) -> list[str]:
        """The audio files no annotation names (not evaluated: absence of annotation is not absence of sound)."""
        return [path for path in audio_files if path not in self.events]


def _pick(name: str, by_stem: Mapping[str, list[str]], source: str) -> str | None:
    candidates = by_stem.get(name_stem(name), [])
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    wanted = _parts(name)
    wanted[-1] = name_stem(name)
    fits = []
    for path in candidates:
        parts = _parts(path)
        parts[-1] = name_stem(path)
        if parts[-len(wanted):] == wanted or wanted[-len(parts):] == parts:
            fits.append(path)
    if len(fits) == 1:
        return fits[0]
    raise AnnotationError(f"{source}: {name!r} fits several audio files ({', '.join(candidates)}); name it by its path")


def match_annotations(
    annotation_files: Iterable[str | os.PathLike],
    audio_files: Sequence[str],
    labels: Sequence[str] | None = None,
) -> Annotations:
    """Reads each annotation file and matches its events to `audio_files` by name (module docstring).

    labels: the model's labels, to count the annotated labels it lacks (None: not checked). Raises
    `AnnotationError` for a file that cannot be read or has a bad row, or a name that fits several audio
    files ambiguously.
    """
    by_stem: dict[str, list[str]] = {}
    for path in audio_files:
        by_stem.setdefault(name_stem(path), []).append(path)
    events: dict[str, list[Event]] = {}
    sources: dict[str, list[str]] = {}
    unmatched: list[str] = []
    for annotation in annotation_files:
        source = os.fspath(annotation)
        for name, found in read_annotation_file(source).items():
            name = source if name is None else name
            audio = _pick(name, by_stem, source)
            if audio is None:
                unmatched.append(source if name == source else f"{source}: {name}")
                continue
            events.setdefault(audio, []).extend(found)
            if source not in sources.setdefault(audio, []):
                sources[audio].append(source)
    unknown: dict[str, int] = {}
    if labels is not None:
        known = set(labels)
        for event in (event for found in events.values() for event in found):
            if event.label not in known:
                unknown[event.label] = unknown.get(event.label, 0) + 1
    ordered = {audio: sorted(found, key=lambda e: (e.start, e.end, e.label)) for audio, found in events.items()}
    from_files = {audio: tuple(files) for audio, files in sources.items()}
    return Annotations(ordered, from_files, tuple(unmatched), dict(sorted(unknown.items())))

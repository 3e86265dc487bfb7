"""Events in the files of the tools people already use, and annotations read back from them.

Pure text in, text out (no files are read or written here):

- **Raven selection table** (Raven Pro/Lite, bioacoustics): tab-separated, one row per selection, the
  standard columns `Selection`, `View` ("Spectrogram 1"), `Channel` (1), `Begin Time (s)`, `End Time (s)`,
  `Low Freq (Hz)`, `High Freq (Hz)` (the band the model hears: 0 to half its sampling rate), then
  `Annotation` (the label; the column Raven's annotation tool and crowsetta use), `Score` (the event's peak)
  and `Mean Score`. A table covering several files follows Raven's file-sequence layout: `Begin Time (s)` and
  `End Time (s)` run on over the files in the order given (each file starts where the previous one ended),
  and `Begin Path`, `Begin File` and `File Offset (s)` (the start within that file) say where each selection
  is.
- **Audacity label track** (File > Import > Labels): `start<TAB>end<TAB>label` per line, seconds. Read back
  also in Audacity's extended form, where a line `\\<TAB>low<TAB>high` after a label gives its frequency
  range.
- **WebVTT** and **SubRip (SRT)** subtitles, one cue per event ("Dog 0.91"), cues in order of start;
  overlapping events give overlapping cues, which players stack. Timestamps are `hh:mm:ss.mmm` (WebVTT) and
  `hh:mm:ss,mmm` (SRT), rounded to the millisecond.

Parsers (`read_raven`, `read_audacity`) accept what the tools write (CRLF line ends, a byte-order mark, extra
columns, rows in any order, a label column named `Annotation`, `Label`, `Species`, ...) and refuse anything
else with an `AnnotationError` naming the source and line.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Sequence

from ast_audio.answers.events import Event
from ast_audio.errors import ASTAudioError

RAVEN_COLUMNS = (
    "Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
)
RAVEN_FILE_COLUMNS = ("Begin Path", "Begin File", "File Offset (s)")
RAVEN_EVENT_COLUMNS = ("Annotation", "Score", "Mean Score")
# Where a Raven table read back keeps its labels: the first of these columns it has.
RAVEN_LABEL_COLUMNS = ("Annotation", "Label", "Class", "Species", "Common Name", "Sound Type", "Call Type", "Type")
RAVEN_VIEW = "Spectrogram 1"
DEFAULT_HIGH_FREQ_HZ = 8000.0  # half the 16 kHz sampling rate of the AST checkpoints
TIME_DECIMALS = 6


class AnnotationError(ASTAudioError, ValueError):
    """An annotation file (Raven, Audacity) that cannot be read: the message names the source and line."""


@dataclasses.dataclass(frozen=True)
class FileEvents:
    """The events of one file for a table covering several: `path`, `duration` (seconds) and `events`."""

    path: str
    duration: float
    events: Sequence[Event]


def _text(value: str) -> str:
    """A label on one line of a tab-separated file: tabs and line breaks become spaces."""
    return re.sub(r"[\t\r\n]+", " ", value)


def _seconds(value: float) -> str:
    return f"{value:.{TIME_DECIMALS}f}"


def _score(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def _raven_row(number: int, event: Event, begin: float, low: float, high: float, extra: Sequence[str]) -> str:
    fields = [str(number), RAVEN_VIEW, "1", _seconds(begin), _seconds(begin + event.duration)]
    fields += [f"{low:.1f}", f"{high:.1f}", *extra, _text(event.label), _score(event.score), _score(event.mean)]
    return "\t".join(fields)


def to_raven(events: Sequence[Event], *, low_freq: float = 0.0, high_freq: float = DEFAULT_HIGH_FREQ_HZ) -> str:
    """A Raven selection table of one file's events (rows in order of start), ending with a newline."""
    header = "\t".join(RAVEN_COLUMNS + RAVEN_EVENT_COLUMNS)
    ordered = sorted(events, key=lambda event: (event.start, event.end, event.label))
    rows = [_raven_row(number, event, event.start, low_freq, high_freq, ()) for number, event in enumerate(ordered, 1)]
    return "\n".join([header, *rows]) + "\n"


def to_raven_files(
    files: Sequence[FileEvents], *, low_freq: float = 0.0, high_freq: float = DEFAULT_HIGH_FREQ_HZ
) -> str:
    """One Raven selection table for several files (Raven's file-sequence layout, module docstring).

    Selections are numbered 1.. over the whole table; each file's rows are in order of start. Raises
    `AnnotationError` for a duration that is negative or not finite.
    """
    header = "\t".join(RAVEN_COLUMNS + RAVEN_FILE_COLUMNS + RAVEN_EVENT_COLUMNS)
    rows, offset, number = [], 0.0, 0
    for item in files:
        if not (math.isfinite(item.duration) and item.duration >= 0):
            raise AnnotationError(f"{item.path}: duration {item.duration!r} must be a finite number of seconds >= 0")
        name = _text(os.path.basename(item.path))
        for event in sorted(item.events, key=lambda event: (event.start, event.end, event.label)):
            number += 1
            extra = (_text(item.path), name, _seconds(event.start))
            rows.append(_raven_row(number, event, offset + event.start, low_freq, high_freq, extra))
        offset += item.duration
    return "\n".join([header, *rows]) + "\n"


def to_audacity(events: Sequence[Event]) -> str:
    """An Audacity label track: `start<TAB>end<TAB>label` per event, in order of start."""
    ordered = sorted(events, key=lambda event: (event.start, event.end, event.label))
    return "".join(f"{_seconds(e.start)}\t{_seconds(e.end)}\t{_text(e.label)}\n" for e in ordered)


def _milliseconds(seconds: float) -> int:
    return max(0, int(round(seconds * 1000)))


def _timestamp(milliseconds: int, separator: str) -> str:
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{separator}{rest % 1000:03d}"


def _cues(events: Sequence[Event], separator: str) -> list[tuple[str, str]]:
    """(timing line, text) per event in order of start; an end is at least 1 ms after its start."""
    cues = []
    for event in sorted(events, key=lambda event: (event.start, event.end, event.label)):
        start = _milliseconds(event.start)
        end = max(_milliseconds(event.end), start + 1)
        text = " ".join(event.label.split()) + ("" if event.score is None else f" {event.score:.2f}")
        cues.append((f"{_timestamp(start, separator)} --> {_timestamp(end, separator)}", text))
    return cues


def to_webvtt(events: Sequence[Event]) -> str:
    """WebVTT subtitles, one cue per event ("label score" on one line), cue identifiers 1, 2, ...

    The text escapes `&`, `<` and `>` as the WebVTT cue text syntax requires.
    """
    blocks = ["WEBVTT"]
    for number, (timing, text) in enumerate(_cues(events, "."), 1):
        escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        blocks.append(f"{number}\n{timing}\n{escaped}")
    return "\n\n".join(blocks) + "\n"


def to_srt(events: Sequence[Event]) -> str:
    """SubRip subtitles: numbered cues `1`, `hh:mm:ss,mmm --> hh:mm:ss,mmm`, the text, a blank line."""
    blocks = [f"{number}\n{timing}\n{text}\n" for number, (timing, text) in enumerate(_cues(events, ","), 1)]
    return "\n".join(blocks)


# ------------------------------------------------------------------------------------------------ parsing
def _lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) for the non-blank lines, a byte-order mark and CR line ends removed."""
    lines = text.lstrip("\ufeff").split("\n")
    return [(number, line.rstrip("\r")) for number, line in enumerate(lines, 1) if line.strip()]


def _number(value: str, what: str, where: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise AnnotationError(f"{where}: {what} {value!r} is not a number")
    return number


def _optional(value: str, what: str, where: str) -> float | None:
    if not value.strip():
        return None
    try:
        return float(value)
    except ValueError:
        raise AnnotationError(f"{where}: {what} {value!r} is not a number") from None


def _raven_header(line: str, source: str, label_column: str | None) -> tuple[list[str], str]:
    columns = [column.strip() for column in line.split("\t")]
    for required in ("Begin Time (s)", "End Time (s)"):
        if required not in columns:
            raise AnnotationError(f"{source} line 1: not a Raven selection table (no {required!r} column)")
    if label_column is None:
        label_column = next((column for column in RAVEN_LABEL_COLUMNS if column in columns), None)
        if label_column is None:
            raise AnnotationError(
                f"{source} line 1: no label column (one of {', '.join(RAVEN_LABEL_COLUMNS)}; or name it)"
            )
    elif label_column not in columns:
        raise AnnotationError(f"{source} line 1: no column {label_column!r} (the columns are {', '.join(columns)})")
    return columns, label_column


def _raven_event(row: dict[str, str], label_column: str, where: str) -> Event:
    begin = _number(row["Begin Time (s)"], "Begin Time (s)", where)
    end = _number(row["End Time (s)"], "End Time (s)", where)
    if end < begin:
        raise AnnotationError(f"{where}: End Time (s) {end:g} is before Begin Time (s) {begin:g}")
    start = begin
    if row.get("File Offset (s)", "").strip():
        start = _number(row["File Offset (s)"], "File Offset (s)", where)
    label = row[label_column].strip()
    if not label:
        raise AnnotationError(f"{where}: the label ({label_column}) is empty")
    score = _optional(row.get("Score", ""), "Score", where)
    mean = _optional(row.get("Mean Score", ""), "Mean Score", where)
    return Event(label, start, start + (end - begin), score, mean)


def read_raven(text: str, source: str = "<raven>", label_column: str | None = None) -> dict[str | None, list[Event]]:
    """The events of a Raven selection table, by file: {file: events in order of start}.

    The key is the row's `Begin Path` or else `Begin File` (None for a table of one file without them);
    times are within that file (`File Offset (s)` where the table has it). The label comes from
    `label_column`, or else the first of `RAVEN_LABEL_COLUMNS` the table has; `Score` and `Mean Score` are
    read where present (else None). Raven writes a row per view of one selection: only the first row of
    each `Selection` number is read. Raises `AnnotationError` ("source line N: ...").
    """
    lines = _lines(text)
    if not lines:
        raise AnnotationError(f"{source}: empty, not a Raven selection table")
    columns, label_column = _raven_header(lines[0][1], source, label_column)
    by_file: dict[str | None, list[Event]] = {}
    seen: set[str] = set()
    for number, line in lines[1:]:
        where = f"{source} line {number}"
        fields = line.split("\t")
        if len(fields) > len(columns):
            raise AnnotationError(f"{where}: {len(fields)} fields where the header has {len(columns)} columns")
        row = dict(zip(columns, fields + [""] * (len(columns) - len(fields))))
        selection = row.get("Selection", "").strip()
        if selection and selection in seen:
            continue
        seen.add(selection)
        file = (row.get("Begin Path") or row.get("Begin File") or "").strip() or None
        by_file.setdefault(file, []).append(_raven_event(row, label_column, where))
    return {file: sorted(events, key=lambda e: (e.start, e.end, e.label)) for file, events in by_file.items()}


def read_audacity(text: str, source: str = "<audacity>") -> list[Event]:
    """The events of an Audacity label track (`start<TAB>end<TAB>label` lines), in order of start.

    Frequency lines of the extended format (`\\<TAB>low<TAB>high`, or with an empty first field) are
    accepted and skipped; point labels (start == end) are kept. Raises `AnnotationError` ("source line N:
    ...") for a line that is neither, a time that is not a number, an end before its start, or an empty label.
    """
    events = []
    for number, line in _lines(text):
        where = f"{source} line {number}"
        fields = line.split("\t")
        if fields[0].strip() in ("\\", ""):
            if len(fields) != 3:
                raise AnnotationError(f"{where}: a frequency line must be '\\<TAB>low<TAB>high', got {line!r}")
            _number(fields[1], "low frequency", where), _number(fields[2], "high frequency", where)
            continue
        if len(fields) < 3:
            raise AnnotationError(f"{where}: expected start<TAB>end<TAB>label, got {line!r}")
        start, end = _number(fields[0], "start", where), _number(fields[1], "end", where)
        if end < start:
            raise AnnotationError(f"{where}: end {end:g} is before start {start:g}")
        label = "\t".join(fields[2:]).strip()
        if not label:
            raise AnnotationError(f"{where}: the label is empty")
        events.append(Event(label, start, end))
    return sorted(events, key=lambda e: (e.start, e.end, e.label))

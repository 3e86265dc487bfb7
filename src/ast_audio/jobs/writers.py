"""Rendering results as a table, JSON, JSON lines, CSV, Parquet, or events in the files of other tools (a Raven
selection table, an Audacity label track, WebVTT and SRT subtitles, over `answers.formats`): a header, one
chunk of text per input, a footer; `single(result)` the text of one input's own file (`--output-dir`).

Renderers are pure (text in, nothing written), so a job can stream chunks to a file, keep them for a resume,
and put a resumed output back together exactly.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re

from ast_audio.answers import formats
from ast_audio.inference.results import ClipResult
from ast_audio.io_utils import publish
from ast_audio.jobs.records import CSV_COLUMNS, clip_json, csv_rows

FORMATS = ("table", "json", "jsonl", "csv", "parquet", "raven", "audacity", "vtt", "srt")
# The formats that hold only events (classify turns events on for them).
EVENT_FORMATS = ("raven", "audacity", "vtt", "srt")
# The formats a whole job can write into one file (--output FILE); the other event formats describe one
# recording each and need one file per input (--output-dir), unless the job has a single input.
COMBINED_FORMATS = ("table", "json", "jsonl", "csv", "parquet", "raven")
# What follows an input's name in its own file (--output-dir): `name.wav.vtt`; Raven names its tables after
# the recording's stem, `name.Table.1.selections.txt` (`per_file_name`).
PER_FILE_SUFFIXES = {"json": ".json", "csv": ".csv", "raven": ".Table.1.selections.txt", "audacity": ".txt",
                     "vtt": ".vtt", "srt": ".srt"}
# A file name that is not valid UTF-8 reaches Python as a str holding lone surrogates (PEP 383).
_SURROGATES = re.compile("[\ud800-\udfff]")
# Written as \uXXXX in JSON: lone surrogates, and the three line ends that are not ASCII (NEL, LINE SEPARATOR,
# PARAGRAPH SEPARATOR), which str.splitlines() and many line readers split a JSON line at.
_JSON_ESCAPED = re.compile("[\ud800-\udfff\u0085\u2028\u2029]")


def json_text(value: object, **dumps: object) -> str:
    """`value` as JSON (on one line unless `dumps` asks for an indent: `json.dumps`'s options), non-ASCII text
    kept as it is except U+0085, U+2028 and U+2029 (escaped, so no line reader splits a record at them), and
    the bytes of a name that are not UTF-8 written as \\udcXX escapes: valid JSON (writable as UTF-8) that
    reads back to the same str, which `os.fsencode` turns back into the file's name. The one JSON writer of
    job outputs."""
    text = json.dumps(value, ensure_ascii=False, **dumps)
    return _JSON_ESCAPED.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def readable(text: str) -> str:
    """`text` with the bytes of a name that are not UTF-8 shown as the replacement character U+FFFD (for
    tables, CSV and Parquet, whose strings are UTF-8)."""
    return _SURROGATES.sub("\ufffd", text)


class Renderer:
    """Base: `header`, then `chunk(result)` per input joined by `separator`, then `footer`."""

    separator = ""

    def __init__(self, top_k: int, timeline: bool) -> None:
        self.top_k, self.timeline = top_k, timeline

    def header(self) -> str:
        return ""

    def chunk(self, result: ClipResult) -> str:
        raise NotImplementedError

    def footer(self) -> str:
        return ""

    def single(self, result: ClipResult) -> str:
        """The whole text of a file holding one input (`--output-dir`)."""
        return self.header() + self.chunk(result) + self.footer()

    def finish(self, partial: str, path: str) -> None:
        """Turn the finished partial file into the output at `path` (by default: rename it there)."""
        publish(partial, path)


class JsonlRenderer(Renderer):
    """One JSON object per line."""

    def chunk(self, result: ClipResult) -> str:
        return json_text(clip_json(result, self.top_k, self.timeline)) + "\n"


class JsonRenderer(Renderer):
    """A JSON array of the per-input objects, one per line."""

    separator = ",\n"

    def header(self) -> str:
        return "[\n"

    def chunk(self, result: ClipResult) -> str:
        return json_text(clip_json(result, self.top_k, self.timeline))

    def footer(self) -> str:
        return "\n]\n"

    def single(self, result: ClipResult) -> str:
        return json_text(clip_json(result, self.top_k, self.timeline)) + "\n"


class CsvRenderer(Renderer):
    """The rows of `jobs.records.csv_rows` under a header of `CSV_COLUMNS`."""

    def header(self) -> str:
        return self._rows([CSV_COLUMNS])

    def chunk(self, result: ClipResult) -> str:
        return self._rows(csv_rows(result, self.top_k, self.timeline))

    @staticmethod
    def _rows(rows: list) -> str:
        buffer = io.StringIO()
        csv.writer(buffer).writerows(rows)
        return readable(buffer.getvalue())


class TableRenderer(Renderer):
    """Human-readable: the clip's top labels, then (for multi-window inputs) the timeline."""

    def chunk(self, result: ClipResult) -> str:
        return readable(self._text(result))

    def _text(self, result: ClipResult) -> str:
        if not result.ok:
            return f"{result.source}\n  error: {result.error}\n\n"
        count = len(result.windows)
        lines = [f"{result.source}  ({result.duration:.2f} s, {count} window{'s' if count != 1 else ''}, "
                 f"{result.pooling} pooling)"]
        if result.warning:
            lines.append(f"  warning: {result.warning}")
        lines += [f"  {item['score']:7.4f}  {item['label']}" for item in result.top(self.top_k)]
        if self.timeline and count > 1:
            for window in result.timeline(min(self.top_k, 3)):
                labels = ", ".join(f"{i['label']} {i['score']:.2f}" for i in window["labels"])
                if "decisions" in window:  # the window's labels at or above their thresholds, after a bar
                    labels += "  | " + (", ".join(d["label"] for d in window["decisions"]) or "-")
                lines.append(f"    {window['start']:8.2f}-{window['end']:8.2f} s  {labels}")
        if result.decisions is not None:
            lines.append(f"  decisions: {len(result.decisions)} above their thresholds")
            lines += [f"  {d.score:7.4f}  {d.label} (>= {d.threshold:.4g})" for d in result.decisions]
        if result.events is not None:
            lines.append(f"  events: {len(result.events)}")
            lines += [f"    {e.start:8.2f}-{e.end:8.2f} s  {e.label} {e.score:.2f} (mean {e.mean:.2f})"
                      for e in result.events]
        return "\n".join(lines) + "\n\n"


class ParquetRenderer(Renderer):
    """One row per input with the schema of `ast_audio.jobs.records` (the Ray engine's too). The partial
    file holds the rows as JSON lines; the Parquet file is written from them at the end."""

    def __init__(self, top_k: int, timeline: bool, embeddings: bool = False) -> None:
        super().__init__(top_k, timeline)
        self.embeddings = embeddings

    def chunk(self, result: ClipResult) -> str:
        from ast_audio.jobs.records import clip_record

        record = clip_record(result, self.top_k, self.timeline, self.embeddings)
        return json_text(record) + "\n"

    def finish(self, partial: str, path: str) -> None:
        from ast_audio.jobs.records import write_parquet

        with open(partial, encoding="utf-8") as handle:
            records = [json.loads(line) for line in handle if line.strip()]
        # Parquet strings are UTF-8: a name's bytes that are not are shown as U+FFFD there
        records = [{key: readable(value) if isinstance(value, str) else value for key, value in record.items()}
                   for record in records]
        write_parquet(records, path, self.embeddings)
        os.unlink(partial)


class EventsRenderer(Renderer):
    """The events of one input in another tool's file (`answers.formats`): `chunk` is that file's text, so a
    job of one input streams it, and `--output-dir` writes it per input. An input that failed, or one with no
    events, gives a file without events (its header only, where the format has one); errors go to stderr."""

    render = staticmethod(formats.to_audacity)

    def chunk(self, result: ClipResult) -> str:
        return readable(self.render(result.events or [] if result.ok else []))


class AudacityRenderer(EventsRenderer):
    """An Audacity label track (start, end, label; File > Import > Labels)."""


class WebVttRenderer(EventsRenderer):
    """WebVTT subtitles, a cue per event ("label score")."""

    render = staticmethod(formats.to_webvtt)


class SrtRenderer(EventsRenderer):
    """SubRip subtitles, a cue per event."""

    render = staticmethod(formats.to_srt)


class RavenRenderer(EventsRenderer):
    """A Raven selection table of one recording (Begin/End Time in seconds of that recording)."""

    render = staticmethod(formats.to_raven)


class RavenTableRenderer(Renderer):
    """One Raven selection table for every input of a job (`--output FILE`), in Raven's file-sequence layout
    (`answers.formats.to_raven_files`: `Begin Path`, `Begin File`, `File Offset (s)`; times run on over the
    files in input order). The partial file holds each input's events as a JSON line (so a resume keeps
    them); the table is written from them at the end. Inputs that failed are left out (their time too)."""

    def chunk(self, result: ClipResult) -> str:
        events = [event.to_dict() for event in result.events or ()] if result.ok else []
        return json_text({"path": result.source, "duration": result.duration if result.ok else 0.0,
                          "events": events, "ok": result.ok}) + "\n"

    def finish(self, partial: str, path: str) -> None:
        from ast_audio.answers.events import Event
        from ast_audio.io_utils import atomic_write_text

        with open(partial, encoding="utf-8") as handle:
            records = [json.loads(line) for line in handle if line.strip()]
        files = [formats.FileEvents(readable(record["path"]), record["duration"],
                                    [Event(**event) for event in record["events"]])
                 for record in records if record["ok"]]
        atomic_write_text(path, readable(formats.to_raven_files(files)))
        os.unlink(partial)


RENDERERS: dict[str, type[Renderer]] = {
    "table": TableRenderer, "json": JsonRenderer, "jsonl": JsonlRenderer, "csv": CsvRenderer,
    "parquet": ParquetRenderer, "raven": RavenTableRenderer, "audacity": AudacityRenderer, "vtt": WebVttRenderer,
    "srt": SrtRenderer,
}
# The renderer of a format when each input has its own file (or the job has one input and no --output FILE).
PER_FILE_RENDERERS: dict[str, type[Renderer]] = {**RENDERERS, "raven": RavenRenderer}


def renderer(fmt: str, top_k: int = 5, timeline: bool = True, per_file: bool = False) -> Renderer:
    """The renderer of format `fmt` (one of FORMATS); `per_file`: for a file per input (Raven: one recording's
    table, without the file columns)."""
    return (PER_FILE_RENDERERS if per_file else RENDERERS)[fmt](top_k, timeline)


def per_file_name(relative: str, fmt: str) -> str:
    """The name of an input's own file under --output-dir, from the input's path relative to its input folder:
    `sub/name.wav` -> `sub/name.wav.vtt`; Raven: `sub/name.Table.1.selections.txt`. Raises KeyError for a
    format without per-file output (table, jsonl, parquet)."""
    if fmt == "raven":
        return os.path.splitext(relative)[0] + PER_FILE_SUFFIXES[fmt]
    return relative + PER_FILE_SUFFIXES[fmt]

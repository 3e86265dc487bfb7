"""A Ray job's output directory: files of rows (Parquet, or JSON lines in the local engine's form), the options
that decided their numbers, and resume.

    OUT/.ast-audio-job.json           {"ast_audio_output": 1, "options": {...}}: checked by a resumed job
    OUT/<run>-<n>.parquet | .jsonl    `rows_per_file` rows each, written atomically as they fill

Reading a directory never changes it. A file that cannot be read (a half-written one from a job killed by an
older version, which wrote in place) is set aside as `.NAME.incomplete` by `set_aside_unreadable`, which the
resume step of a writing job calls under the output's lock; its inputs are then done again.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from ast_audio.errors import ConfigError, UsageError
from ast_audio.io_utils import atomic_write_text

JOB_FILE = ".ast-audio-job.json"
JOB_VERSION = 1
ROW_SUFFIXES = (".parquet", ".jsonl", ".json")  # .json: the Ray Data writer of earlier versions


@dataclass
class Contents:
    """What an output directory holds: its rows' paths and errors, and the files that could not be read
    (name -> why)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)

    @property
    def inputs(self) -> set[str]:
        return {row["path"] for row in self.rows}


def read(output_dir: str) -> Contents:
    """The path and error of every row in `output_dir`'s row files (none if it does not exist); no side effects."""
    contents = Contents()
    if not os.path.isdir(output_dir):
        return contents
    for name in sorted(os.listdir(output_dir)):
        if name.startswith((".", "_")) or not name.endswith(ROW_SUFFIXES):
            continue
        path = os.path.join(output_dir, name)
        try:
            contents.rows += _path_and_error_rows(path)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            contents.unreadable[name] = str(exc)
    return contents


def _path_and_error_rows(path: str) -> list[dict[str, Any]]:
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path, columns=["path", "error"]).to_pylist()
    with open(path, encoding="utf-8", newline="") as handle:
        lines = handle.read().split("\n")  # only "\n" ends a line: a file name may hold U+2028 or U+0085
    return [{"path": row.get("path"), "error": row.get("error")} for row in map(json.loads, filter(None, lines))]


def written_inputs(output_dir: str) -> set[str]:
    """The inputs whose rows `output_dir` holds (files that cannot be read count for nothing)."""
    return read(output_dir).inputs


def set_aside_unreadable(output_dir: str, contents: Contents) -> list[str]:
    """Rename each unreadable row file NAME of `contents` to `.NAME.incomplete` (readers skip it) and return one
    line per file saying so. For the resume step of a job that holds the output's lock."""
    lines = []
    for name, reason in sorted(contents.unreadable.items()):
        os.replace(os.path.join(output_dir, name), os.path.join(output_dir, f".{name}.incomplete"))
        lines.append(f"{os.path.join(output_dir, name)}: unreadable ({reason}); set aside as .{name}.incomplete, "
                     "its inputs are done again")
    return lines


def check_options(output_dir: str, options: dict[str, Any], contents: Contents) -> None:
    """Refuse (`UsageError`) to resume into `output_dir` with `options` other than those that wrote its rows,
    naming each difference, or where no record of them exists though rows do."""
    try:
        with open(os.path.join(output_dir, JOB_FILE), encoding="utf-8") as handle:
            before = json.load(handle).get("options", {})
    except FileNotFoundError:
        if contents.rows:
            raise UsageError(f"{output_dir}: cannot resume: no record of the options that wrote it ({JOB_FILE} is "
                              "missing); rerun with another --output") from None
        return
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{output_dir}: cannot resume: {JOB_FILE} is unreadable ({exc})") from None
    from ast_audio.jobs.comparison import option_differences

    differences = option_differences(before, options)
    if differences:
        raise UsageError(f"{output_dir}: cannot resume: it was written with other options "
                          f"({'; '.join(differences)}); rerun with those options, or choose another --output")


def record_options(output_dir: str, options: dict[str, Any]) -> None:
    """Write the options that decide the rows' numbers into `output_dir`, for a resumed job to check."""
    os.makedirs(output_dir, exist_ok=True)
    atomic_write_text(os.path.join(output_dir, JOB_FILE),
                      json.dumps({"ast_audio_output": JOB_VERSION, "options": options}, indent=1) + "\n")


class RowFiles:
    """Rows into `output_dir`, a file of `rows_per_file` rows each time that many have come (and the rest at
    `flush`), each written atomically: a killed job leaves whole files only."""

    def __init__(self, output_dir: str, fmt: str, rows_per_file: int, embeddings: bool) -> None:
        if fmt not in ("parquet", "jsonl"):
            raise UsageError(f"--engine ray writes parquet or jsonl, not {fmt!r}")
        self.output_dir, self.fmt, self.rows_per_file, self.embeddings = output_dir, fmt, rows_per_file, embeddings
        self.run = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"  # later runs sort after earlier ones
        self.pending: list[dict[str, Any]] = []
        self.files = 0

    def add(self, row: dict[str, Any]) -> None:
        """One row of `ast_audio.jobs.records.schema`."""
        self.pending.append(row)
        if len(self.pending) >= self.rows_per_file:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        path = os.path.join(self.output_dir, f"{self.run}-{self.files:05d}.{self.fmt}")
        if self.fmt == "parquet":
            from ast_audio.jobs.records import write_parquet

            write_parquet(self.pending, path, self.embeddings)
        else:
            from ast_audio.jobs.records import json_record
            from ast_audio.jobs.writers import json_text

            atomic_write_text(path, "".join(json_text(json_record(row)) + "\n" for row in self.pending))
        self.files += 1
        self.pending = []

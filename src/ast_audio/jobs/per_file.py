"""A file per input under an output folder (`classify --output-dir DIR`), mirroring the input tree.

    DIR/index.jsonl                     one line per input: {"path", "output"} (relative to DIR), or {"path", "error"}
    DIR/sub/name.wav.vtt                the input's own file (`jobs.writers.per_file_name`: Raven tables are
                                        named as Raven names them, `sub/name.Table.1.selections.txt`)

An input's place is its path relative to the input (folder or glob) that found it: `classify rec/ -o DIR`
writes `rec/a/x.wav`'s file as `DIR/a/x.wav.vtt`; an input named as a file goes at the top, by its name. Each
file is written atomically, then its line is added to the index, which is a `jobs.output.ResumableOutput`:
locked against a second run, its state recording each finished input, so `--resume` skips them (and redoes
an input whose audio changed) and a resume with other options is refused. An input that failed gets no
file, only its error in the index.
"""

from __future__ import annotations

import errno
import glob
import os
from collections.abc import Sequence

from ast_audio.errors import UsageError
from ast_audio.inference.results import ClipResult
from ast_audio.io_utils import atomic_write_text
from ast_audio.jobs.records import error_record
from ast_audio.jobs.writers import Renderer, json_text, per_file_name

INDEX_NAME = "index.jsonl"


def _root(item: str) -> str:
    """The folder an input's files are placed relative to: a folder itself, a glob's fixed leading folders,
    a file's own folder."""
    if os.path.isdir(item):
        return item
    if glob.has_magic(item):
        parts = item.split(os.sep)
        fixed = next(index for index, part in enumerate(parts) if glob.has_magic(part))
        return os.sep.join(parts[:fixed]) or ("/" if item.startswith(os.sep) else ".")
    return os.path.dirname(item) or "."


class MirrorTree:
    """Where each input's own file goes under `folder`, for the job's `inputs` (files, folders, globs)."""

    def __init__(self, inputs: Sequence[str], folder: str, fmt: str) -> None:
        self.roots = [os.path.normpath(_root(os.fspath(item))) for item in inputs]
        self.folder, self.fmt = folder, fmt
        self._owner: dict[str, str] = {}  # output name -> the input that has it

    def relative(self, source: str) -> str:
        """`source`'s path relative to the first input root that holds it (its name when none does)."""
        path = os.path.normpath(source)
        for root in self.roots:
            inside = os.path.relpath(path, root) if os.path.isabs(path) == os.path.isabs(root) else os.pardir
            if inside != os.pardir and not inside.startswith(os.pardir + os.sep):
                return inside
        return os.path.basename(path)

    def output(self, source: str) -> str:
        """The output file's name relative to `folder`. Raises `UsageError` when an earlier input of this run
        has it (two inputs of one name from different places, or Raven's x.wav and x.flac)."""
        name = per_file_name(self.relative(source), self.fmt)
        owner = self._owner.setdefault(name, source)
        if owner != source:
            raise UsageError(f"{source}: its output {os.path.join(self.folder, name)} is already {owner}'s; give "
                             "the inputs as one folder, or write them in separate runs")
        return name


class PerFileWriter:
    """Writes each result's own file (`renderer.single`) and gives its index line, for `ResumableOutput.write`."""

    def __init__(self, tree: MirrorTree, renderer: Renderer) -> None:
        self.tree, self.renderer = tree, renderer

    def __call__(self, result: ClipResult) -> str:
        """Write `result`'s file (not for a failed input) and return its index line. An input whose output
        name clashes with another's, or is longer than the file system allows, gets that error in the index
        instead (the job goes on)."""
        if not result.ok:
            return json_text(error_record(result.source, result.error)) + "\n"
        try:
            name = self.tree.output(result.source)
        except UsageError as error:
            return json_text(error_record(result.source, str(error))) + "\n"
        path = os.path.join(self.tree.folder, name)
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            atomic_write_text(path, self.renderer.single(result))
        except OSError as error:
            if error.errno != errno.ENAMETOOLONG:
                raise
            message = (f"{result.source}: its output {path} cannot be created: the name is longer than the file "
                       "system allows; rename the input")
            return json_text(error_record(result.source, message)) + "\n"
        return json_text({"path": result.source, "output": name}) + "\n"

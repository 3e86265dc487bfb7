"""`ast-audio embed`: pooled AST embeddings of audio files, saved as .npy."""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys

from ast_audio.commands._common import add_model_arguments, model_options, run_job
from ast_audio.commands._ray import add_engine_arguments

HELP = "save pooled embeddings (per clip and per window) of audio files as .npy"
DESCRIPTION = (
    "Compute the model's pooled embedding (the mean of the CLS and distillation tokens, hidden_size values) "
    "for each window of each file and their mean per file. Writes <name>_<path hash>.npy (the clip vector) "
    "and, with --per-window, <name>_<path hash>.windows.npy (windows x hidden) into --output-dir, plus "
    "index.jsonl, a line per input: path, embedding (the .npy file name), duration (s), windows ([start, end] "
    "s), window_embeddings (with --per-window) and warning when there is one; a file that failed has path and "
    "error. The index is locked and resumable as classify's output. Exit codes as for classify."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_engine_arguments(parser)
    parser.add_argument("--output-dir", "-o", default="embeddings",
                        help="folder for the .npy files and index.jsonl, created if missing (default ./embeddings)")
    parser.add_argument("--per-window", action="store_true", help="also save each window's embedding")


def _save_npy(path: str, array) -> None:
    import io

    import numpy as np

    from ast_audio.io_utils import atomic_write_bytes

    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())


def npy_stem(source: str) -> str:
    """A file name for an input's embeddings: its name, and a hash of its path (stable across resumed runs,
    distinct for equal names in different folders)."""
    stem = re.sub(r"[^\w.-]+", "_", os.path.splitext(os.path.basename(source))[0])
    return f"{stem}_{hashlib.sha1(os.fsencode(source)).hexdigest()[:10]}"


def run(args: argparse.Namespace) -> int:
    from ast_audio.errors import UsageError
    from ast_audio.jobs.output import ResumableOutput, check_output_folder
    from ast_audio.jobs.records import embedding_record
    from ast_audio.jobs.writers import JsonlRenderer, json_text

    check_output_folder(args.output_dir)
    if args.engine == "ray":
        if args.overwrite:
            raise UsageError("--overwrite is for the local engine; with --engine ray choose another --output-dir")
        from ast_audio.commands._ray import run_on_ray

        return run_on_ray(args, "embed", args.output_dir, embeddings=True)

    options = {**model_options(args), "per_window": args.per_window}
    output = ResumableOutput(os.path.join(args.output_dir, "index.jsonl"), JsonlRenderer(0, False), options,
                             resume=args.resume, overwrite=args.overwrite)

    def entry(result) -> str:
        """Save the input's embeddings (before its index line is written) and return that line."""
        if not result.ok:
            return json_text(embedding_record(result, None)) + "\n"
        name = npy_stem(result.source)
        clip, windows = f"{name}.npy", f"{name}.windows.npy" if args.per_window else None
        _save_npy(os.path.join(args.output_dir, clip), result.embedding)
        if windows is not None:
            _save_npy(os.path.join(args.output_dir, windows), result.window_embeddings)
        return json_text(embedding_record(result, clip, windows)) + "\n"

    code = run_job(args, "embed", output, entry)
    if not args.quiet:
        print(f"embeddings and index.jsonl in {args.output_dir}", file=sys.stderr)
    return code

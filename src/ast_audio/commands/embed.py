"""`ast-audio embed`: pooled AST embeddings of audio files, saved as .npy."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

from ast_audio.commands._common import add_model_arguments, exit_code, input_files, load_classifier, progress

HELP = "save pooled embeddings (per clip and per window) of audio files as .npy"
DESCRIPTION = (
    "Compute the model's pooled embedding (the mean of the CLS and distillation tokens, hidden_size values) "
    "for each window of each file and their mean per file. Writes NNNNNN_<name>.npy (the clip vector) and, "
    "with --per-window, NNNNNN_<name>.windows.npy (windows x hidden) into --output-dir, plus index.jsonl "
    "listing path, files, duration and window times. Exit codes as for classify."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--output-dir", "-o", default="embeddings", help="folder for the .npy files (default ./embeddings)")
    parser.add_argument("--per-window", action="store_true", help="also save each window's embedding")


def _save_npy(path: str, array) -> None:
    import io

    import numpy as np

    from ast_audio.io_utils import atomic_write_bytes

    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())


def run(args: argparse.Namespace) -> int:
    from ast_audio.inference.writers import open_output

    files = input_files(args)
    classifier = load_classifier(args)
    os.makedirs(args.output_dir, exist_ok=True)
    failed = 0
    index_path = os.path.join(args.output_dir, "index.jsonl")
    with open_output(index_path) as index, progress(len(files), args, "embed") as bar:
        for number, result in enumerate(classifier.iter_classify(files)):
            bar.update(1)
            if not result.ok:
                failed += 1
                print(f"ast-audio embed: {result.error}", file=sys.stderr)
                index.write(json.dumps({"path": result.source, "error": result.error}) + "\n")
                continue
            stem = re.sub(r"[^\w.-]+", "_", os.path.splitext(os.path.basename(result.source))[0])
            name = f"{number:06d}_{stem}"
            entry = {"path": result.source, "embedding": f"{name}.npy", "duration": round(result.duration, 3),
                     "windows": [[round(s, 3), round(e, 3)] for s, e in result.windows]}
            _save_npy(os.path.join(args.output_dir, entry["embedding"]), result.embedding)
            if args.per_window:
                entry["window_embeddings"] = f"{name}.windows.npy"
                _save_npy(os.path.join(args.output_dir, entry["window_embeddings"]), result.window_embeddings)
            index.write(json.dumps(entry, ensure_ascii=False) + "\n")
            index.flush()
    print(f"wrote {len(files) - failed} embeddings to {args.output_dir}", file=sys.stderr)
    return exit_code(len(files), failed)

"""`ast-audio classify`: label audio files of any length."""

from __future__ import annotations

import argparse
import os
import sys

from ast_audio.commands._common import add_model_arguments, exit_code, input_files, load_classifier, progress

HELP = "label audio files of any length (clip summary and timeline)"
DESCRIPTION = (
    "Classify audio files with an AST checkpoint. Files longer than the model's window are cut into windows "
    "every --hop seconds; each file gets a timeline (per-window top labels) and a clip summary (mean or max "
    "of the window scores). Results stream out as each file finishes. Exit code 0: all files classified; "
    "3: some files failed (reported on stderr and in the output); 1: nothing could be classified."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--top-k", "-k", type=int, default=5, help="labels per clip and per window (default 5)")
    parser.add_argument("--pooling", choices=["mean", "max"], default="mean",
                        help="how window scores make the clip summary (default mean)")
    parser.add_argument("--format", "-f", choices=["table", "json", "jsonl", "csv"], default="table",
                        help="output format (default table)")
    parser.add_argument("--output", "-o", help="write results to FILE (via FILE.partial, renamed when done)")
    parser.add_argument("--no-timeline", dest="timeline", action="store_false", help="only the clip summaries")
    parser.add_argument("--plot", metavar="PNG",
                        help="draw the spectrogram and the top labels' scores over time (needs matplotlib); "
                             "with several files, PNG-<n>.png per file")


def plot_path(base: str, index: int, total: int) -> str:
    if total == 1:
        return base
    stem, ext = os.path.splitext(base)
    return f"{stem}-{index + 1}{ext or '.png'}"


def run(args: argparse.Namespace) -> int:
    from ast_audio.inference.writers import WRITERS, open_output

    if args.top_k < 1:
        raise SystemExit("ast-audio classify: error: --top-k must be at least 1")
    files = input_files(args)
    classifier = load_classifier(args, pooling=args.pooling)
    failed = 0
    with open_output(args.output) as stream, progress(len(files), args, "classify") as bar:
        writer = WRITERS[args.format](stream, args.top_k, args.timeline)
        for index, result in enumerate(classifier.iter_classify(files)):
            writer.write(result)
            bar.update(1)
            if not result.ok:
                failed += 1
                print(f"ast-audio classify: {result.error}", file=sys.stderr)
            elif args.plot:
                from ast_audio.inference.plot import plot_result

                plot_result(result, plot_path(args.plot, index, len(files)), top=min(args.top_k, 5))
        writer.close()
    if failed:
        print(f"ast-audio classify: {failed} of {len(files)} files failed", file=sys.stderr)
    return exit_code(len(files), failed)

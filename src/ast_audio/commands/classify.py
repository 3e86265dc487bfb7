"""`ast-audio classify`: label audio files of any length."""

from __future__ import annotations

import argparse
import os

from ast_audio.commands._answers import add_answer_arguments, check_answers
from ast_audio.commands._common import add_model_arguments, model_options, run_job
from ast_audio.commands._ray import add_engine_arguments

HELP = "label audio files of any length (clip summary and timeline)"
DESCRIPTION = (
    "Classify audio files with an AST checkpoint. Files longer than the window are cut into windows of "
    "--window seconds every --hop seconds (the last one ends at the end of the file, with the full length; no "
    "window starts at or past it); each file gets a timeline (per-window top labels) and a clip summary (mean or max of the window "
    "scores). Results stream out as each file finishes. Exit code 0: all files classified; 3: some files "
    "failed (reported on stderr and in the output); 1: nothing could be classified, or an error; 2: a usage "
    "error, found before any work (a bad or clashing option, e.g. --window out of range; an output path that "
    "cannot be written; an unfinished output without --resume or --overwrite); 130, 143, 129: stopped by "
    "Ctrl-C, SIGTERM, SIGHUP (lock removed, resumable)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ast_audio.inference.results import POOLINGS
    from ast_audio.jobs.writers import FORMATS

    add_model_arguments(parser)
    add_engine_arguments(parser)
    parser.add_argument("--top-k", "-k", type=int, default=5, help="labels per clip and per window (default 5)")
    parser.add_argument("--pooling", choices=POOLINGS, default="mean",
                        help="how window scores make the clip summary (default mean)")
    parser.add_argument("--format", "-f", choices=FORMATS, default=None,
                        help="output format (default: the one --output's extension names, .jsonl .json .csv "
                             ".parquet .vtt .srt, else table; with --output-dir, json; with --engine ray, "
                             "parquet); a --format that contradicts the extension is refused. Event formats "
                             "(turn --events on): raven (a Raven selection table; with --output FILE one table "
                             "for every input, with Begin Path, Begin File and File Offset), audacity (a label "
                             "track), vtt, srt (subtitles); audacity, vtt and srt describe one recording each: "
                             "with several inputs, use --output-dir")
    parser.add_argument("--output", "-o", help="write results to FILE (streamed to FILE.partial, renamed when done; "
                        "locked against a second run; progress recorded in .FILE.state.jsonl for --resume; a run "
                        "onto one stopped part-way needs --resume or --overwrite); with --engine ray, a folder")
    parser.add_argument("--output-dir", metavar="DIR", help="a file per input under DIR, mirroring the input "
                        "folders (DIR/sub/name.wav.vtt; Raven: DIR/sub/name.Table.1.selections.txt), and "
                        "DIR/index.jsonl listing each input's file or error (locked, resumable like --output); "
                        "formats json, csv, raven, audacity, vtt, srt")
    parser.add_argument("--no-timeline", dest="timeline", action="store_false", help="only the clip summaries")
    parser.add_argument("--plot", metavar="PNG",
                        help="draw the spectrogram and the top labels' scores over time (needs matplotlib); "
                             "with several files, PNG-<n>.png per file")
    add_answer_arguments(parser)


def plot_path(base: str, index: int, total: int) -> str:
    if total == 1:
        return base
    stem, ext = os.path.splitext(base)
    return f"{stem}-{index + 1}{ext or '.png'}"


# What an output file's extension says its format is, when --format is not given (other extensions: the table).
EXTENSION_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet",
                     ".vtt": "vtt", ".srt": "srt"}


def output_format(path: str | None, chosen: str | None) -> str:
    """The format to write: `chosen` (--format), else the one `path`'s extension names, else the table.
    Raises `UsageError` when --format contradicts a data extension (e.g. -f table -o results.jsonl)."""
    from ast_audio.errors import UsageError

    implied = EXTENSION_FORMATS.get(os.path.splitext(path or "")[1].lower()) if path not in (None, "-") else None
    if chosen and implied and chosen != implied:
        raise UsageError(f"--output {path}: the extension says {implied} but --format is {chosen}; drop --format or "
                         f"name the file for {chosen}")
    return chosen or implied or "table"


def check_outputs(args: argparse.Namespace) -> None:
    """Every output path checked before the model loads (`UsageError`: the command exits 2)."""
    from ast_audio.errors import UsageError
    from ast_audio.jobs.output import check_output_file, check_output_folder

    if args.engine == "ray":
        if args.overwrite:
            raise UsageError("--overwrite is for the local engine; with --engine ray choose another --output")
        if args.output:
            check_output_folder(args.output, "--output")
        return
    if args.output not in (None, "-"):
        check_output_file(args.output)
    if args.plot:
        check_output_file(args.plot, "--plot", "plot.png")


def run(args: argparse.Namespace) -> int:
    from ast_audio.errors import UsageError
    from ast_audio.jobs.writers import EVENT_FORMATS

    check_outputs(args)
    if args.engine == "ray":
        from ast_audio.commands._ray import run_on_ray

        args.format = args.format or "parquet"
        if args.plot:
            raise UsageError("--plot is for the local engine")
        if args.output_dir or args.format in EVENT_FORMATS:
            raise UsageError("--output-dir and the event formats (raven, audacity, vtt, srt) are for the local engine")
        return run_on_ray(args, "classify", args.output, embeddings=False)
    if args.output_dir and args.output:
        raise UsageError("--output and --output-dir exclude each other: one file for the job, or one per input")
    args.format = output_format(args.output, args.format or ("json" if args.output_dir else None))
    check_answers(args, EVENT_FORMATS)
    check_event_output(args)
    if args.format == "parquet" and args.output in (None, "-"):
        raise UsageError("--format parquet needs --output FILE")
    from ast_audio.jobs.output import ResumableOutput, StreamOutput
    from ast_audio.jobs.writers import renderer

    if args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    if args.resume and not args.output_dir and (args.output is None or args.format == "table"):
        raise UsageError("--resume needs --output FILE and a --format of jsonl, json, csv or parquet")
    render = renderer(args.format, args.top_k, args.timeline, per_file=args.output in (None, "-"))
    streamed = args.output in (None, "-") and not args.output_dir
    # The options a resumable output records (the model's fingerprint hashes its weights): none for stdout.
    options = None if streamed else {**model_options(args), "format": args.format, "top_k": args.top_k,
                                     "pooling": args.pooling, "timeline": args.timeline}
    output = StreamOutput(render) if args.output in (None, "-") else ResumableOutput(
        args.output, render, options, resume=args.resume,
        overwrite=args.overwrite or args.format == "table")  # a table is not resumable: nothing to keep

    def plot(result, number: int, total: int) -> None:
        if args.plot and result.ok:
            from ast_audio.jobs.plot import plot_result

            plot_result(result, plot_path(args.plot, number, total), top=min(args.top_k, 5))

    if args.output_dir:
        return run_job(args, "classify", *per_file_output(args, options), pooling=args.pooling, after=plot)
    return run_job(args, "classify", output, render.chunk, pooling=args.pooling, after=plot)


def check_event_output(args: argparse.Namespace) -> None:
    """Where a format can go (`UsageError`): --output-dir for formats with a file per input; audacity, vtt and
    srt describe one recording, so several inputs need --output-dir; Raven's table of several inputs needs
    --output FILE (or --output-dir)."""
    from ast_audio.errors import UsageError
    from ast_audio.jobs.writers import COMBINED_FORMATS, EVENT_FORMATS, PER_FILE_SUFFIXES

    one_file = len(args.inputs) == 1 and os.path.isfile(args.inputs[0])
    if args.output_dir:
        if args.format not in PER_FILE_SUFFIXES:
            raise UsageError(f"--output-dir writes a file per input: --format {args.format} has none (choose "
                             f"{', '.join(PER_FILE_SUFFIXES)})")
    elif args.format in EVENT_FORMATS and not one_file:
        if args.format not in COMBINED_FORMATS:
            raise UsageError(f"--format {args.format} describes one recording: for several inputs use --output-dir "
                             "DIR (a file per input)")
        if args.output in (None, "-"):
            raise UsageError("--format raven for several inputs needs --output FILE (one table) or --output-dir DIR")


def per_file_output(args: argparse.Namespace, options: dict):
    """The index output under --output-dir (locked, resumable) and the writer of each input's own file."""
    from ast_audio.jobs.output import ResumableOutput, check_output_folder
    from ast_audio.jobs.per_file import INDEX_NAME, MirrorTree, PerFileWriter
    from ast_audio.jobs.writers import Renderer, renderer

    check_output_folder(args.output_dir)
    os.makedirs(args.output_dir, exist_ok=True)
    writer = PerFileWriter(MirrorTree(args.inputs, args.output_dir, args.format),
                           renderer(args.format, args.top_k, args.timeline, per_file=True))
    index = ResumableOutput(os.path.join(args.output_dir, INDEX_NAME), Renderer(args.top_k, args.timeline), options,
                            resume=args.resume, overwrite=args.overwrite)
    return index, writer

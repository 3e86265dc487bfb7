"""Arguments and helpers shared by the commands that run a model over audio files."""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="audio files, directories (searched recursively) or glob patterns")
    add_model_options(parser)
    parser.add_argument("--window", type=float, help="window length in seconds: from one patch of frames up to the "
                        "model's input (default: the whole input, 10.255 s for 1024 frames)")
    parser.add_argument("--hop", type=float, help="seconds between window starts (default: half a window)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per model call (default 8)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no closing summary")
    parser.add_argument("--strict", action="store_true",
                        help="treat warnings (a file cut short: what decodes is used) as errors")
    parser.add_argument("--resume", action="store_true",
                        help="skip inputs already finished in the output (by an interrupted or earlier run with the "
                        "same options); redo the one cut off and any whose file changed")
    parser.add_argument("--overwrite", action="store_true",
                        help="start again on an output whose earlier run stopped part-way (without --resume or "
                        "--overwrite such a run is refused, so its finished inputs are not lost)")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The options that load a model (checkpoint, device, precision, backend, threads), shared by every command
    that runs one, `serve` included."""
    parser.add_argument("--model", "-m", default="MIT/ast-finetuned-audioset-10-10-0.4593",
                        help="checkpoint directory or Hugging Face Hub id (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="model precision (default float32)")
    parser.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                        help="torch (default) or onnxruntime (runs MODEL/model.onnx from ast-audio export)")
    parser.add_argument("--int8", action="store_true", help="dynamic int8 quantisation of the Linear layers, the first and "
                        "last encoder layers kept float32 (CPU; with --backend onnxruntime: run model.int8.onnx "
                        "from export --int8)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (slow first batches)")
    parser.add_argument("--threads", type=int, help="intra-op threads of the model and of decoding/features, each "
                        "in its own thread (default: every core; on a machine shared with other jobs, fewer)")
    parser.add_argument("--offline", action="store_true", help="never contact the Hub; use its local cache only")


def model_options(args: argparse.Namespace) -> dict:
    """The options that decide an output's numbers: a resumed run must have the same."""
    return {"model": args.model, "window": args.window, "hop": args.hop, "dtype": args.dtype, "backend": args.backend,
            "int8": args.int8, "strict": args.strict}


def load_classifier(args: argparse.Namespace, pooling: str = "mean"):
    from ast_audio.inference.classifier import AudioClassifier

    return AudioClassifier.from_pretrained(
        args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size, window=args.window,
        hop=args.hop, pooling=pooling, local_files_only=args.offline, backend=args.backend,
        quantize="int8" if args.int8 else None, compile=args.compile, threads=args.threads,
    )


def input_listing(args: argparse.Namespace):
    """The audio files the inputs name, and the places that could not be read (reported as failed items)."""
    from ast_audio.audio.files import scan_inputs

    listing = scan_inputs(args.inputs)
    listing.require_some(args.inputs)
    return listing


def report_skipped(command: str, skipped: list[str], quiet: bool) -> None:
    """Count, in the closing summary, the files a folder or glob held that are not audio (named under -v)."""
    import logging

    for path in skipped:
        logging.getLogger("ast_audio").info("skipped (not audio by its extension): %s", path)
    if skipped and not quiet:
        print(f"ast-audio {command}: skipped {len(skipped)} file{'s' if len(skipped) != 1 else ''} not audio by "
              "extension (-v names them)", file=sys.stderr)


class Progress:
    """Progress in seconds of audio on stderr: a bar on a terminal (unless --quiet) that moves with every
    model batch, and a closing line with the hours of audio and the speed as a multiple of real time."""

    def __init__(self, args: argparse.Namespace, command: str, files: int) -> None:
        from tqdm import tqdm

        self.command, self.files, self.done, self.failed, self.seconds = command, files, 0, 0, 0.0
        self.quiet = args.quiet
        self.started = time.perf_counter()
        self.bar = tqdm(desc=command, unit="s audio", unit_scale=True, file=sys.stderr, total=None,
                        disable=args.quiet or not sys.stderr.isatty(), postfix=f"0/{files} files")

    def audio(self, seconds: float) -> None:
        self.seconds += seconds
        self.bar.update(seconds)

    def file_done(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        self.bar.set_postfix_str(f"{self.done}/{self.files} files", refresh=False)

    def close(self) -> None:
        self.bar.close()
        elapsed = time.perf_counter() - self.started
        if not self.quiet:
            speed = f", {self.seconds / elapsed:.1f}x real time" if elapsed > 0 and self.seconds else ""
            print(f"ast-audio {self.command}: {self.done - self.failed} of {self.files} files, "
                  f"{self.seconds / 3600:.3f} h of audio in {elapsed:.1f} s{speed}", file=sys.stderr)


def exit_code(total: int, failed: int) -> int:
    """0: everything worked; 3: some inputs failed (reported); 1: all failed."""
    if failed == 0:
        return 0
    return 1 if failed == total else 3


def run_job(args: argparse.Namespace, command: str, output, chunk: Callable, pooling: str = "mean",
            after: Callable | None = None) -> int:
    """List the inputs, take the output (its lock first, so a second run on it fails before loading a model),
    skip what a resumed output already holds, and classify the rest, writing `chunk(result)` for each input
    and calling `after(result, number, total)` once it is written. Failures are reported on stderr and in the output."""
    from ast_audio.inference.results import ClipResult

    listing = input_listing(args)
    with output:
        todo = output.todo(listing.files)
        if len(todo) < len(listing.files):
            print(f"ast-audio {command}: resuming: {len(listing.files) - len(todo)} of {len(listing.files)} files "
                  f"already done, {len(todo)} to do", file=sys.stderr)
        classifier = load_classifier(args, pooling)
        progress = Progress(args, command, len(todo) + len(listing.problems))
        try:
            unreadable = [ClipResult(source=path, error=f"{path}: {reason}") for path, reason in listing.problems]
            results = classifier.iter_classify(todo, strict=args.strict, progress=progress.audio)
            for result in itertools.chain(unreadable, results):
                output.write(result.source, chunk(result))
                progress.file_done(result.ok)
                if not result.ok:
                    print(f"ast-audio {command}: {result.error}", file=sys.stderr)
                elif result.warning:
                    print(f"ast-audio {command}: {result.source}: warning: {result.warning}", file=sys.stderr)
                if after is not None:
                    after(result, progress.done - 1, progress.files)
        finally:
            progress.close()
    if progress.failed:
        print(f"ast-audio {command}: {progress.failed} of {progress.files} files failed", file=sys.stderr)
    report_skipped(command, listing.skipped, args.quiet)
    return exit_code(progress.files, progress.failed)

"""Arguments and helpers shared by the commands that run a model over audio files."""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections.abc import Callable


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="audio files, directories (searched recursively) or glob patterns")
    add_model_options(parser)
    parser.add_argument("--window", type=float, help="window length in seconds: from one patch of frames up to the "
                        "model's input (default: the whole input, 10.255 s for 1024 frames); a shorter window, "
                        "or a file shorter than one window, is zero-padded to the model's input, which a model "
                        "trained on full-length clips may read as a sound")
    parser.add_argument("--hop", type=float, help="seconds between window starts (default: half a window); a hop "
                        "longer than the window samples sparsely (the audio between windows is not scored)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per model call (default 8)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress (a bar on a terminal, else a line "
                        "every 30 s, or $AST_AUDIO_PROGRESS_INTERVAL) and no closing summary")
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
    from ast_audio.inference.options import BACKENDS, DEFAULT_MODEL, DTYPES

    parser.add_argument("--model", "-m", default=DEFAULT_MODEL,
                        help="checkpoint directory or Hugging Face Hub id (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=DTYPES, help="model precision (default float32)")
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
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
    from ast_audio.inference.options import InferenceOptions

    return InferenceOptions.from_args(args).numbers()


def load_classifier(args: argparse.Namespace, pooling: str = "mean"):
    """The model the command line's options name (`InferenceOptions.load`)."""
    from ast_audio.inference.options import InferenceOptions

    return InferenceOptions.from_args(args, pooling=pooling).load()


def input_listing(args: argparse.Namespace):
    """The audio files the inputs name, and the places that could not be read (reported as failed items)."""
    from ast_audio.audio.files import scan_inputs

    listing = scan_inputs(args.inputs)
    listing.require_some(args.inputs)
    return listing


def report_skipped(command: str, skipped: list[str], quiet: bool) -> None:
    """Count, in the closing summary, the files a folder or glob held that are not audio (named under -v)."""
    import logging

    if logging.getLogger("ast_audio").isEnabledFor(logging.INFO):  # -v
        for path in skipped:
            say(command, f"skipped (not audio by its extension): {path}")
    if skipped and not quiet:
        print(f"ast-audio {command}: skipped {len(skipped)} file{'s' if len(skipped) != 1 else ''} not audio by "
              "extension (-v names them)", file=sys.stderr)


PROGRESS_INTERVAL_ENV = "AST_AUDIO_PROGRESS_INTERVAL"  # seconds between progress lines off a terminal
PROGRESS_INTERVAL = 30.0


class Progress:
    """Progress in seconds of audio on stderr, unless --quiet.

    On a terminal: a bar that moves with every model batch, with a total, percentage and ETA once every input
    has been opened (the runner tells `plan` each input's windows). Off a terminal (a log file, nohup, cron,
    CI): a plain line every `AST_AUDIO_PROGRESS_INTERVAL` seconds (default 30) with the files done, the audio
    done and in all, the speed and the time left. At the end, a line with the hours of audio and the speed
    as a multiple of real time. Called as `progress(seconds)` after each batch."""

    def __init__(self, args: argparse.Namespace, command: str, files: int) -> None:
        """Raises `UsageError` for an $AST_AUDIO_PROGRESS_INTERVAL that is not a number of seconds."""
        from tqdm import tqdm

        self.command, self.files, self.done, self.failed, self.seconds = command, files, 0, 0, 0.0
        self.quiet = args.quiet
        self.started = self.last_line = time.perf_counter()
        self.terminal = sys.stderr.isatty()
        self.interval = progress_interval()
        self.planned: dict[str, float] = {}  # input -> seconds of audio its windows score
        self.unopened = 0  # inputs that failed before their windows were planned
        self.bar = tqdm(desc=command, unit="s audio", unit_scale=True, file=sys.stderr, total=None,
                        disable=args.quiet or not self.terminal, postfix=f"0/{files} files")

    @property
    def total_seconds(self) -> float | None:
        """Seconds of audio the whole job scores, once every input has been opened (else None)."""
        return sum(self.planned.values()) if len(self.planned) + self.unopened >= self.files else None

    def plan(self, plan) -> None:
        """An input was opened: its `WindowPlan` (windows in seconds) adds to the total."""
        self.planned[plan.source] = plan.windows[-1][1] if plan.windows else 0.0
        self._total_known()

    def __call__(self, seconds: float) -> None:
        self.seconds += seconds
        self.bar.update(seconds)
        self._line()


    def file_done(self, result) -> None:
        """A `ClipResult` was written (ok, or with its error)."""
        self.input_done(result.source, result.ok)

    def input_done(self, source: str, ok: bool) -> None:
        """The record of input `source` was written: `ok`, or its error."""
        self.done += 1
        if not ok:
            self.failed += 1
            if source in self.planned:  # what it would have scored is not coming
                self.planned[source] = 0.0
            else:
                self.unopened += 1
            self._total_known()
        self.bar.set_postfix_str(f"{self.done}/{self.files} files", refresh=False)
        self._line()

    def _total_known(self) -> None:
        total = self.total_seconds
        if total is not None and self.bar.total != total:
            self.bar.total = max(total, self.seconds)
            self.bar.refresh()

    def _line(self) -> None:
        """Off a terminal, a plain line when `interval` seconds have passed since the last one."""
        now = time.perf_counter()
        if self.quiet or self.terminal or now - self.last_line < self.interval:
            return
        self.last_line = now
        print(f"ast-audio {self.command}: {self.status(now - self.started)}", file=sys.stderr, flush=True)

    def status(self, elapsed: float) -> str:
        """e.g. '3 of 10 files, 412.0 of 1500.0 s of audio (27%), 5.2x real time, about 3 min 29 s left'; until
        every file is open, the audio so far and the time left by files."""
        speed = self.seconds / elapsed if elapsed > 0 else 0.0
        text = f"{self.done} of {self.files} files, "
        total = self.total_seconds
        if total is None:
            text += f"{self.seconds:.1f} s of audio so far"
            left = elapsed / self.done * (self.files - self.done) if self.done else None
            note = " (by files; by audio once every file is open)"
        else:
            text += f"{self.seconds:.1f} of {total:.1f} s of audio ({100 * self.seconds / max(total, 1e-9):.0f}%)"
            left, note = (max(total - self.seconds, 0.0) / speed if speed > 0 else None), ""
        if speed > 0:
            text += f", {speed:.1f}x real time"
        if left is not None:
            text += f", about {_duration(left)} left{note}"
        return text

    def close(self) -> None:
        self.bar.close()
        elapsed = time.perf_counter() - self.started
        if not self.quiet:
            speed = f", {self.seconds / elapsed:.1f}x real time" if elapsed > 0 and self.seconds else ""
            print(f"ast-audio {self.command}: {self.done - self.failed} of {self.files} files, "
                  f"{self.seconds / 3600:.3f} h of audio in {elapsed:.1f} s{speed}", file=sys.stderr)


def progress_interval() -> float:
    """Seconds between progress lines off a terminal: $AST_AUDIO_PROGRESS_INTERVAL, default 30."""
    from ast_audio.errors import UsageError

    value = os.environ.get(PROGRESS_INTERVAL_ENV, "")
    try:
        interval = float(value) if value else PROGRESS_INTERVAL
    except ValueError:
        interval = -1.0
    if not interval >= 0:
        raise UsageError(f"{PROGRESS_INTERVAL_ENV}={value!r}: expected seconds between progress lines, e.g. 30")
    return interval


def _duration(seconds: float) -> str:
    """'3 h 2 min', '3 min 29 s' or '12 s'."""
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def say(command: str, text: str) -> None:
    """A line on stderr, `ast-audio COMMAND: text`, with the control characters a file name may hold escaped
    (`printable.printable`): one line, whatever the name."""
    from ast_audio.printable import printable

    print(f"ast-audio {command}: {printable(text)}", file=sys.stderr)


def file_line(result) -> str:
    """One input in a line (for -v): its duration, windows and top label, or its error."""
    if not result.ok:
        return f"{result.source}: failed"
    top = result.top(1)
    best = f", top {top[0]['label']} {top[0]['score']:.2f}" if top else ""
    count = len(result.windows)
    return f"{result.source}: {result.duration:.2f} s, {count} window{'s' if count != 1 else ''}{best}"


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
    from ast_audio.jobs.records import unreadable

    listing = input_listing(args)
    progress_interval()  # a bad setting is refused before the model loads
    with output:
        todo = output.todo(listing.files)
        if len(todo) < len(listing.files):
            print(f"ast-audio {command}: resuming: {len(listing.files) - len(todo)} of {len(listing.files)} files "
                  f"already done, {len(todo)} to do", file=sys.stderr)
        classifier = load_classifier(args, pooling)
        progress = Progress(args, command, len(todo) + len(listing.problems))
        try:
            problems = [unreadable(path, reason) for path, reason in listing.problems]
            results = classifier.iter_classify(todo, strict=args.strict, progress=progress)
            for result in itertools.chain(problems, results):
                output.write(result.source, chunk(result))
                progress.file_done(result)
                if getattr(args, "verbose", False) and not args.quiet:
                    say(command, f"[{progress.done}/{progress.files}] {file_line(result)}")
                if not result.ok:
                    say(command, result.error)
                elif result.warning:
                    say(command, f"{result.source}: warning: {result.warning}")
                if after is not None:
                    after(result, progress.done - 1, progress.files)
        finally:
            progress.close()
    if progress.failed:
        print(f"ast-audio {command}: {progress.failed} of {progress.files} files failed", file=sys.stderr)
    report_skipped(command, listing.skipped, args.quiet)
    return exit_code(progress.files, progress.failed)

"""`ast-audio listen`: tag a stream as it plays (stdin, a network stream, a capture device), a JSON line a window."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator

from ast_audio.commands._answers import add_answer_arguments, check_answers
from ast_audio.commands._common import add_model_options

HELP = "tag a live stream (stdin, a URL, a capture device): one JSON line per window"
DESCRIPTION = (
    "Tag audio as it arrives. SOURCE is - (standard input: WAV or any container FFmpeg reads from a pipe, or raw "
    "PCM with --raw-format, --rate, --channels), a URL FFmpeg opens (HTTP/HTTPS Icecast-style streams, RTSP, ...), "
    "a path (a FIFO, a file), or omitted with --capture (an FFmpeg capture input, e.g. alsa:default). Windows of "
    "--window seconds every --hop seconds are scored as soon as their audio is complete, with the numbers "
    "classify gives the same audio as a file (exactly for audio at the model's rate, 16 kHz; other rates go "
    "through a streaming resampler). Each window prints {start, end, labels, wall_time}; a reconnect prints "
    "{gap: {start, end}, wall_time}; with --events, each event {event: {label, start, end, score, mean}, "
    "wall_time} once final. --duration, Ctrl-C and SIGTERM stop it cleanly (exit 0). Exit 1: the source cannot "
    "be read (one line on stderr); 2: a usage error."
)
OWN_SIGNALS = True  # SIGTERM/SIGHUP stop the stream cleanly (exit 0), not as a job cut short

RAW_FORMATS = ("s16le", "f32le")  # inference.stream.PCM_FORMATS's names (not imported here: --help stays fast)
DROP_WARNING_SECONDS = 10.0  # at most one warning about dropped windows this often (the closing line counts them all)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", nargs="?", metavar="SOURCE",
                        help="- for standard input, a URL (http://, https://, rtsp://, ...), or a path FFmpeg "
                             "reads as a stream (a FIFO, a file)")
    parser.add_argument("--capture", metavar="FORMAT:NAME",
                        help="read a capture device through FFmpeg's input devices instead of SOURCE, e.g. "
                             "alsa:default or alsa:hw:1 (the FFmpeg in PyAV's wheels has alsa; pulse needs a "
                             "PyAV built against an FFmpeg with it)")
    add_model_options(parser)
    parser.add_argument("--window", type=float, help="window length in seconds (default: the model's input)")
    parser.add_argument("--hop", type=float, help="seconds between window starts (default: half a window)")
    parser.add_argument("--batch-size", type=int, default=8, help="most windows per model call (default 8)")
    parser.add_argument("--top-k", "-k", type=int, default=5, help="labels per window (default 5)")
    parser.add_argument("--raw-format", choices=tuple(RAW_FORMATS),
                        help="standard input is raw PCM of this sample format (needs --rate; --channels default 1)")
    parser.add_argument("--rate", type=int, help="sampling rate of raw PCM in Hz (1000 to 768000)")
    parser.add_argument("--channels", type=int, help="channels of raw PCM, interleaved (default 1)")
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help="stop after this many seconds of stream time (the last window ends there, full "
                             "length; a duration shorter than a window is one window of that length, zero-padded, "
                             "as classify reads a file that short)")
    parser.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=None,
                        help="a live source: drop whole windows (counted, with a warning) when the model falls "
                             "behind, and reopen a URL that breaks off; default on for URLs and --capture, off for "
                             "standard input and paths, which are then read as fast as the model keeps up (never a "
                             "drop)")
    parser.add_argument("--reconnect", type=int, default=5, metavar="N",
                        help="reopen a URL that fails or breaks off (with --realtime; one that ends cleanly, a "
                             "file served with its length, is the end) up to N times in a row, waiting 1, 2, 4, "
                             "... s (default 5); the lost time is reported as a gap line")
    parser.add_argument("--quiet", "-q", action="store_true", help="no closing line on stderr")
    add_answer_arguments(parser)
    parser.set_defaults(format=None)  # check_answers reads it: listen has the one output form


def check_arguments(args: argparse.Namespace) -> None:
    """Every option checked before the model loads (`UsageError`: exit 2)."""
    from ast_audio.answers.options import AnswerOptions
    from ast_audio.errors import ConfigError, UsageError
    from ast_audio.inference.stream import check_pcm_rate

    if args.source is None and args.capture is None:
        raise UsageError("give a SOURCE (- for standard input, a URL or a path) or --capture FORMAT:NAME")
    if args.source is not None and args.capture is not None:
        raise UsageError(f"give a SOURCE or --capture, not both (got {args.source} and --capture {args.capture})")
    if args.raw_format and args.source != "-":
        raise UsageError("--raw-format is for standard input (SOURCE -)")
    if not args.raw_format and (args.rate is not None or args.channels is not None):
        raise UsageError("--rate and --channels describe raw PCM (with --raw-format); a container (WAV, ...) "
                         "gives its own")
    if args.raw_format and args.rate is None:
        raise UsageError(f"--raw-format {args.raw_format} needs --rate, the sampling rate in Hz (e.g. 16000)")
    try:
        if args.raw_format:
            check_pcm_rate(args.rate, "--rate")
    except ConfigError as error:
        raise UsageError(str(error)) from None
    if args.channels is not None and args.channels < 1:
        raise UsageError(f"--channels must be at least 1, got {args.channels}")
    if args.capture and ":" not in args.capture:
        raise UsageError(f"--capture {args.capture}: expected FORMAT:NAME, e.g. alsa:default")
    if args.duration is not None and not args.duration > 0:
        raise UsageError(f"--duration must be a positive number of seconds, got {args.duration}")
    if args.top_k < 1 or args.batch_size < 1 or args.reconnect < 0:
        raise UsageError("--top-k and --batch-size must be at least 1, --reconnect at least 0")
    try:
        answers = AnswerOptions.from_args(args)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    if answers.refine:
        raise UsageError("--refine reads the audio again around each event: a stream cannot be, so listen has no "
                         "finer pass")
    check_answers(args, ())


def open_source(args: argparse.Namespace, realtime: bool, stopped: Callable[[], bool] = lambda: False) -> Iterator:
    """The chunks of the source the arguments name (`inference.stream.Chunk`s, and floats for lost seconds);
    standard input ends where `stopped()` turns True."""
    from ast_audio.inference.stream import PipeReader, container_chunks, pcm_chunks, reconnecting, stream_chunks

    if args.raw_format:
        return pcm_chunks(PipeReader(sys.stdin.fileno(), stopped), args.raw_format, args.channels or 1, args.rate)
    if args.capture:
        device_format, name = args.capture.split(":", 1)
        return container_chunks(name, f"--capture {args.capture}", device_format)
    if args.source == "-":
        return stream_chunks(PipeReader(sys.stdin.fileno(), stopped), "standard input")

    if not realtime:  # a recording: reopening it would start it again, so a break ends it
        return kept_until_broken(container_chunks(args.source, args.source))

    def warn(attempt: int, reason: str) -> None:
        print(f"ast-audio listen: {reason}; reconnecting ({attempt}/{args.reconnect})", file=sys.stderr, flush=True)

    # A clean end is the end (a file served with its length, all of it read; FFmpeg reports a live HTTP stream
    # that closes, having no length, as an I/O error): only a break is reconnected, never a replay of a file.
    return reconnecting(lambda: container_chunks(args.source, args.source), args.reconnect, on_retry=warn)


def kept_until_broken(chunks: Iterator) -> Iterator:
    """`chunks` until they end or break off; a break after some audio ends the stream with a warning (what
    arrived is scored, as the file decoder keeps what decodes of a file cut short: an HTTP stream without a
    length ends so), a break before any audio is the error."""
    from ast_audio.errors import AudioError

    arrived = False
    try:
        for chunk in chunks:
            arrived = True
            yield chunk
    except AudioError as exc:
        if not arrived:
            raise
        print(f"ast-audio listen: warning: {exc}; the stream ends there", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    import signal

    from ast_audio.inference.options import InferenceOptions
    from ast_audio.inference.stream import LiveTagger, wall_time

    check_arguments(args)
    realtime = args.realtime if args.realtime is not None else bool(args.capture or "://" in args.source)
    classifier = InferenceOptions.from_args(args).load()
    answers = classifier.answers.build(classifier.labels) if classifier.answers.active else None
    tagger = LiveTagger(classifier.runner, answers, window=classifier.window, hop=classifier.hop, top_k=args.top_k,
                        realtime=realtime, batch_size=args.batch_size, events=classifier.answers.events is not None)

    stopped_by: list[str] = []

    def stop(signal_number: int, frame) -> None:
        """The first signal ends the stream as its end would (what is complete is scored, open events closed);
        a second one stops at once."""
        name = signal.Signals(signal_number).name
        if stopped_by:
            raise KeyboardInterrupt(name)
        stopped_by.append(name)
        tagger.stop()

    previous = {number: signal.signal(number, stop) for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    started, reported_drops, warned_at, how = time.monotonic(), 0, -DROP_WARNING_SECONDS, "the stream ended"
    try:
        for record in tagger.run(open_source(args, realtime, lambda: tagger.stopping), until=args.duration):
            print(json.dumps({**record, "wall_time": wall_time()}), flush=True)
            if tagger.dropped > reported_drops and time.monotonic() - warned_at >= DROP_WARNING_SECONDS:
                print(f"ast-audio listen: warning: the model falls behind the stream: {tagger.dropped} window(s) "
                      "dropped so far", file=sys.stderr, flush=True)
                reported_drops, warned_at = tagger.dropped, time.monotonic()
        if stopped_by:
            how = f"stopped by {stopped_by[0]}"
        elif args.duration is not None and tagger.planner.seconds >= args.duration - 1e-9:
            how = f"--duration {args.duration:g} s reached"
    except KeyboardInterrupt as exc:  # a second signal: the windows still waiting are not scored
        how = f"stopped by {stopped_by[0] if stopped_by else str(exc) or 'SIGINT'} (twice: at once)"
    except BrokenPipeError:
        return 0
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if not args.quiet:
        print(f"ast-audio listen: {how}: {tagger.windows} window(s) over {tagger.planner.seconds:.2f} s of stream "
              f"in {time.monotonic() - started:.1f} s, {tagger.dropped} dropped", file=sys.stderr)
    return 0

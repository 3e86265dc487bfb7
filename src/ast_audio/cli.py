"""The `ast-audio` command line. Sub-commands live in ast_audio.commands and import their heavy modules lazily."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

from ast_audio import __version__
from ast_audio.allocator import keep_freed_memory
from ast_audio.errors import ASTAudioError, UsageError
from ast_audio.printable import printable

# name -> module in ast_audio.commands; each has add_arguments(parser) and run(args) -> exit code, and HELP.
COMMANDS = ("classify", "embed", "serve", "train", "evaluate", "calibrate", "segments", "stats", "convert", "export", "listen")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ast-audio",
        description="Audio Spectrogram Transformer: tag, classify and fine-tune on audio.",
    )
    parser.add_argument("--version", action="version", version=f"ast-audio {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="more on stderr: a line per file (classify, embed) and the log's details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"ast_audio.commands.{name}")
        sub = subparsers.add_parser(name, help=module.HELP, description=module.DESCRIPTION)
        sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="more on stderr: a line per file (classify, embed) and the log's details "
                              "(also before the command)")
        module.add_arguments(sub)
        sub.set_defaults(run=module.run, keep_freed_memory=getattr(module, "KEEP_FREED_MEMORY", True),
                         own_signals=getattr(module, "OWN_SIGNALS", False))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = ["ast-audio", *(sys.argv[1:] if argv is None else argv)]
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    if args.keep_freed_memory:
        keep_freed_memory()  # batch after batch of same-sized buffers: reuse them instead of faulting pages in
    handlers = {} if args.own_signals else stop_on_signals()
    try:
        return args.run(args)
    except UsageError as exc:
        print(f"ast-audio {args.command}: error: {printable(str(exc))}", file=sys.stderr)
        return 2
    except (ASTAudioError, FileNotFoundError) as exc:
        print(f"ast-audio {args.command}: error: {printable(str(exc))}", file=sys.stderr)
        return 1
    except Stopped as exc:
        print(f"ast-audio {args.command}: stopped by {exc.name} (an output file keeps what finished: rerun with "
              "--resume to go on)", file=sys.stderr)
        return 128 + exc.signal_number
    except KeyboardInterrupt as exc:
        print(f"ast-audio {args.command}: interrupted{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 130
    finally:
        for number, handler in handlers.items():  # main() called from Python leaves its caller's handlers as they were
            signal.signal(number, handler)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: raised in the main thread, so a job unwinds as for Ctrl-C (its output's lock
    removed, its finished inputs kept for --resume), and the command exits 128 + the signal's number."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number, self.name = signal_number, signal.Signals(signal_number).name


def stop_on_signals() -> dict:
    """SIGTERM (kill, a scheduler's stop) and SIGHUP (a closed terminal) stop a command as Ctrl-C does, until
    the handlers returned (signal number -> the one before) are put back. A command with handlers of its own
    (serve, through uvicorn; train, within its loop) declares OWN_SIGNALS or replaces these while it runs."""

    def stop(signal_number: int, frame) -> None:
        raise Stopped(signal_number)

    return {number: signal.signal(number, stop) for number in (signal.SIGTERM, signal.SIGHUP)}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

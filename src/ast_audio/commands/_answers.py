"""The answers' options of the command line (events, class selection, event formats) and their checks.

`add_answer_arguments` declares them; `check_answers` runs before the model loads and turns every mistake
into a one-line `UsageError` (exit 2): a bad value, an event format without somewhere to write it, a label
name the checkpoint does not have, --rollup on a checkpoint whose labels are not AudioSet's; a thresholds file
naming labels the checkpoint lacks is a one-line warning (they are ignored).
`InferenceOptions.from_args` reads the parsed values (`AnswerOptions.from_args`).
"""

from __future__ import annotations

import argparse
import os
import sys

from ast_audio.errors import UsageError


def add_answer_arguments(parser: argparse.ArgumentParser) -> None:
    """--events, its thresholds and durations, --decide, and the class selection (--include, --exclude, --group,
    --rollup)."""
    events = parser.add_argument_group(
        "events", "sound events with an onset and an offset, one per sound: the window scores are combined into "
        "one score track per class (on each stretch, the minimum over the windows that cover it), then an event is "
        "a stretch of the track at or above --threshold-off that reaches --threshold somewhere: it starts where "
        "the track first reaches --threshold-off and lasts while it stays there (hysteresis). Thresholds are "
        "scores in [0, 1]. Thresholds apply to the scores as the checkpoint's scoring rule gives them: sigmoid "
        "probabilities for multi-label checkpoints (AudioSet; the defaults suit them), softmax for single-label "
        "ones, which share 1 among the classes (lower thresholds may be needed)")
    events.add_argument("--events", action="store_true",
                        help="find events (implied by any option below and by --format raven, audacity, vtt, srt)")
    events.add_argument("--threshold", type=float, metavar="SCORE",
                        help="score an event must reach (default 0.5; a thresholds file's default replaces it)")
    events.add_argument("--threshold-off", type=float, metavar="SCORE",
                        help="score an event lasts while at or above (default 0.6 x the threshold: 0.3 for 0.5; "
                        "at most the threshold; a class with its own threshold keeps the proportion)")
    events.add_argument("--min-duration", type=float, metavar="SECONDS", help="drop events shorter than this many seconds (default 0)")
    events.add_argument("--min-gap", type=float, metavar="SECONDS",
                        help="merge events of one class less than this many seconds apart (default 0)")
    events.add_argument("--refine", type=int, metavar="ROUNDS",
                        help="a finer pass: per round, one extra window scored at each event boundary, halving the "
                        "stretch it is known to (a hop after the first pass); 1 to 3 rounds, 1 recommended (2 "
                        "extra windows per event; more rounds cost windows and gain little); default 0: off")
    events.add_argument("--thresholds", metavar="FILE",
                        help="a threshold per class (thresholds.json from ast-audio calibrate; default: the "
                        "checkpoint folder's thresholds.json when it has one, with events on)")
    decisions = parser.add_argument_group(
        "decisions", "the labels present: every class whose clip score (and, per window, whose window score) is "
        "at or above its threshold, not only the top-k; thresholds from --thresholds FILE, else the checkpoint "
        "folder's thresholds.json (ast-audio calibrate), else --threshold for every class (default 0.5); a class "
        "without its own threshold (a --group, a --rollup parent) uses the file's default")
    decisions.add_argument("--decide", action="store_true",
                           help="report the labels above their thresholds per file and window (with --decide, "
                           "--threshold and --thresholds set the decisions' thresholds and do not turn events on)")
    add_selection_arguments(parser)


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    """The class selection: --include, --exclude, --group, --rollup (read by `AnswerOptions.from_args`; also
    `segments`')."""
    selection = parser.add_argument_group(
        "classes", "the classes scored, labelled and found as events (applied before --top-k and events); names "
        "match the checkpoint's labels exactly (AudioSet names hold commas: 'Male speech, man speaking')")
    selection.add_argument("--include", action="append", metavar="LABEL",
                           help="keep only this class (repeat the option; @FILE: a file of names, one a line)")
    selection.add_argument("--exclude", action="append", metavar="LABEL",
                           help="leave out this class (repeat the option; @FILE: a file of names, one a line)")
    selection.add_argument("--group", action="append", metavar="NAME=LABEL,LABEL",
                           help="a new class NAME scoring the maximum of its members (repeat for more groups; a "
                           "comma inside a label as \\, ; NAME=@FILE for a file of members)")
    selection.add_argument("--rollup", action="store_true",
                           help="AudioSet hierarchy: a class scores the maximum over itself and its descendants, "
                           "and parents become labels ('Animal', 'Vehicle'); AudioSet checkpoints only")


def check_answers(args: argparse.Namespace, event_formats: tuple[str, ...]) -> None:
    """Before any work: events turned on for an event `args.format`, the options' values checked, and the label
    names checked against the checkpoint's labels where its config can be read without loading the model.
    Raises `UsageError` (one line)."""
    from ast_audio.answers.options import AnswerOptions
    from ast_audio.errors import ConfigError

    if args.format in event_formats:
        args.events = True
    try:
        answers = AnswerOptions.from_args(args)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    own = _class_threshold_labels(answers)
    if answers.selects or own:
        labels = _checkpoint_labels(args)
        if labels is not None:
            try:
                built = answers.build(labels)
            except ConfigError as error:
                raise UsageError(f"--model {args.model}: {error}") from None
            unknown = sorted(own - set(labels) - set(built.labels))
            if unknown:
                print(f"ast-audio: warning: the thresholds name labels the model lacks (ignored): {', '.join(unknown)}",
                      file=sys.stderr)


def _class_threshold_labels(answers) -> set[str]:
    """The labels with their own threshold (a thresholds file's) in the events' or the decisions' options."""
    own = set()
    for options in (answers.events, answers.decide):
        if options is not None:
            own |= {label for label, _ in options.class_thresholds}
    return own


def _checkpoint_labels(args: argparse.Namespace) -> list[str] | None:
    """The checkpoint's labels from its config.json when it is a local folder (None otherwise: the model's
    loading checks them)."""
    config = os.path.join(os.fspath(args.model), "config.json")
    if not os.path.isfile(config):
        return None
    from ast_audio.model.configuration import ASTConfig

    try:
        loaded = ASTConfig.from_pretrained(os.fspath(args.model))
    except Exception:  # an unreadable config is the model loader's to report, with its message
        return None
    return [loaded.id2label[index] for index in range(loaded.num_labels)]

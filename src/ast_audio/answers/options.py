"""What a job answers besides scores: the class selection and the events, as one options object.

`AnswerOptions` is what a user asks for (frozen, hashable, JSON-able through `numbers`): the command line
builds it once (`from_args`), `InferenceOptions.answers` carries it, `AudioClassifier.from_pretrained(...,
answers=...)` takes it, and the service and Ray take the same object. `AnswerOptions.build(labels)` turns it,
for one model's labels, into `Answers`, the precomputed plan `inference.prepare.assemble` applies to every
input's window scores: first the selection (`answers.selection.ClassSelection`: rollup, groups, include,
exclude), so that labels, pooled scores, top-k, the timeline and the events all use the selected classes;
then the events (`answers.events.events_from_windows`) from the selected window scores, and the decisions
(`answers.decisions`: the selected classes at or above their thresholds, for the clip and each window).

    >>> AnswerOptions(events=True, include=["Dog", "Cat"])                      # events of two classes
    >>> AnswerOptions(events=EventOptions(threshold=0.6, min_gap=1.0), rollup=True, groups={"pet": ["Dog", "Cat"]})
    >>> AnswerOptions(decide=Path("ckpt/thresholds.json"))                   # labels above their thresholds
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ast_audio.answers.decisions import Decision, DecisionThresholds, decisions_of
from ast_audio.answers.events import Event, EventOptions, events_from_windows
from ast_audio.answers.selection import ClassSelection, read_label_file
from ast_audio.errors import ConfigError

__all__ = ["AnswerOptions", "Answers", "MAX_REFINE"]

# The most rounds of the finer pass: past 1-2 rounds a boundary converges on where a window starts to fire,
# not on the sound's onset (answers.refine), so more rounds only cost windows.
MAX_REFINE = 3


def _names(value: Any, role: str) -> tuple[str, ...] | None:
    """A tuple of label names from a list of names or a path (`os.PathLike`) to a file of them (one a line),
    each name once (the first time it appears)."""
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        return tuple(dict.fromkeys(name for name, _ in read_label_file(value)))
    if isinstance(value, str):
        raise ConfigError(f"{role} must be a list of label names or a Path to a file of them, got the string {value!r}")
    return tuple(dict.fromkeys(str(name) for name in value))  # a name repeated counts once, order kept


def _groups(value: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not value:
        return ()
    pairs = value.items() if isinstance(value, Mapping) else value
    try:
        out = []
        for name, members in pairs:
            if isinstance(members, str) or not members:
                raise ConfigError(f"group {name!r} needs a list of at least one label, got {members!r}")
            out.append((str(name), tuple(dict.fromkeys(str(member) for member in members))))
    except (TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"groups must map a name to a list of labels, got {value!r}") from None
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class AnswerOptions:
    """The class selection and the event detection of a job (all off by default: every model class, no events).

    include / exclude: label names to keep (in that order) / drop, or a path (`os.PathLike`) to a UTF-8 file
        of names, one a line (read here; the options hold the names).
    groups: {name: [label, ...]}: a new label whose score is the maximum of its members' (after rollup).
    rollup: with the AudioSet hierarchy, a class scores the maximum over itself and its descendants, and
        its ancestors become labels ("Animal", "Vehicle"); AudioSet checkpoints only.
    events: `EventOptions` (thresholds, minimum duration and gap), True for the defaults, or None (off).
    refine: rounds of the finer pass (`answers.refine`; 0: off, at most `MAX_REFINE`, 1 recommended): each
        round scores one extra window per event boundary and halves the stretch the boundary is known to (a
        hop after the first pass), for 2 r extra windows per event in r rounds (`inference.finer`).
    decide: report the labels at or above their thresholds, per clip and per window (`answers.decisions`):
        True (0.5 for every label), a global threshold, a `Thresholds` or a path (`os.PathLike`) to a
        thresholds.json (read here), or a `DecisionThresholds`; None (off). The Python API reads no file
        unless given one; the command line and the service take the checkpoint's thresholds.json
        (`from_args`).

    Raises `ConfigError` (one line) for values of the wrong kind; names are checked against a model's labels
    by `build`.
    """

    include: Sequence[str] | os.PathLike | None = None
    exclude: Sequence[str] | os.PathLike | None = None
    groups: Mapping[str, Sequence[str]] | tuple[tuple[str, tuple[str, ...]], ...] = ()
    rollup: bool = False
    events: EventOptions | bool | None = None
    refine: int = 0
    decide: DecisionThresholds | Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "include", _names(self.include, "include"))
        object.__setattr__(self, "exclude", _names(self.exclude, "exclude"))
        object.__setattr__(self, "groups", _groups(self.groups))
        object.__setattr__(self, "rollup", bool(self.rollup))
        events = self.events
        if events is True:
            events = EventOptions()
        elif events is False:
            events = None
        elif events is not None and not isinstance(events, EventOptions):
            raise ConfigError(f"events must be an EventOptions, True or None, got {events!r}")
        object.__setattr__(self, "events", events)
        if isinstance(self.refine, bool) or not isinstance(self.refine, int) or not 0 <= self.refine <= MAX_REFINE:
            raise ConfigError(f"refine must be a number of rounds from 0 to {MAX_REFINE} (1 recommended), "
                              f"got {self.refine!r}")
        if self.refine and events is None:
            raise ConfigError("refine (the finer pass) sharpens events: turn events on")
        object.__setattr__(self, "decide", DecisionThresholds.of(self.decide))

    @property
    def selects(self) -> bool:
        """True when the options change the model's classes (rollup, groups, include or exclude)."""
        return bool(self.rollup or self.groups or self.include is not None or self.exclude is not None)

    @property
    def active(self) -> bool:
        """True when the options change anything (a selection, events, or decisions)."""
        return self.selects or self.events is not None or self.decide is not None

    def numbers(self) -> dict[str, Any]:
        """The options that change an output's numbers, JSON-native (lists, not tuples, so a resume compares
        them with what it read back): "selection" when the classes change, "events" when events are on,
        "decide" when decisions are (`DecisionThresholds.numbers`: the default and a hash of the thresholds);
        empty by default (so outputs written before these options existed resume as before)."""
        out: dict[str, Any] = {}
        if self.selects:
            out["selection"] = {
                "include": None if self.include is None else list(self.include),
                "exclude": None if self.exclude is None else list(self.exclude),
                "groups": {name: list(members) for name, members in self.groups},
                "rollup": self.rollup,
            }
        if self.events is not None:
            events = self.events
            out["events"] = {"threshold": events.threshold, "threshold_off": events.threshold_off,
                             "min_duration": events.min_duration, "min_gap": events.min_gap,
                             "class_thresholds": {label: value for label, value in events.class_thresholds}}
            if self.refine:
                out["events"]["refine"] = self.refine
        if self.decide is not None:
            out["decide"] = self.decide.numbers()
        return out

    def build(self, labels: Sequence[str], label_ids: Sequence[str | None] | None = None) -> "Answers":
        """The plan for a model whose classes are `labels` (in output order of its scores); `label_ids` their
        AudioSet ids where the checkpoint carries them (for rollup). Cached: the same options and labels give
        the same plan at once. Raises `ConfigError` naming a label the model does not have, or rollup over
        labels that are not AudioSet's."""
        return _build(self, tuple(labels), None if label_ids is None else tuple(label_ids))

    @classmethod
    def from_args(cls, args: Any) -> "AnswerOptions":
        """The options of a command line (`commands.classify`): --events, --threshold, --threshold-off,
        --min-duration, --min-gap, --thresholds FILE (any of these implies events; events only for a command
        that declares --events), --include, --exclude (names, or @FILE), --group NAME=LABEL,LABEL (repeated),
        --rollup, --decide (thresholds from --thresholds FILE, else the checkpoint folder's thresholds.json, else
        --threshold for every class, else 0.5; with --decide, --threshold and --thresholds no longer imply
        events). Attributes the command does not declare are off. Raises `ConfigError` for a bad value or an
        unreadable file, naming it."""
        get = functools.partial(getattr, args)
        return cls(include=_cli_names(get("include", None)), exclude=_cli_names(get("exclude", None)),
                   groups=_cli_groups(get("group", None) or []), rollup=get("rollup", False),
                   events=_cli_events(args), refine=get("refine", None) or 0, decide=_cli_decide(args))


THRESHOLDS_NAME = "thresholds.json"  # `ast-audio calibrate`'s per-class thresholds, beside the checkpoint


def _cli_events(args: Any) -> EventOptions | None:
    """The event options of a command line, the rule `calibrate`, `segments` and `evaluate --annotations`
    follow too: per-class thresholds from --thresholds FILE, else the checkpoint folder's thresholds.json
    (`answers.thresholds.Thresholds`), whose default replaces --threshold (default 0.5); --threshold-off
    defaults to 0.6 x the threshold (0.3 for 0.5), and each class keeps that proportion."""
    if not hasattr(args, "events"):
        return None  # a command without --events (calibrate, segments: their thresholds are their own)
    get = functools.partial(getattr, args)
    given = {name: get(name, None) for name in ("threshold", "threshold_off", "min_duration", "min_gap")}
    given = {name: value for name, value in given.items() if value is not None}
    deciding = get("decide", False)  # then --threshold and --thresholds are the decisions', not a call for events
    implying = [name for name in given if not (deciding and name == "threshold")]
    if not (get("events", False) or implying or (get("thresholds", None) and not deciding) or get("refine", None)):
        return None
    own: dict[str, float] = {}
    thresholds = _cli_thresholds(args)
    if thresholds is not None:
        given["threshold"], own = thresholds.default, dict(thresholds.thresholds)
    return EventOptions(**given, class_thresholds=own)  # its rule for the default threshold_off


def _cli_thresholds(args: Any):
    """The `answers.thresholds.Thresholds` of a command line: --thresholds FILE, else the checkpoint folder's
    thresholds.json when it has one, else None."""
    path, model = getattr(args, "thresholds", None), getattr(args, "model", None)
    if path is None and isinstance(model, (str, os.PathLike)):
        beside = os.path.join(os.fspath(model), THRESHOLDS_NAME)
        path = beside if os.path.isfile(beside) else None
    if path is None:
        return None
    from ast_audio.answers.thresholds import Thresholds

    return Thresholds.read(path)


def _cli_decide(args: Any) -> DecisionThresholds | None:
    """The decisions of a command line (--decide): the thresholds file's (`_cli_thresholds`), as events take
    them (its default replaces --threshold), else --threshold for every class, else 0.5."""
    if not getattr(args, "decide", False):
        return None
    thresholds = _cli_thresholds(args)
    if thresholds is not None:
        return DecisionThresholds.of(thresholds)
    threshold = getattr(args, "threshold", None)
    return DecisionThresholds() if threshold is None else DecisionThresholds(threshold)


def _cli_names(values: Sequence[str] | None) -> tuple[str, ...] | None:
    """Names given on a command line: each value one label name, or @FILE for a file of names (one a line).

    Label names hold commas ("Male speech, man speaking"), so a value is never split on them."""
    if values is None:
        return None
    names: list[str] = []
    for value in values:
        if value.startswith("@"):
            names += [name for name, _ in read_label_file(value[1:])]
        else:
            names.append(value)
    return tuple(names)


def _cli_groups(values: Sequence[str]) -> dict[str, list[str]]:
    """{name: members} from --group NAME=LABEL,LABEL values (a member that holds a comma is written with `\\,`)
    or NAME=@FILE (a file of member names, one a line)."""
    groups: dict[str, list[str]] = {}
    for value in values:
        name, sep, members = value.partition("=")
        if not sep or not name.strip() or not members.strip():
            raise ConfigError(f"--group {value!r}: expected NAME=LABEL,LABEL,... (or NAME=@FILE)")
        if name.strip() in groups:
            raise ConfigError(f"--group {name.strip()!r} is given twice")
        if members.startswith("@"):
            groups[name.strip()] = [label for label, _ in read_label_file(members[1:])]
        else:
            parts = members.replace("\\,", "\0").split(",")
            groups[name.strip()] = [part.replace("\0", ",").strip() for part in parts if part.strip()]
    return groups


@dataclasses.dataclass(frozen=True, eq=False)
class Answers:
    """`AnswerOptions` built for one model: the selection plan and the event options.

    model_labels: the model's classes, as its scores give them; labels: the output classes (after the
    selection); selection: None when the classes are the model's unchanged; events: None when off; decide:
    the thresholds of the decisions (`answers.thresholds.Thresholds`), None when off.
    """

    options: AnswerOptions
    model_labels: tuple[str, ...]
    labels: tuple[str, ...]
    selection: ClassSelection | None
    events: EventOptions | None
    decide: Any = None  # `Thresholds`, None when off

    def select(self, scores: np.ndarray) -> np.ndarray:
        """Scores (..., model classes) -> (..., output classes), the same dtype; unchanged without a selection.
        Raises `ConfigError` when the last axis is not the model's number of classes."""
        if self.selection is None:
            scores = np.asarray(scores)
            if scores.ndim == 0 or scores.shape[-1] != len(self.model_labels):
                raise ConfigError(f"scores must end with the model's {len(self.model_labels)} classes, got shape "
                                  f"{scores.shape}")
            return scores
        return self.selection.apply(scores)

    def detect(self, windows: Sequence[tuple[float, float]], selected_scores: np.ndarray) -> list[Event] | None:
        """The events of one input from its windows ((start, end) s) and their selected scores (windows, output
        classes), sorted by start; None when events are off; [] for an input without windows."""
        if self.events is None:
            return None
        if len(windows) == 0:
            return []
        return events_from_windows(windows, selected_scores, self.labels, self.events)

    def decisions(self, selected_scores: np.ndarray) -> list[list[Decision]] | None:
        """For each row of `selected_scores` (rows, output classes: a clip's pooled scores, or its windows'),
        the labels at or above their thresholds, highest score first (`answers.decisions.decisions_of`); None
        when decisions are off."""
        if self.decide is None:
            return None
        return decisions_of(selected_scores, self.labels, self.decide)


@functools.lru_cache(maxsize=64)
def _build(options: AnswerOptions, labels: tuple[str, ...], label_ids: tuple[str | None, ...] | None) -> Answers:
    selection = None
    if options.selects:
        selection = ClassSelection.build(
            dict(enumerate(labels)), include=options.include, exclude=options.exclude,
            groups=dict(options.groups) or None, rollup=options.rollup, label_ids=label_ids,
        )
        if selection.is_identity:
            selection = None
    output = labels if selection is None else selection.labels
    decide = None if options.decide is None else options.decide.thresholds()
    return Answers(options, labels, tuple(output), selection, options.events, decide)

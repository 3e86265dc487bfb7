"""Class selection: the classes a user cares about, their own groups, and general or specific answers.

Applied to scores before top-k and events, as one precomputed plan (`ClassSelection.build`, then `.apply`
on every batch of scores). Each output class's score is the **maximum** of the model's scores over a set of
the model's classes, built in this order:

1. `rollup` (AudioSet checkpoints): with the AudioSet hierarchy, each class's score becomes the maximum over
   itself and all its descendants among the model's labels, and every ancestor of a model label is added as
   a label ("Animal" scores as high as its most confident dog, cat or bird). Classes with two parents count
   under both. Model labels are matched to the ontology by id where `label_ids` gives them (a checkpoint's
   AudioSet machine ids, e.g. "/m/0bt9lr"), else by exact name; any label that matches nothing is refused
   (a checkpoint whose labels are not AudioSet's cannot be rolled up). Rolling up twice changes nothing.
2. `groups` ({name: [label, ...]}): a new label whose score is the maximum of its members' (after roll-up,
   so a member may be a parent such as "Vehicle"). E.g. {"alarm": ["Smoke detector, smoke alarm",
   "Fire alarm", "Siren"]}.
3. `include` / `exclude`: keep only the named labels (in the order given) / drop the named ones.

Names match exactly (case and punctuation count: AudioSet names hold commas, e.g. "Male speech, man
speaking"); a name that matches nothing is refused with the closest names as a suggestion. A list of names
may come from a file (a `pathlib.Path`): one name per line, lines split on newline only, surrounding spaces
and empty lines ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from ast_audio.answers.ontology import Ontology, audioset_ontology
from ast_audio.errors import ConfigError

Names = Union[Sequence[str], "os.PathLike[str]"]


def suggest(name: str, choices: Sequence[str]) -> str:
    """' (did you mean 'X'?)' for the closest of `choices` to `name` (case-insensitive first), or ''."""
    folded = {choice.casefold(): choice for choice in choices}
    if name.casefold() in folded:
        return f" (did you mean {folded[name.casefold()]!r}?)"
    close = difflib.get_close_matches(name.casefold(), list(folded), n=2, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(folded[match]) for match in close) + "?)"


def read_label_file(path: str | os.PathLike[str]) -> list[tuple[str, int]]:
    """(name, line number) for each non-empty line of a UTF-8 text file of label names.

    Raises `ConfigError` naming the file when it cannot be read or is not UTF-8 text.
    """
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except OSError as error:
        raise ConfigError(f"{os.fspath(path)}: cannot read the list of labels ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{os.fspath(path)}: not UTF-8 text (byte {error.start})") from None
    lines = ((line.strip(), number) for number, line in enumerate(text.split("\n"), start=1))
    return [(name, number) for name, number in lines if name]


def _named(names: Names, role: str) -> list[tuple[str, str]]:
    """(name, where it came from for error messages) for a list of names or a file of them."""
    if isinstance(names, os.PathLike):
        return [(name, f"{os.fspath(names)} line {number}") for name, number in read_label_file(names)]
    if isinstance(names, str):
        raise ConfigError(f"{role} must be a list of label names or a Path to a file of them, got the string {names!r}")
    return [(str(name), role) for name in names]


@dataclasses.dataclass(frozen=True, eq=False)
class ClassSelection:
    """A precomputed selection: output `labels` and, for each, the model's columns whose maximum it is.

    labels: output label names, in output order. sources: one int64 array of model columns per output label.
    num_inputs: the number of model classes the scores must have.
    """

    labels: tuple[str, ...]
    sources: tuple[np.ndarray, ...]
    num_inputs: int

    @classmethod
    def build(
        cls,
        id2label: Mapping[int, str] | Mapping[str, str],
        *,
        include: Names | None = None,
        exclude: Names | None = None,
        groups: Mapping[str, Sequence[str]] | None = None,
        rollup: bool = False,
        label_ids: Sequence[str | None] | None = None,
        ontology: Ontology | None = None,
    ) -> ClassSelection:
        """The plan for a model with `id2label` ({index: name}, indices 0..n-1, int or str as in a config).

        label_ids: the ontology id of each model label by index (optional, used by rollup; an empty or None
            entry falls back to the label's name).
        ontology: the hierarchy for rollup (default: the shipped AudioSet ontology).
        Raises `ConfigError` (one line) for an unknown name, a group that reuses a label's name or has no
        members, or rollup on labels that are not AudioSet classes.
        """
        names = _model_labels(id2label)
        labels, sources = list(names), [np.array([column]) for column in range(len(names))]
        if rollup:
            labels, sources = _rollup(names, label_ids, ontology or audioset_ontology())
        if groups:
            labels, sources = _add_groups(labels, sources, groups)
        if include is not None or exclude is not None:
            keep = _filter(labels, include, exclude)
            labels, sources = [labels[index] for index in keep], [sources[index] for index in keep]
        return cls(tuple(labels), tuple(np.asarray(source, dtype=np.int64) for source in sources), len(names))

    @property
    def id2label(self) -> dict[int, str]:
        """{index: name} of the output classes."""
        return dict(enumerate(self.labels))

    @property
    def is_identity(self) -> bool:
        """True when `apply` returns the scores unchanged."""
        return len(self.labels) == self.num_inputs and all(
            source.tolist() == [column] for column, source in enumerate(self.sources)
        )

    def apply(self, scores: Any) -> np.ndarray:
        """Scores of shape (..., model classes) -> (..., selected classes), same dtype (maximum over sources).

        Raises `ConfigError` when the last axis is not the model's number of classes.
        """
        scores = np.asarray(scores)
        if scores.ndim == 0 or scores.shape[-1] != self.num_inputs:
            raise ConfigError(f"scores must end with the model's {self.num_inputs} classes, got shape {scores.shape}")
        if self.is_identity:
            return scores
        out = np.empty(scores.shape[:-1] + (len(self.labels),), dtype=scores.dtype)
        single = [position for position, source in enumerate(self.sources) if len(source) == 1]
        out[..., single] = scores[..., [int(self.sources[position][0]) for position in single]]
        for position, source in enumerate(self.sources):
            if len(source) > 1:
                out[..., position] = scores[..., source].max(axis=-1)
        return out


def _model_labels(id2label: Mapping[Any, str]) -> list[str]:
    try:
        by_index = {int(index): str(name) for index, name in id2label.items()}
    except (TypeError, ValueError):
        raise ConfigError(f"id2label keys must be class indices, got {sorted(map(str, id2label))[:3]}") from None
    if sorted(by_index) != list(range(len(by_index))) or not by_index:
        raise ConfigError(f"id2label must number its {len(by_index)} classes 0..{len(by_index) - 1}")
    names = [by_index[index] for index in range(len(by_index))]
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise ConfigError(f"id2label names {twice!r} twice: class names must be unique to select by name")
    return names


def _ontology_ids(names: list[str], label_ids: Sequence[str | None] | None, ontology: Ontology) -> list[str]:
    if label_ids is not None and len(label_ids) != len(names):
        raise ConfigError(f"label_ids has {len(label_ids)} ids for {len(names)} labels")
    ids, missing = [], []
    for index, name in enumerate(names):
        given = label_ids[index] if label_ids is not None else None
        if given and given in ontology:
            ids.append(given)
        elif not given and ontology.has_name(name):
            ids.append(ontology.by_name(name).id)
        else:
            missing.append((index, name, given))
    if missing:
        index, name, given = missing[0]
        shown = f"id {given!r} is not an AudioSet class id" if given else (
            f"{name!r} is not an AudioSet class name{suggest(name, ontology.names)}"
        )
        raise ConfigError(
            f"rollup needs AudioSet labels: label {index}, {shown}; {len(missing)} of {len(names)} labels are not"
        )
    return ids


def _rollup(names: list[str], label_ids: Sequence[str | None] | None, ontology: Ontology) -> tuple[list, list]:
    ids = _ontology_ids(names, label_ids, ontology)
    columns_of: dict[str, list[int]] = {}
    for column, class_id in enumerate(ids):
        columns_of.setdefault(class_id, []).append(column)
    wanted = set(ids).union(*(ontology.ancestors(class_id) for class_id in ids))
    added = [class_id for class_id in ontology.ids if class_id in wanted and class_id not in columns_of]
    labels, sources = [], []
    for class_id, label in [*zip(ids, names), *((class_id, ontology[class_id].name) for class_id in added)]:
        below = {class_id} | ontology.descendants(class_id)
        columns = sorted(column for member in below & columns_of.keys() for column in columns_of[member])
        labels.append(label)
        sources.append(np.array(columns))
    return labels, sources


def _find(name: str, where: str, labels: list[str], index: dict[str, int]) -> int:
    if name not in index:
        raise ConfigError(f"{where}: {name!r} is not a label of the model{suggest(name, labels)}")
    return index[name]


def _add_groups(labels: list[str], sources: list, groups: Mapping[str, Sequence[str]]) -> tuple[list, list]:
    index = {label: position for position, label in enumerate(labels)}
    labels, sources = list(labels), list(sources)
    for name, members in groups.items():
        if name in index:
            raise ConfigError(f"group {name!r} has the name of a label of the model: choose another name")
        if isinstance(members, str) or not members:
            raise ConfigError(f"group {name!r} needs a list of at least one label, got {members!r}")
        found = [_find(member, f"group {name!r}", labels, index) for member in members]
        labels.append(name)
        sources.append(np.unique(np.concatenate([sources[position] for position in found])))
    return labels, sources


def _filter(labels: list[str], include: Names | None, exclude: Names | None) -> list[int]:
    index = {label: position for position, label in enumerate(labels)}
    keep = list(range(len(labels)))
    if include is not None:
        keep = list(dict.fromkeys(_find(name, where, labels, index) for name, where in _named(include, "include")))
    if exclude is not None:
        dropped = {_find(name, where, labels, index) for name, where in _named(exclude, "exclude")}
        keep = [position for position in keep if position not in dropped]
    if not keep:
        raise ConfigError("the class selection leaves no label: include and exclude remove every class")
    return keep

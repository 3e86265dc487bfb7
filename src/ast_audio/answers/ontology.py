"""The AudioSet ontology shipped with the package: 632 sound classes in a hierarchy, and the 527 labels of the
AudioSet checkpoints.

The hierarchy is a directed acyclic graph, not a tree: 38 classes have two or more parents ("Growling" is
under "Dog", "Cat", "Roaring cats (lions, tigers)" and "Canidae, dogs, wolves"). Its seven roots are
"Human sounds", "Animal", "Music", "Natural sounds", "Sounds of things", "Source-ambiguous sounds" and
"Channel, environment and background". Some classes are `abstract` (groupings with no training label, e.g.
"Human sounds") or `blacklist` (left out of the released label set); the 527 checkpoint labels are a subset
of the classes, with the same names.

Source and licence: the AudioSet ontology (Gemmeke et al., ICASSP 2017), CC BY-SA 4.0; see
`data/LICENSE-audioset-ontology` beside the data files. The files are read once, on first use.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
from collections.abc import Iterable, Mapping
from importlib import resources

HIERARCHY_FILE = "audioset_hierarchy.json"
LABELS_FILE = "audioset_class_labels_indices.csv"


@dataclasses.dataclass(frozen=True)
class OntologyClass:
    """One class: `id` (e.g. "/m/0bt9lr"), `name` (e.g. "Dog"), `child_ids`, `restrictions` ("abstract",
    "blacklist")."""

    id: str
    name: str
    child_ids: tuple[str, ...]
    restrictions: tuple[str, ...] = ()


class Ontology:
    """A class hierarchy (a DAG) with lookups by id and by name; ids and names are unique.

    Ids are what every method takes and returns; `by_name` turns a name into its class.
    """

    def __init__(self, classes: Iterable[OntologyClass]) -> None:
        self._classes: dict[str, OntologyClass] = {}
        for item in classes:
            if item.id in self._classes:
                raise ValueError(f"ontology class id {item.id!r} appears twice")
            self._classes[item.id] = item
        self._by_name = {item.name: item for item in self._classes.values()}
        if len(self._by_name) != len(self._classes):
            raise ValueError("ontology class names must be unique")
        parents: dict[str, list[str]] = {class_id: [] for class_id in self._classes}
        for item in self._classes.values():
            for child in item.child_ids:
                if child not in self._classes:
                    raise ValueError(f"ontology class {item.name!r} names an unknown child {child!r}")
                parents[child].append(item.id)
        self._parents = {class_id: tuple(ids) for class_id, ids in parents.items()}

    def __len__(self) -> int:
        return len(self._classes)

    def __contains__(self, class_id: object) -> bool:
        return class_id in self._classes

    @property
    def ids(self) -> tuple[str, ...]:
        """Every class id, in the file's order."""
        return tuple(self._classes)

    @property
    def names(self) -> tuple[str, ...]:
        """Every class name, in the file's order."""
        return tuple(item.name for item in self._classes.values())

    def __getitem__(self, class_id: str) -> OntologyClass:
        return self._classes[class_id]

    def by_name(self, name: str) -> OntologyClass:
        """The class named exactly `name`; KeyError when there is none."""
        return self._by_name[name]

    def has_name(self, name: str) -> bool:
        return name in self._by_name

    def children(self, class_id: str) -> tuple[str, ...]:
        return self._classes[class_id].child_ids

    def parents(self, class_id: str) -> tuple[str, ...]:
        """The direct parents (none for a root; two or more for some classes)."""
        return self._parents[class_id]

    @property
    def roots(self) -> tuple[str, ...]:
        return tuple(class_id for class_id, parents in self._parents.items() if not parents)

    def descendants(self, class_id: str) -> frozenset[str]:
        """Every class below `class_id` (children, their children, ...), not `class_id` itself."""
        return self._closure(class_id, "down")

    def ancestors(self, class_id: str) -> frozenset[str]:
        """Every class above `class_id` along any path, not `class_id` itself."""
        return self._closure(class_id, "up")

    @functools.lru_cache(maxsize=None)  # noqa: B019 - the ontology is immutable and lives as long as the process
    def _closure(self, class_id: str, direction: str) -> frozenset[str]:
        step = self.children if direction == "down" else self.parents
        found: set[str] = set()
        pending = list(step(class_id))
        while pending:
            current = pending.pop()
            if current not in found:
                found.add(current)
                pending.extend(step(current))
        return frozenset(found)


def _read_data(name: str) -> str:
    return resources.files("ast_audio.answers").joinpath("data", name).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def audioset_ontology() -> Ontology:
    """The AudioSet ontology shipped with the package (632 classes), read on first call and kept."""
    records = json.loads(_read_data(HIERARCHY_FILE))
    return Ontology(
        OntologyClass(item["id"], item["name"], tuple(item["child_ids"]), tuple(item.get("restrictions", ())))
        for item in records
    )


@functools.lru_cache(maxsize=1)
def audioset_labels() -> tuple[tuple[str, str], ...]:
    """The 527 labels of the AudioSet checkpoints in output order: (mid, display name) pairs."""
    rows = csv.DictReader(io.StringIO(_read_data(LABELS_FILE)))
    return tuple((row["mid"], row["display_name"]) for row in sorted(rows, key=lambda row: int(row["index"])))


def audioset_id2label() -> Mapping[int, str]:
    """{index: name} of the AudioSet checkpoints (as their config's `id2label`)."""
    return {index: name for index, (_, name) in enumerate(audioset_labels())}

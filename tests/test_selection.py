"""Class selection (include, exclude, groups, AudioSet roll-up) and the shipped AudioSet ontology."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ast_audio.answers.ontology import Ontology, OntologyClass, audioset_id2label, audioset_labels, audioset_ontology
from ast_audio.answers.selection import ClassSelection, read_label_file
from ast_audio.errors import ConfigError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def audioset_scores() -> np.ndarray:
    return np.random.default_rng(0).random((6, 527)).astype(np.float32)


def test_shipped_ontology_is_the_projects_data() -> None:
    ontology = audioset_ontology()
    assert len(ontology) == 632 and audioset_ontology() is ontology  # read once
    assert {ontology[root].name for root in ontology.roots} == {
        "Human sounds", "Animal", "Music", "Natural sounds", "Sounds of things", "Source-ambiguous sounds",
        "Channel, environment and background",
    }
    growling = ontology.by_name("Growling").id
    assert {ontology[parent].name for parent in ontology.parents(growling)} == {
        "Dog", "Cat", "Roaring cats (lions, tigers)", "Canidae, dogs, wolves",
    }
    dog = ontology.by_name("Dog").id
    assert growling in ontology.descendants(dog) and dog in ontology.ancestors(growling)
    assert ontology.by_name("Animal").id in ontology.ancestors(growling)
    assert dog not in ontology.descendants(dog)
    labels = audioset_labels()
    assert len(labels) == 527 and labels[0] == ("/m/09x0r", "Speech")
    assert all(ontology[mid].name == name for mid, name in labels)
    if SHARED.is_dir():  # the package's copies are the project's data
        assert (SHARED / "audioset_hierarchy.json").read_bytes() == (
            Path(__file__).resolve().parents[1] / "src/ast_audio/answers/data/audioset_hierarchy.json"
        ).read_bytes()


def test_ontology_refuses_broken_hierarchies() -> None:
    with pytest.raises(ValueError, match="unknown child"):
        Ontology([OntologyClass("/a", "A", ("/missing",))])
    with pytest.raises(ValueError, match="names must be unique"):
        Ontology([OntologyClass("/a", "A", ()), OntologyClass("/b", "A", ())])


def test_rollup_parent_scores_are_at_least_each_childs(audioset_scores: np.ndarray) -> None:
    ontology = audioset_ontology()
    selection = ClassSelection.build(audioset_id2label(), rollup=True)
    rolled = selection.apply(audioset_scores)
    assert rolled.shape == (6, len(selection.labels)) and rolled.dtype == np.float32
    assert selection.labels[:527] == tuple(audioset_id2label().values())
    assert {"Human sounds", "Sounds of things", "Animal", "Domestic animals, pets"} <= set(selection.labels)
    column = {label: position for position, label in enumerate(selection.labels)}
    for label, position in column.items():
        class_id = ontology.by_name(label).id
        for child in ontology.children(class_id):
            if ontology[child].name in column:
                assert (rolled[:, position] >= rolled[:, column[ontology[child].name]]).all()
    original = dict(zip(audioset_id2label().values(), audioset_scores.T))
    for label, position in column.items():  # every score is the maximum over itself and its descendants
        below = {ontology[member].name for member in ontology.descendants(ontology.by_name(label).id)} | {label}
        expected = np.max([original[name] for name in below if name in original], axis=0)
        np.testing.assert_array_equal(rolled[:, position], expected)
    # A class with several parents lifts every one of them.
    growl = audioset_scores.copy()
    growl[:, column["Growling"]] = 2.0
    lifted = selection.apply(growl)
    for parent in ("Dog", "Cat", "Roaring cats (lions, tigers)", "Canidae, dogs, wolves", "Animal"):
        assert (lifted[:, column[parent]] == 2.0).all()
    assert not (lifted[:, column["Music"]] == 2.0).any()


def test_rollup_twice_changes_nothing(audioset_scores: np.ndarray) -> None:
    once = ClassSelection.build(audioset_id2label(), rollup=True)
    twice = ClassSelection.build(once.id2label, rollup=True)
    assert twice.labels == once.labels
    np.testing.assert_array_equal(twice.apply(once.apply(audioset_scores)), once.apply(audioset_scores))


def test_rollup_by_id_and_refused_for_labels_that_are_not_audioset() -> None:
    mids = [mid for mid, _ in audioset_labels()[:3]]
    renamed = ClassSelection.build({0: "talk", 1: "man", 2: "woman"}, rollup=True, label_ids=mids)
    assert renamed.labels[:3] == ("talk", "man", "woman") and "Human voice" in renamed.labels
    assert renamed.sources[0].tolist() == [0, 1, 2]  # Speech is above both
    refused = r"needs AudioSet labels: label 0, 'dog' is not an AudioSet class name \(did you mean 'Dog'\?\); 2 of 2"
    with pytest.raises(ConfigError, match=refused):
        ClassSelection.build({0: "dog", 1: "rooster"}, rollup=True)
    with pytest.raises(ConfigError, match=r"label 1, id '/m/nope' is not an AudioSet class id; 1 of 2 labels are not"):
        ClassSelection.build({0: "a", 1: "b"}, rollup=True, label_ids=["/m/09x0r", "/m/nope"])


def test_include_gives_a_subset_in_the_order_asked(audioset_scores: np.ndarray) -> None:
    include = ["Dog", "Speech", "Animal"]
    selection = ClassSelection.build(audioset_id2label(), include=include, rollup=True)
    assert selection.labels == tuple(include)
    scores = selection.apply(audioset_scores)
    names = list(audioset_id2label().values())
    speech = [names.index(name) for name in ("Speech", "Male speech, man speaking", "Conversation")]
    assert (scores[:, 1] >= audioset_scores[:, speech].max(axis=1)).all()  # rolled up
    plain = ClassSelection.build(audioset_id2label(), include=["Dog", "Speech"])
    assert set(plain.labels) <= set(audioset_id2label().values())
    np.testing.assert_array_equal(plain.apply(audioset_scores)[:, 0], audioset_scores[:, names.index("Dog")])


def test_exclude_and_include_from_a_file(tmp_path: Path) -> None:
    id2label = {0: "Speech", 1: "Male speech, man speaking", 2: "Dog", 3: "Cat"}
    names = tmp_path / "names.txt"
    names.write_text("\ufeffMale speech, man speaking\r\n\n  Cat \n", encoding="utf-8")
    assert read_label_file(names) == [("Male speech, man speaking", 1), ("Cat", 3)]
    assert ClassSelection.build(id2label, include=names).labels == ("Male speech, man speaking", "Cat")
    assert ClassSelection.build(id2label, exclude=names).labels == ("Speech", "Dog")
    assert ClassSelection.build(id2label, include=["Cat", "Dog", "Cat"], exclude=["Dog"]).labels == ("Cat",)
    names.write_text("Cat\nDgo\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"names.txt line 2: 'Dgo' is not a label of the model \(did you mean 'Dog'"):
        ClassSelection.build(id2label, include=names)
    with pytest.raises(ConfigError, match="cannot read the list of labels"):
        ClassSelection.build(id2label, include=tmp_path / "missing.txt")
    (tmp_path / "latin1.txt").write_bytes(b"Caf\xe9\n")
    with pytest.raises(ConfigError, match="latin1.txt: not UTF-8 text"):
        read_label_file(tmp_path / "latin1.txt")


def test_names_match_exactly_with_a_suggestion() -> None:
    id2label = {0: "Speech", 1: "Dog", 2: "Cat"}
    with pytest.raises(ConfigError, match=r"include: 'dog' is not a label of the model \(did you mean 'Dog'\?\)"):
        ClassSelection.build(id2label, include=["dog"])
    with pytest.raises(ConfigError, match=r"exclude: 'Bird' is not a label of the model$"):
        ClassSelection.build(id2label, exclude=["Bird"])
    with pytest.raises(ConfigError, match="a list of label names or a Path"):
        ClassSelection.build(id2label, include="Dog")
    with pytest.raises(ConfigError, match="leaves no label"):
        ClassSelection.build(id2label, exclude=["Speech", "Dog", "Cat"])


def test_groups_take_the_maximum_of_their_members() -> None:
    id2label = {0: "Smoke detector, smoke alarm", 1: "Fire alarm", 2: "Siren", 3: "Speech"}
    scores = np.array([[0.1, 0.7, 0.2, 0.9], [0.3, 0.0, 0.1, 0.0]])
    alarm = ["Smoke detector, smoke alarm", "Fire alarm", "Siren"]
    selection = ClassSelection.build(id2label, groups={"alarm": alarm})
    assert selection.labels == (*id2label.values(), "alarm")
    np.testing.assert_array_equal(selection.apply(scores)[:, -1], [0.7, 0.3])
    np.testing.assert_array_equal(selection.apply(scores)[:, :4], scores)
    only = ClassSelection.build(id2label, groups={"alarm": ["Fire alarm", "Siren"]}, include=["alarm", "Speech"])
    np.testing.assert_array_equal(only.apply(scores), [[0.7, 0.9], [0.1, 0.0]])
    rolled = ClassSelection.build(audioset_id2label(), rollup=True, groups={"beasts": ["Animal", "Vehicle"]})
    assert "beasts" in rolled.labels
    with pytest.raises(ConfigError, match=r"group 'alarm': 'Sirens' is not a label of the model \(did you mean 'Sire"):
        ClassSelection.build(id2label, groups={"alarm": ["Sirens"]})
    with pytest.raises(ConfigError, match="group 'Speech' has the name of a label"):
        ClassSelection.build(id2label, groups={"Speech": ["Siren"]})
    with pytest.raises(ConfigError, match="group 'x' needs a list of at least one label"):
        ClassSelection.build(id2label, groups={"x": []})


def test_identity_and_shape_checks() -> None:
    selection = ClassSelection.build({"0": "a", "1": "b"})
    assert selection.is_identity and selection.labels == ("a", "b")
    scores = np.zeros((3, 2))
    assert selection.apply(scores) is scores
    with pytest.raises(ConfigError, match=r"scores must end with the model's 2 classes, got shape \(3, 3\)"):
        selection.apply(np.zeros((3, 3)))
    with pytest.raises(ConfigError, match="number its 2 classes 0..1"):
        ClassSelection.build({0: "a", 2: "b"})
    with pytest.raises(ConfigError, match="names 'a' twice"):
        ClassSelection.build({0: "a", 1: "a"})

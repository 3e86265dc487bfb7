"""Per-class thresholds learned from labelled clips: target precision on held-out clips, better than one global
threshold, classes with few positives, thresholds.json round trip and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ast_audio.answers.events import EventOptions
from ast_audio.answers.thresholds import (
    Thresholds,
    best_global_threshold,
    choose_class_threshold,
    choose_thresholds,
    precision_recall_f1,
)
from ast_audio.errors import ConfigError

CLASSES = 12
LABELS = [f"class {index}" for index in range(CLASSES)]


def synthetic(seed: int, clips: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores with known structure: each class has its own prevalence, separation and bias (so each class's
    best threshold differs); the structure is fixed, `seed` draws the clips."""
    structure = np.random.default_rng(0)
    prevalence = structure.uniform(0.08, 0.3, CLASSES)
    bias, separation = structure.uniform(-3, 2, CLASSES), structure.uniform(1.5, 3.5, CLASSES)
    rng = np.random.default_rng(seed)
    targets = rng.random((clips, CLASSES)) < prevalence
    logits = rng.normal(size=(clips, CLASSES)) + np.where(targets, separation, 0.0) + bias
    return 1.0 / (1.0 + np.exp(-logits)), targets


@pytest.fixture(scope="module")
def splits() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    return synthetic(1, 2000), synthetic(2, 2000)


def test_target_precision_is_reached_on_held_out_clips(splits) -> None:
    (scores, targets), (held_scores, held_targets) = splits
    learned = choose_thresholds(scores, targets, LABELS, target_precision=0.9, source="synthetic split 1")
    assert learned.method == "precision" and learned.few_positives == [] and learned.not_reached == []
    precision, _, _ = precision_recall_f1(learned.decide(held_scores, LABELS), held_targets)
    reached = np.mean(precision >= 0.9 - 0.05)
    print(f"held-out precision per class: {np.round(precision, 3).tolist()}; within 0.05 of 0.9: {reached:.0%}")
    assert reached >= 0.9
    # On the clips they were chosen from, every class reaches the target.
    own_precision, _, _ = precision_recall_f1(learned.decide(scores, LABELS), targets)
    assert (own_precision >= 0.9).all()


def test_per_class_thresholds_beat_the_best_global_threshold(splits) -> None:
    (scores, targets), (held_scores, held_targets) = splits
    learned = choose_thresholds(scores, targets, LABELS)
    global_threshold, train_mean_f1 = best_global_threshold(scores, targets)
    _, _, per_class_f1 = precision_recall_f1(learned.decide(held_scores, LABELS), held_targets)
    _, _, global_f1 = precision_recall_f1(held_scores >= global_threshold, held_targets)
    print(f"held-out mean F1: per class {per_class_f1.mean():.3f}, "
          f"global {global_threshold:.3f}: {global_f1.mean():.3f}")
    assert per_class_f1.mean() > global_f1.mean() + 0.05
    assert learned.default == pytest.approx(global_threshold)
    assert 0 < train_mean_f1 < 1
    # The thresholds differ by class, as the biases do.
    assert np.ptp(learned.threshold_array(LABELS)) > 0.3


def test_f1_threshold_is_the_best_on_its_clips() -> None:
    rng = np.random.default_rng(3)
    targets = rng.random(300) < 0.3
    scores = np.clip(rng.normal(0.3, 0.15, 300) + 0.25 * targets, 0, 1)
    chosen = choose_class_threshold(scores, targets)
    # Brute force over every score as a threshold.
    best = max(precision_recall_f1((scores >= t)[:, None], targets[:, None])[2][0] for t in scores)
    assert chosen.f1 == pytest.approx(best)
    decided = scores >= chosen.threshold
    assert precision_recall_f1(decided[:, None], targets[:, None])[2][0] == pytest.approx(best)
    # The threshold lies strictly between two scores (a margin on both sides), not on one.
    assert not np.isin(chosen.threshold, scores)
    # For a target precision: the best recall among the thresholds that reach it, by brute force.
    reaching = [
        recall[0] for t in scores
        for precision, recall, _ in [precision_recall_f1((scores >= t)[:, None], targets[:, None])]
        if precision[0] >= 0.7
    ]
    at_target = choose_class_threshold(scores, targets, target_precision=0.7)
    assert at_target.precision >= 0.7 and at_target.recall == pytest.approx(max(reaching))


def test_target_precision_takes_the_highest_threshold_of_the_best_recall() -> None:
    # Positives at 0.125 and above, negatives at 0.014 and below (the new user's tone): thresholds just above
    # 0.005 already reach precision 0.9 (20 of 22), but every threshold up to the lowest positive keeps recall
    # 1 with fewer false positives; the chosen one is the highest of them, midway below the lowest positive.
    positives = np.linspace(0.125, 0.9, 20)
    scores = np.concatenate([positives, [0.014, 0.011, 0.005, 0.001]])
    targets = np.array([True] * 20 + [False] * 4)
    chosen = choose_class_threshold(scores, targets, target_precision=0.9)
    assert (chosen.precision, chosen.recall) == (1.0, 1.0)
    assert chosen.threshold == pytest.approx((0.125 + 0.014) / 2)
    # Where a lower threshold reaches a better recall at the target, that one wins.
    targets[21] = True  # the positive at 0.011
    lower = choose_class_threshold(scores, targets, target_precision=0.9)
    assert lower.recall == 1.0 and lower.threshold == pytest.approx((0.011 + 0.005) / 2)


def test_unreachable_precision_keeps_the_best_precision_and_flags_the_class() -> None:
    targets = np.array([True, False] * 10)
    scores = np.full(20, 0.5)  # all tied: precision 0.5 at best
    chosen = choose_class_threshold(scores, targets, target_precision=0.9)
    assert chosen.status == "target not reached" and chosen.precision == pytest.approx(0.5)
    assert chosen.recall == 1.0


def test_few_positives_keep_the_global_threshold_and_are_listed(splits) -> None:
    (scores, targets), _ = splits
    targets = targets.copy()
    targets[:, 3] = False
    targets[:4, 3] = True  # 4 positives < 5
    learned = choose_thresholds(scores, targets, LABELS, default=0.5)
    assert learned.few_positives == ["class 3"]
    assert "class 3" not in learned.thresholds and learned.threshold_array(LABELS)[3] == 0.5
    assert learned.classes["class 3"].positives == 4 and learned.classes["class 3"].status == "few positives"
    assert choose_thresholds(scores, targets, LABELS, default=0.5, min_positives=4).few_positives == []


def test_thresholds_json_round_trips_and_drives_events(splits, tmp_path) -> None:
    (scores, targets), _ = splits
    targets = targets.copy()
    targets[:, 5] = False  # no positives: kept at the default, its recall undefined (null in the file)
    learned = choose_thresholds(scores, targets, LABELS, target_precision=0.8, source="clips.csv")
    path = tmp_path / "thresholds.json"
    learned.write(path)
    again = Thresholds.read(path)
    assert again.to_json() == learned.to_json()
    assert (again.thresholds, again.default, again.few_positives) == (learned.thresholds, learned.default, ["class 5"])
    assert again.classes["class 0"] == learned.classes["class 0"] and np.isnan(again.classes["class 5"].recall)
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["provenance"]["source"] == "clips.csv"
    assert data["provenance"]["target_precision"] == 0.8 and data["provenance"]["classes"]["class 0"]["positives"] > 0
    np.testing.assert_array_equal(again.decide(scores, LABELS), learned.decide(scores, LABELS))
    # The mapping EventOptions takes; labels the file lacks get the default, labels the model lacks are reported.
    mapping = again.for_labels(["class 1", "other"])
    assert mapping == {"class 1": learned.thresholds["class 1"], "other": learned.default}
    options = EventOptions(threshold=0.5, threshold_off=0.3, class_thresholds=mapping)
    assert options.thresholds(["class 1"])[0][0] == pytest.approx(learned.thresholds["class 1"])
    assert again.unknown_labels(["class 1", "class 2"]) == sorted(set(LABELS) - {"class 1", "class 2", "class 5"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "not JSON"),
        ('{"version": 2, "default": 0.5, "thresholds": {}}', "version 1, got version 2"),
        ('[1, 2]', "version 1"),
        ('{"version": 1, "default": 0.5, "thresholds": {"dog": "high"}}', "threshold of 'dog' must be a finite number"),
        ('{"version": 1, "thresholds": {}}', "'default' must be a finite number"),
        ('{"version": 1, "default": 0.5, "thresholds": []}', "'thresholds' must be an object"),
        ('{"version": 1, "default": 0.5, "thresholds": {}, "provenance": {"min_positives": 2.5}}', "'min_positives'"),
        ('{"version": 1, "default": 0.5, "thresholds": {}, "provenance": {"classes": {"a": {"x": 1}}}}',
         "provenance of 'a' must have the fields"),
        ('{"version": 1, "default": 0.5, "thresholds": {"tone": -3}}', "threshold of 'tone' must be a score in"),
        ('{"version": 1, "default": 1.5, "thresholds": {}}', r"'default' must be a score in \[0, 1\], got 1.5"),
    ],
)
def test_bad_thresholds_files_are_refused_naming_the_file(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as caught:
        Thresholds.from_json(text, "model/thresholds.json")
    assert str(caught.value).startswith("model/thresholds.json: ")


def test_unreadable_thresholds_file_is_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match="missing.json: cannot read thresholds"):
        Thresholds.read(tmp_path / "missing.json")


def test_bad_arguments_are_refused() -> None:
    scores, targets = np.full((4, 2), 0.5), np.zeros((4, 2))
    with pytest.raises(ConfigError, match="target precision"):
        choose_thresholds(scores, targets, ["a", "b"], target_precision=1.5)
    with pytest.raises(ConfigError, match="targets must have the shape"):
        choose_thresholds(scores, targets[:, :1], ["a", "b"])
    with pytest.raises(ConfigError, match="0 or 1"):
        choose_thresholds(scores, targets + 2, ["a", "b"])
    with pytest.raises(ConfigError, match="2 classes"):
        Thresholds({}, 0.5).decide(np.zeros((3, 3)), ["a", "b"])

"""The answers (class selection, events) wired into the engine: `AnswerOptions` carried by `InferenceOptions`,
applied in `prepare.assemble`, and through `AudioClassifier` on a tiny checkpoint whose labels are AudioSet's."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from ast_audio.answers.events import Event, EventOptions
from ast_audio.answers.options import AnswerOptions
from ast_audio.errors import ConfigError
from ast_audio.inference.options import NUMBER_OPTIONS, InferenceOptions
from ast_audio.inference.prepare import WindowPlan, assemble

# Real AudioSet class names (src/ast_audio/answers/data): "Bark" is under "Dog", both under
# "Domestic animals, pets" and "Animal"; "Siren" is under "Alarm" and "Sounds of things".
AUDIOSET_LABELS = ["Bark", "Dog", "Cat", "Siren", "Speech"]


@pytest.fixture(scope="module")
def audioset_checkpoint(tmp_path_factory):
    """A tiny random classifier (sigmoid, 128 frames) whose five labels are AudioSet class names."""
    from ast_audio import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification
    from helpers import SMALL, randomize_

    path = tmp_path_factory.mktemp("audioset_small")
    config = ASTConfig(**SMALL, max_length=128, id2label=dict(enumerate(AUDIOSET_LABELS)),
                       problem_type="multi_label_classification")
    randomize_(ASTForAudioClassification(config), seed=3).save_pretrained(path)
    ASTFeatureExtractor(max_length=128).save_pretrained(path)
    return str(path)


def test_options_normalised_hashable_and_json_numbers(tmp_path):
    names = tmp_path / "labels.txt"
    names.write_text("Dog\n\n  Cat  \n", encoding="utf-8")
    options = AnswerOptions(include=names, groups={"pets": ["Dog", "Cat"]}, events=True)
    assert options.include == ("Dog", "Cat")
    assert options.groups == (("pets", ("Dog", "Cat")),)
    assert options.events == EventOptions()
    assert hash(options) == hash(AnswerOptions(include=["Dog", "Cat"], groups={"pets": ["Dog", "Cat"]},
                                               events=EventOptions()))
    numbers = options.numbers()
    assert json.loads(json.dumps(numbers)) == numbers  # what a resume reads back compares equal
    assert numbers["events"]["threshold"] == 0.5 and numbers["events"]["threshold_off"] == 0.3
    assert numbers["selection"]["include"] == ["Dog", "Cat"]
    assert AnswerOptions().numbers() == {} and not AnswerOptions().active
    with pytest.raises(ConfigError, match="string 'Dog'"):
        AnswerOptions(include="Dog")
    with pytest.raises(ConfigError, match="events must be"):
        AnswerOptions(events=0.5)


def test_inference_options_carry_answers_into_numbers():
    plain = InferenceOptions()
    assert set(plain.numbers()) == set(NUMBER_OPTIONS)  # outputs written before answers existed resume as before
    chosen = InferenceOptions(answers=AnswerOptions(rollup=True, events=EventOptions(threshold=0.6)))
    assert chosen.numbers()["selection"]["rollup"] is True
    assert chosen.numbers()["events"]["threshold"] == 0.6
    assert chosen.numbers() != InferenceOptions(answers=AnswerOptions(rollup=True, events=True)).numbers()


def test_from_args_reads_the_command_line(tmp_path):
    names = tmp_path / "exclude.txt"
    names.write_text("Speech\n", encoding="utf-8")
    args = argparse.Namespace(events=False, threshold=0.7, threshold_off=None, min_duration=None, min_gap=1.5,
                              include=["Male speech, man speaking", "Dog"], exclude=[f"@{names}"],
                              group=["alarm=Siren,Smoke detector\\, smoke alarm"], rollup=True)
    options = InferenceOptions.from_args(args).answers
    # A threshold implies events; the off threshold defaults to 0.6 x the threshold (as calibrate's rule).
    assert options.events == EventOptions(threshold=0.7, threshold_off=0.6 * 0.7, min_gap=1.5)
    assert options.include == ("Male speech, man speaking", "Dog")  # names with commas are not split
    assert options.exclude == ("Speech",)
    assert options.groups == (("alarm", ("Siren", "Smoke detector, smoke alarm")),)
    assert options.rollup
    assert InferenceOptions.from_args(argparse.Namespace()).answers == AnswerOptions()
    # A command without --events (calibrate, segments) keeps its own thresholds: no events in the engine.
    assert AnswerOptions.from_args(argparse.Namespace(threshold=0.5, threshold_off=0.9)).events is None
    with pytest.raises(ConfigError, match="NAME=LABEL"):
        AnswerOptions.from_args(argparse.Namespace(group=["alarm"]))
    # A name repeated (on the line, in a file, among a group's members) counts once, in first order, so the
    # options (and a resume's comparison of them) are those of the names given once.
    repeated = AnswerOptions.from_args(argparse.Namespace(
        include=["Dog", "Cat", "Dog"], exclude=["Speech", f"@{names}"], group=["pets=Dog,Cat,Dog"]))
    once = AnswerOptions.from_args(argparse.Namespace(include=["Dog", "Cat"], exclude=["Speech"], group=["pets=Dog,Cat"]))
    assert (repeated.include, repeated.exclude, repeated.groups) == (("Dog", "Cat"), ("Speech",), (("pets", ("Dog", "Cat")),))
    assert repeated.numbers() == once.numbers()


def test_thresholds_file_beside_the_checkpoint(tmp_path):
    from ast_audio.answers.thresholds import Thresholds

    (tmp_path / "thresholds.json").write_text(Thresholds({"Dog": 0.8}, default=0.4).to_json(), encoding="utf-8")
    options = AnswerOptions.from_args(argparse.Namespace(model=str(tmp_path), events=True, threshold=0.9))
    assert options.events == EventOptions(threshold=0.4, threshold_off=0.6 * 0.4, class_thresholds={"Dog": 0.8})
    assert options.events.thresholds(["Dog", "Cat"])[1].tolist() == pytest.approx([0.6 * 0.8, 0.6 * 0.4])
    assert AnswerOptions.from_args(argparse.Namespace(model=str(tmp_path), events=False)).events is None
    other = tmp_path / "other.json"
    other.write_text(Thresholds({"Cat": 0.7}, default=0.5).to_json(), encoding="utf-8")
    given = AnswerOptions.from_args(argparse.Namespace(model=str(tmp_path), events=False, thresholds=str(other)))
    assert given.events.class_thresholds == (("Cat", 0.7),)
    with pytest.raises(ConfigError, match="missing.json: cannot read thresholds"):
        AnswerOptions.from_args(argparse.Namespace(events=True, thresholds=str(tmp_path / "missing.json")))


def test_assemble_selects_before_pooling_top_k_and_events():
    labels = ["Bark", "Dog", "Cat"]
    windows = [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0)]
    scores = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.1, 0.2, 0.0]], dtype=np.float32)
    plan = WindowPlan(0, "a.wav", windows, 4.0)
    options = AnswerOptions(groups={"barking dog": ["Bark", "Dog"]}, exclude=["Cat"], events=True)
    result = assemble(plan, scores, np.zeros((3, 4), np.float32), labels, "mean", options)
    assert result.labels == ["Bark", "Dog", "barking dog"]
    np.testing.assert_allclose(result.window_scores[:, 2], scores[:, :2].max(axis=1))
    assert [item["label"] for item in result.top(3)] == ["barking dog", "Bark", "Dog"]
    # The track is the minimum over covering windows: [0, 1) 0.9, [1, 2) 0.8, [2, 3) 0.1: one event 0-2 s.
    assert [(event.label, event.start, event.end) for event in result.events] == [("Bark", 0.0, 2.0),
                                                                                    ("barking dog", 0.0, 2.0)]
    assert all(isinstance(event, Event) for event in result.events)
    assert [(event.score, event.mean) for event in result.events] == [pytest.approx((0.9, 0.85), abs=1e-6)] * 2
    record = result.to_dict(top_k=2)
    assert record["events"][0] == {"label": "Bark", "start": 0.0, "end": 2.0, "score": pytest.approx(0.9),
                                   "mean": pytest.approx(0.85)}
    assert "events" not in assemble(plan, scores, np.zeros((3, 4)), labels).to_dict()
    quiet = assemble(plan, scores * 0, np.zeros((3, 4)), labels, answers=AnswerOptions(events=True))
    assert quiet.events == [] and quiet.to_dict()["events"] == []  # asked for, none found: an empty list
    with pytest.raises(ConfigError, match="'Dgo' is not a label of the model"):
        assemble(plan, scores, np.zeros((3, 4)), labels, answers=AnswerOptions(include=["Dgo"]))


def test_classifier_rollup_include_and_events(audioset_checkpoint):
    from ast_audio import AudioClassifier

    audio = np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32) * 0.1
    plain = AudioClassifier.from_pretrained(audioset_checkpoint, window=1.0, hop=0.5).classify(audio)
    rolled = AudioClassifier.from_pretrained(audioset_checkpoint, window=1.0, hop=0.5, rollup=True,
                                             events=EventOptions(threshold=0.0, threshold_off=0.0)).classify(audio)
    assert rolled.labels[:5] == AUDIOSET_LABELS
    assert {"Animal", "Domestic animals, pets", "Alarm", "Sounds of things"} <= set(rolled.labels)
    by_label = dict(zip(rolled.labels, rolled.window_scores.T))
    np.testing.assert_array_equal(by_label["Dog"], np.maximum(plain.window_scores[:, 0], plain.window_scores[:, 1]))
    np.testing.assert_array_equal(by_label["Animal"], plain.window_scores[:, :3].max(axis=1))
    # Threshold 0: every class is one event over the whole file.
    assert {(event.label, event.start, event.end) for event in rolled.events} == {
        (label, 0.0, 3.0) for label in rolled.labels}

    chosen = AudioClassifier.from_pretrained(audioset_checkpoint, answers=AnswerOptions(include=["Cat", "Dog"]))
    result = chosen.classify(audio)
    assert result.labels == ["Cat", "Dog"] and result.events is None
    assert {item["label"] for item in chosen(audio, top_k=5)} == {"Cat", "Dog"}
    events = chosen.classify(audio, answers=AnswerOptions(events=EventOptions(threshold=0.0, threshold_off=0.0)))
    assert [event.label for event in events.events] == ["Bark", "Cat", "Dog", "Siren", "Speech"]


def test_classifier_refuses_bad_selections(audioset_checkpoint, tmp_path):
    from ast_audio import AudioClassifier
    from helpers import save_small_checkpoint

    with pytest.raises(ConfigError, match=r"'dog' is not a label of the model \(did you mean 'Dog'\?\)"):
        AudioClassifier.from_pretrained(audioset_checkpoint, include=["dog"])
    with pytest.raises(ConfigError, match="not both"):
        AudioClassifier.from_pretrained(audioset_checkpoint, answers=AnswerOptions(events=True), rollup=True)
    other = save_small_checkpoint(tmp_path / "other", labels=3)
    with pytest.raises(ConfigError, match="rollup needs AudioSet labels: label 0, 'sound 0' is not an AudioSet"):
        AudioClassifier.from_pretrained(other, rollup=True)


def test_finer_pass_scores_extra_windows_at_the_boundaries(audioset_checkpoint):
    """The engine's finer pass gives the events of `answers.refine.refine` scoring each extra window as a
    clip of its own (an independent path: the window's samples classified alone, zero-padded alike)."""
    from ast_audio import AudioClassifier
    from ast_audio.answers.refine import refine

    rng = np.random.default_rng(0)
    audio = np.concatenate([np.zeros(32000), 0.5 * rng.standard_normal(32000), np.zeros(32000)]).astype(np.float32)
    events = EventOptions(threshold=0.5, threshold_off=0.45)
    classifier = AudioClassifier.from_pretrained(audioset_checkpoint, window=1.0, hop=0.5)
    coarse = classifier.classify(audio, sampling_rate=16000, answers=AnswerOptions(events=events, include=["Siren"]))
    assert [event.label for event in coarse.events] == ["Siren"] and 0 < coarse.events[0].start
    fine = classifier.classify(audio, sampling_rate=16000,
                               answers=AnswerOptions(events=events, include=["Siren"], refine=2))

    def score_windows(rows):
        clips = [audio[int(round(start * 16000)) : int(round(end * 16000))] for start, end in rows]
        return np.stack([classifier.classify(clip, sampling_rate=16000).window_scores[0][[3]] for clip in clips])

    expected, extra = refine(coarse.windows, coarse.window_scores, ["Siren"], score_windows, window=1.0, hop=0.5,
                             duration=coarse.duration, rounds=2, options=events)
    assert fine.extra_windows == len(extra) == 4  # 2 rounds x 2 boundaries
    assert [(e.label, e.start, e.end) for e in fine.events] == [(e.label, e.start, e.end) for e in expected]
    assert fine.events != coarse.events and coarse.extra_windows == 0
    with pytest.raises(ConfigError, match="turn events on"):
        AnswerOptions(refine=1)
    assert AnswerOptions(events=True, refine=2).numbers()["events"]["refine"] == 2
    assert AnswerOptions(events=True, refine=3).refine == 3
    with pytest.raises(ConfigError, match=r"refine must be a number of rounds from 0 to 3 \(1 recommended\), got 4"):
        AnswerOptions(events=True, refine=4)

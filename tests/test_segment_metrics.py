"""Segment-based metrics equal to sed_eval's; the threshold sweep of event detection; PSDS with sed_scores_eval."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from ast_audio.answers.events import Event, EventOptions, ScoreTrack, score_track
from ast_audio.answers.metrics import event_based_metrics
from ast_audio.answers.segment_metrics import activity, segment_based_metrics
from ast_audio.answers.sweep import psds, threshold_sweep
from ast_audio.errors import ConfigError

LABELS = ["dog", "siren", "speech"]


def random_annotations(seed: int, files: int = 6) -> tuple[dict, dict, dict]:
    """(reference, detected, durations): reference events at arbitrary times (overlapping ones too) and
    detections near them (shifted, stretched, missed, doubled, mislabelled) plus false alarms; some past the
    duration."""
    rng = np.random.default_rng(seed)
    reference, detected, durations = {}, {}, {}
    for number in range(files):
        ref, det = [], []
        for _ in range(rng.integers(1, 9)):
            start = float(rng.uniform(0, 58))
            length = float(rng.choice([0.3, 1.0, 2.5, 6.0]))
            label = str(rng.choice(LABELS))
            ref.append(Event(label, start, start + length))
            for _ in range(rng.choice([0, 1, 1, 2])):
                shift, stretch = rng.normal(0, 0.4), rng.normal(0, 0.8)
                found = label if rng.random() < 0.75 else str(rng.choice(LABELS))  # sometimes a substitution
                det.append(Event(found, max(0.0, start + shift), max(start + shift + 0.05, start + length + stretch)))
        for _ in range(rng.integers(0, 4)):
            start = float(rng.uniform(0, 60))
            det.append(Event(str(rng.choice(LABELS)), start, start + float(rng.uniform(0.1, 3))))
        name = f"f{number}.wav"
        reference[name], detected[name], durations[name] = ref, det, float(rng.choice([60.0, 61.3, 64.0]))
    return reference, detected, durations


def sed_eval_segment_results(reference: dict, detected: dict, durations: dict, resolution: float) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcase_util = pytest.importorskip("dcase_util")
        sed_eval = pytest.importorskip("sed_eval")
    metrics = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=LABELS, time_resolution=resolution)
    for file in sorted(reference):
        def rows(events: list[Event], f: str = file) -> object:
            return dcase_util.containers.MetaDataContainer(
                [{"filename": f, "event_label": e.label, "onset": e.start, "offset": e.end} for e in events]
            )

        metrics.evaluate(rows(reference[file]), rows(detected[file]), evaluated_length_seconds=durations[file])
    return metrics


def close(got: float, expected: float) -> bool:
    return (math.isnan(got) and math.isnan(expected)) or abs(got - expected) <= 1e-6


@pytest.mark.parametrize(("seed", "resolution"), [(0, 1.0), (1, 1.0), (2, 0.5), (3, 1.0), (4, 2.0)])
def test_segment_metrics_equal_sed_eval(seed: int, resolution: float) -> None:
    reference, detected, durations = random_annotations(seed)
    ours = segment_based_metrics(reference, detected, durations=durations, segment_length=resolution, labels=LABELS)
    theirs = sed_eval_segment_results(reference, detected, durations, resolution)
    overall_f, overall_er = theirs.overall_f_measure(), theirs.overall_error_rate()
    assert ours.overall.true_positives > 0 and ours.overall.false_positives > 0 and ours.overall.substitutions > 0
    for name in ("f_measure", "precision", "recall"):
        assert close(getattr(ours.overall, name), overall_f[name]), name
    assert close(ours.overall.error_rate, overall_er["error_rate"])
    for label in LABELS:
        counts = ours.per_class[label]
        class_f, class_er = theirs.class_wise_f_measure(label), theirs.class_wise_error_rate(label)
        for name in ("f_measure", "precision", "recall"):
            assert close(getattr(counts, name), class_f[name]), (label, name)
        if counts.reference:  # sed_eval divides by N_ref + eps: no comparison where N_ref is 0
            assert close(counts.error_rate, class_er["error_rate"]), label
    assert close(ours.class_average_f_measure, theirs.results_class_wise_average_metrics()["f_measure"]["f_measure"])


def test_activity_by_hand() -> None:
    # [0.5, 2.0) touches segments 0 and 1; [2.0, 2.0] (a point) none; [3.2, 9.9] is cut at the 5 segments.
    roll = activity([Event("a", 0.5, 2.0), Event("a", 2.0, 2.0), Event("b", 3.2, 9.9), Event("z", 0, 1)],
                    ["a", "b"], 5, 1.0)
    assert roll.astype(int).T.tolist() == [[1, 1, 0, 0, 0], [0, 0, 0, 1, 1]]
    # Overlapping reference events of one class count once per segment; a substitution by hand.
    metrics = segment_based_metrics({"f": [Event("a", 0, 2), Event("a", 1, 3)]}, {"f": [Event("b", 0, 1)]})
    assert metrics.overall.substitutions == 1 and metrics.overall.deletions == 2 and metrics.overall.insertions == 0
    assert metrics.overall.error_rate == pytest.approx(3 / 3)
    assert np.isnan(metrics.per_class["b"].error_rate)  # no reference activity of "b"
    with pytest.raises(ConfigError, match="segment_length"):
        segment_based_metrics({}, {}, segment_length=0)


def scored_files() -> tuple[dict, dict, dict]:
    """Score tracks of 1 s windows every 0.5 s over 30 s files: each reference event lifts its class's windows
    to a level drawn per event (0.35-0.95), plus noise; false bumps on 'siren'."""
    rng = np.random.default_rng(7)
    tracks, reference, durations = {}, {}, {}
    starts = np.arange(0, 29.01, 0.5)
    windows = np.stack([starts, starts + 1.0], axis=1)
    for number in range(4):
        events = [Event(str(rng.choice(LABELS)), float(s), float(s) + float(rng.uniform(1.5, 4))) for s in (3, 12, 21)]
        scores = rng.uniform(0, 0.15, (len(windows), len(LABELS)))
        for event in events:
            heard = (windows[:, 0] < event.end) & (windows[:, 1] > event.start)
            scores[heard, LABELS.index(event.label)] = rng.uniform(0.35, 0.95)
        bump = (windows[:, 0] >= 26) & (windows[:, 0] < 27.5)
        scores[bump, 1] = rng.uniform(0.3, 0.6)
        name = f"s{number}.wav"
        tracks[name], reference[name], durations[name] = score_track(windows, scores, LABELS), events, 30.0
    return tracks, reference, durations


def test_threshold_sweep_trades_recall_for_precision_and_matches_detection() -> None:
    tracks, reference, _ = scored_files()
    options = EventOptions(threshold=0.5, threshold_off=0.25)
    thresholds = np.linspace(0.1, 0.9, 9)
    sweep = threshold_sweep(tracks, reference, thresholds, options=options, collar=1.0)
    precision, recall = sweep.curve()
    # Every sound found at middle thresholds; the top one misses the quieter sounds; the lowest one merges the
    # noise floor into long events (event-based recall need not fall monotonically with the threshold).
    assert recall.max() == 1.0 and recall[-1] < 0.5 and recall[0] < 1.0
    assert np.nanmax(precision) == 1.0 and precision[0] < 0.5
    # One point of the sweep is exactly the detection at that threshold scored by metrics.py.
    from ast_audio.answers.events import detect_events

    at = EventOptions(threshold=0.5, threshold_off=0.25)
    detected = {f: detect_events(t, at) for f, t in tracks.items()}
    expected = event_based_metrics(reference, detected, collar=1.0, labels=LABELS)
    index = int(np.argmin(np.abs(sweep.thresholds - 0.5)))
    assert sweep.overall[index] == expected.overall
    assert {label: counts[index] for label, counts in sweep.per_class.items()} == dict(expected.per_class)
    rows = sweep.rows()
    assert len(rows) == 9 * (1 + len(LABELS)) and {"label", "threshold", "precision", "recall"} <= rows[0].keys()
    with pytest.raises(ConfigError, match="thresholds must be"):
        threshold_sweep(tracks, reference, [])


def test_psds_with_sed_scores_eval() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pytest.importorskip("sed_scores_eval")
    tracks, reference, durations = scored_files()
    good = psds(tracks, reference, durations, alpha_st=0.0)
    noise = np.random.default_rng(1)
    noisy_tracks = {
        f: ScoreTrack(t.edges, np.clip(t.values + noise.uniform(0, 0.9, t.values.shape), 0, 1), t.labels)
        for f, t in tracks.items()
    }
    noisy = psds(noisy_tracks, reference, durations, alpha_st=0.0)
    print(f"PSDS (scenario 1 criteria, alpha_st 0): clean tracks {good.psds:.3f}, noisy {noisy.psds:.3f}")
    assert 0 < noisy.psds < good.psds <= 1
    assert set(good.per_class) == set(LABELS)
    # Scores of exactly 1 inside each reference event and 0 elsewhere: a perfect PSDS (the tracks' segment
    # edges reach sed_scores_eval as they are).
    edges = np.arange(0, 30.01, 0.25)
    middle = (edges[:-1] + edges[1:]) / 2
    exact = {
        file: [Event(e.label, round(e.start * 4) / 4, round(e.end * 4) / 4) for e in events]
        for file, events in reference.items()
    }
    perfect = {}
    for file, events in exact.items():
        values = [[any(e.label == label and e.start < m < e.end for e in events) for label in LABELS] for m in middle]
        perfect[file] = ScoreTrack(edges, np.array(values, dtype=np.float64), tuple(LABELS))
    assert psds(perfect, exact, durations).psds == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="missing for"):
        psds(tracks, reference, {})

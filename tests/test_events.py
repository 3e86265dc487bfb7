"""Events from per-window scores: the score track, hysteresis, merging, minimum duration, edges of the file."""

from __future__ import annotations

import numpy as np
import pytest

from ast_audio.answers.events import Event, EventOptions, ScoreTrack, detect_events, events_from_windows, score_track
from ast_audio.errors import ConfigError
from ast_audio.inference.windows import plan_windows

OPTIONS = EventOptions(threshold=0.5, threshold_off=0.3)


def regular_windows(duration: float, window: float, hop: float) -> np.ndarray:
    return np.array(plan_windows(duration, window, hop))


def spans(events: list[Event], label: str | None = None) -> list[tuple[float, float]]:
    return [(round(e.start, 6), round(e.end, 6)) for e in events if label is None or e.label == label]


def test_non_overlapping_windows_hysteresis_keeps_one_event_through_a_dip() -> None:
    windows = regular_windows(8.0, 1.0, 1.0)
    # 0.6 starts it, 0.35 (above off, below on) keeps it, 0.1 ends it; 0.4 alone never starts one.
    scores = np.array([[0.1], [0.6], [0.35], [0.7], [0.1], [0.4], [0.1], [0.1]])
    events = events_from_windows(windows, scores, ["dog"], OPTIONS)
    assert spans(events) == [(1.0, 4.0)]
    assert events[0].score == pytest.approx(0.7)
    assert events[0].mean == pytest.approx((0.6 + 0.35 + 0.7) / 3)
    no_hysteresis = events_from_windows(windows, scores, ["dog"], EventOptions(threshold=0.5, threshold_off=0.5))
    assert spans(no_hysteresis) == [(1.0, 2.0), (3.0, 4.0)]


def test_hysteresis_extends_backwards_too() -> None:
    windows = regular_windows(5.0, 1.0, 1.0)
    scores = np.array([[0.0], [0.4], [0.9], [0.4], [0.0]])
    assert spans(events_from_windows(windows, scores, ["x"], OPTIONS)) == [(1.0, 4.0)]


def test_overlapping_windows_one_sound_one_event_within_a_hop() -> None:
    # Windows of 2 s every 1 s; a sound at 4.3-4.8 s is heard by the windows [3, 5] and [4, 6] only.
    windows = regular_windows(12.0, 2.0, 1.0)
    heard = (windows[:, 0] < 4.8) & (windows[:, 1] > 4.3)
    scores = np.where(heard, 0.9, 0.05)[:, None]
    events = events_from_windows(windows, scores, ["bark"], OPTIONS)
    assert spans(events) == [(4.0, 5.0)]  # where both windows agree, not their union [3, 6]
    assert abs(events[0].start - 4.3) <= 1.0 and abs(events[0].end - 4.8) <= 1.0
    track = score_track(windows, scores, ["bark"])
    assert track.values.shape == (12, 1) and track.edges[0] == 0 and track.edges[-1] == 12


def test_sound_crossing_a_window_boundary() -> None:
    # Windows of 2 s every 1 s; a sound at 5.6-6.5 s crosses the boundary at 6 s: heard by [4,6], [5,7], [6,8].
    windows = regular_windows(12.0, 2.0, 1.0)
    heard = (windows[:, 0] < 6.5) & (windows[:, 1] > 5.6)
    assert heard.sum() == 3
    scores = np.where(heard, 0.8, 0.0)[:, None]
    events = events_from_windows(windows, scores, ["chirp"], OPTIONS)
    assert spans(events) == [(5.0, 7.0)]
    assert 5.6 - events[0].start <= 1.0 and events[0].end - 6.5 <= 1.0


def test_default_geometry_onset_within_half_a_hop_when_the_sound_starts_mid_stretch() -> None:
    # The default 10.255 s windows every 5.1275 s, a 60 s file; a 1 s sound at 17.5 s is heard by the
    # windows starting at 10.255 and 15.3825 s: the event is their overlap [15.3825, 20.51].
    windows = regular_windows(60.0, 10.255, 5.1275)
    heard = (windows[:, 0] < 18.5) & (windows[:, 1] > 17.5)
    scores = np.where(heard, 0.95, 0.02)[:, None]
    (event,) = events_from_windows(windows, scores, ["tone"], OPTIONS)
    assert event.start == pytest.approx(15.3825) and event.end == pytest.approx(20.51)
    assert abs(event.start - 17.5) <= 5.1275 / 2 and abs(event.end - 18.5) <= 5.1275 / 2


def test_min_gap_merges_and_min_duration_drops() -> None:
    windows = regular_windows(10.0, 0.5, 0.5)
    scores = np.zeros((20, 1))
    scores[[2, 3, 5, 6], 0] = 0.9  # two events 1.0-2.0 and 2.5-3.5 s, a 0.5 s gap
    scores[15, 0] = 0.9  # a 0.5 s event at 7.5 s
    assert spans(events_from_windows(windows, scores, ["a"], OPTIONS)) == [(1.0, 2.0), (2.5, 3.5), (7.5, 8.0)]
    merged = events_from_windows(windows, scores, ["a"], EventOptions(min_gap=0.6))
    assert spans(merged) == [(1.0, 3.5), (7.5, 8.0)]
    assert merged[0].mean == pytest.approx(0.9 * 2 / 2.5)  # the gap counts in the mean
    assert spans(events_from_windows(windows, scores, ["a"], EventOptions(min_gap=0.4))) == spans(
        events_from_windows(windows, scores, ["a"], OPTIONS)
    )
    long_only = events_from_windows(windows, scores, ["a"], EventOptions(min_duration=0.75))
    assert spans(long_only) == [(1.0, 2.0), (2.5, 3.5)]
    # Merging comes first: two short pieces merged are long enough.
    both = EventOptions(min_gap=0.6, min_duration=2.0)
    assert spans(events_from_windows(windows, scores, ["a"], both)) == [(1.0, 3.5)]


def test_events_at_the_very_start_and_end_of_the_file() -> None:
    windows = regular_windows(10.0, 2.0, 1.0)  # the last window is [8, 10]
    scores = np.zeros((len(windows), 2))
    scores[0, 0] = 0.9  # heard only by the first window: [0, 1] is covered by it alone
    scores[-1, 1] = 0.9  # heard only by the last: [9, 10]
    events = events_from_windows(windows, scores, ["first", "last"], OPTIONS)
    assert spans(events, "first") == [(0.0, 1.0)]
    assert spans(events, "last") == [(9.0, 10.0)]
    assert [e.label for e in events] == ["first", "last"]  # sorted by start


def test_file_shorter_than_one_window_and_a_class_that_never_fires() -> None:
    windows = regular_windows(3.2, 10.255, 5.1275)
    assert windows.tolist() == [[0.0, 3.2]]
    events = events_from_windows(windows, [[0.8, 0.2, 0.5]], ["speech", "never", "exactly"], OPTIONS)
    assert [(e.label, e.start, e.end, e.score, e.mean) for e in events] == [
        ("exactly", 0.0, 3.2, 0.5, 0.5),  # at the threshold counts ("rises to")
        ("speech", 0.0, 3.2, 0.8, 0.8),
    ]


def test_per_class_thresholds_keep_the_off_proportion() -> None:
    windows = regular_windows(6.0, 1.0, 1.0)
    scores = np.array([[0.0, 0.0], [0.25, 0.25], [0.15, 0.15], [0.11, 0.11], [0.0, 0.0], [0.0, 0.0]])
    options = EventOptions(threshold=0.5, threshold_off=0.25, class_thresholds={"quiet": 0.2, "absent": 0.1})
    on, off = options.thresholds(["loud", "quiet"])
    assert on.tolist() == [0.5, 0.2] and off.tolist() == [0.25, 0.1]
    events = events_from_windows(windows, scores, ["loud", "quiet"], options)
    assert spans(events, "loud") == [] and spans(events, "quiet") == [(1.0, 4.0)]
    assert options == EventOptions(threshold=0.5, threshold_off=0.25, class_thresholds={"absent": 0.1, "quiet": 0.2})
    hash(options)


def test_gaps_between_windows_are_not_heard() -> None:
    windows = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])  # hop 2 s, window 1 s
    scores = np.full((3, 1), 0.9)
    track = score_track(windows, scores, ["hum"])
    assert np.isnan(track.values[[1, 3], 0]).all()
    assert spans(events_from_windows(windows, scores, ["hum"], OPTIONS)) == [(0.0, 1.0), (2.0, 3.0), (4.0, 5.0)]
    assert spans(events_from_windows(windows, scores, ["hum"], EventOptions(min_gap=1.5))) == [(0.0, 5.0)]
    assert events_from_windows(windows, scores, ["hum"], EventOptions(min_gap=1.5))[0].mean == pytest.approx(0.9)


def test_unsorted_windows_and_edges_equal_to_rounding() -> None:
    windows = regular_windows(30.0, 10.255, 5.1275)
    order = np.random.default_rng(0).permutation(len(windows))
    scores = np.random.default_rng(1).random((len(windows), 3))
    labels = ["a", "b", "c"]
    assert detect_events(score_track(windows, scores, labels)) == detect_events(
        score_track(windows[order], scores[order], labels)
    )
    edges = score_track(windows, scores, labels).edges
    assert np.all(np.diff(edges) > 1e-3)  # 2 * 5.1275 and 10.255 are one edge


def test_reversed_audio_gives_mirrored_events() -> None:
    windows = regular_windows(20.0, 2.0, 0.5)
    scores = np.random.default_rng(2).random((len(windows), 4))
    labels = ["a", "b", "c", "d"]
    forward = events_from_windows(windows, scores, labels, EventOptions(min_gap=0.6, min_duration=0.5))
    mirrored = 20.0 - windows[:, ::-1]
    backward = events_from_windows(mirrored, scores, labels, EventOptions(min_gap=0.6, min_duration=0.5))
    assert sorted((e.label, round(20 - e.end, 6), round(20 - e.start, 6)) for e in backward) == sorted(
        (e.label, round(e.start, 6), round(e.end, 6)) for e in forward
    )


def test_track_on_a_regular_grid() -> None:
    windows = regular_windows(4.0, 2.0, 1.0)
    track = score_track(windows, [[0.2], [0.6], [0.4]], ["x"])
    times, values = track.on_grid(0.5)
    assert times.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
    assert values[:, 0].tolist() == [0.2, 0.2, 0.2, 0.2, 0.4, 0.4, 0.4, 0.4, 0.4]
    assert isinstance(track, ScoreTrack)


def test_default_off_threshold_is_six_tenths_of_the_threshold() -> None:
    # One rule with the command line: threshold_off defaults to 0.6 x threshold, so a low threshold works.
    assert EventOptions().threshold_off == 0.3
    assert EventOptions(threshold=0.2).threshold_off == pytest.approx(0.12)
    assert EventOptions(threshold=0.2) == EventOptions(threshold=0.2, threshold_off=0.6 * 0.2)
    assert EventOptions(threshold=0.0).threshold_off == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 0.3, "threshold_off": 0.5}, "threshold_off 0.5 is above threshold 0.3"),
        ({"threshold": float("nan")}, "threshold must be a finite number"),
        ({"threshold": "0.5"}, "threshold must be a finite number, got '0.5'"),
        ({"min_duration": -1}, "min_duration must be >= 0 seconds, got -1"),
        ({"min_gap": -0.1}, "min_gap must be >= 0 seconds"),
        ({"class_thresholds": {"dog": None}}, "threshold of 'dog' must be a finite number"),
        ({"class_thresholds": 0.4}, "class_thresholds must map labels to thresholds, got 0.4"),
        ({"threshold": -0.5}, r"threshold must be a score in \[0, 1\], got -0.5"),
        ({"threshold": 1.5}, r"threshold must be a score in \[0, 1\], got 1.5"),
        ({"threshold_off": -1}, r"threshold_off must be a score in \[0, 1\], got -1"),
        ({"class_thresholds": {"tone": -3}}, r"threshold of 'tone' must be a score in \[0, 1\], got -3"),
    ],
)
def test_options_are_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        EventOptions(**kwargs)
    assert "\n" not in str(caught.value)


def test_bad_windows_and_scores_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"scores must be \(windows, classes\) = \(2, 1\), got \(2, 2\)"):
        score_track([[0, 1], [1, 2]], np.zeros((2, 2)), ["a"])
    with pytest.raises(ConfigError, match=r"window \(2, 1\) s must end after it starts"):
        score_track([[0, 1], [2, 1]], np.zeros((2, 1)), ["a"])
    with pytest.raises(ConfigError, match="finite"):
        score_track([[0, 1]], [[np.nan]], ["a"])
    with pytest.raises(ConfigError, match="windows must be"):
        score_track(np.zeros((0, 2)), np.zeros((0, 1)), ["a"])


# ------------------------------------------------------------------------ event metrics against sed_eval
def random_annotations(seed: int, files: int = 6) -> tuple[dict, dict]:
    """Reference events and detections near them (shifted, stretched, split, doubled, missed, invented)."""
    rng = np.random.default_rng(seed)
    labels = ["dog", "siren", "speech"]
    reference, detected = {}, {}
    for number in range(files):
        ref, det = [], []
        for _ in range(rng.integers(0, 8)):
            start = float(rng.uniform(0, 60)) // 0.01 * 0.01
            length = float(rng.choice([0.3, 1.0, 2.5, 6.0]))
            label = str(rng.choice(labels))
            ref.append(Event(label, start, start + length))
            for _ in range(rng.choice([0, 1, 1, 1, 2])):  # missed, found, or found twice
                shift, stretch = rng.normal(0, 0.25), rng.normal(0, 0.6)
                det.append(Event(label, start + shift, max(start + shift + 0.05, start + length + stretch), 0.9, 0.7))
        for _ in range(rng.integers(0, 3)):  # false alarms, some with a neighbour's label
            start = float(rng.uniform(0, 60))
            det.append(Event(str(rng.choice(labels)), start, start + 1.0, 0.6, 0.55))
        reference[f"f{number}.wav"], detected[f"f{number}.wav"] = ref, det
    return reference, detected


def sed_eval_results(reference: dict, detected: dict, labels: list[str], **kwargs: float) -> dict:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcase_util = pytest.importorskip("dcase_util")
        sed_eval = pytest.importorskip("sed_eval")
    metrics = sed_eval.sound_event.EventBasedMetrics(event_label_list=labels, **kwargs)
    for file in reference.keys() | detected.keys():
        def rows(events: list[Event], f: str = file) -> object:
            return dcase_util.containers.MetaDataContainer(
                [{"filename": f, "event_label": e.label, "onset": e.start, "offset": e.end} for e in events]
            )

        metrics.evaluate(rows(reference.get(file, [])), rows(detected.get(file, [])))
    return {
        "overall": metrics.results_overall_metrics()["f_measure"],
        "class_wise": metrics.results_class_wise_metrics(),
        "average": metrics.results_class_wise_average_metrics()["f_measure"],
    }


@pytest.mark.parametrize(
    ("seed", "collar", "offset_ratio", "evaluate_offset"),
    [(0, 0.2, 0.5, True), (1, 1.0, 0.5, True), (2, 0.5, 0.0, True), (3, 0.25, 0.5, False), (4, 1.0, 0.2, True)],
)
def test_event_metrics_equal_sed_eval(seed: int, collar: float, offset_ratio: float, evaluate_offset: bool) -> None:
    from ast_audio.answers.metrics import event_based_metrics

    reference, detected = random_annotations(seed)
    labels = ["dog", "siren", "speech"]
    ours = event_based_metrics(
        reference, detected, collar=collar, offset_ratio=offset_ratio, evaluate_offset=evaluate_offset, labels=labels
    )
    theirs = sed_eval_results(
        reference, detected, labels, t_collar=collar, percentage_of_length=offset_ratio, evaluate_offset=evaluate_offset
    )
    assert ours.overall.true_positives > 0 and ours.overall.detected > ours.overall.true_positives
    for name in ("f_measure", "precision", "recall"):
        assert getattr(ours.overall, name) == pytest.approx(theirs["overall"][name], abs=1e-6)
        for label in labels:
            expected = theirs["class_wise"][label]["f_measure"][name]
            got = getattr(ours.per_class[label], name)
            assert (np.isnan(got) and np.isnan(expected)) or got == pytest.approx(expected, abs=1e-6)
    assert ours.class_average_f_measure == pytest.approx(theirs["average"]["f_measure"], abs=1e-6)


def test_a_sound_reported_twice_is_one_hit_and_one_false_alarm() -> None:
    from ast_audio.answers.metrics import event_based_metrics, match_events

    reference = [Event("dog", 10.0, 11.0), Event("dog", 11.5, 12.0)]
    detected = [Event("dog", 10.9, 11.2), Event("dog", 10.1, 11.1), Event("cat", 10.0, 11.0)]
    # With a 1 s collar both detections could take either sound: the closer onsets are paired.
    assert sorted(match_events(reference, detected, collar=1.0)) == [(0, 1), (1, 0)]
    assert match_events(reference, detected, collar=0.2) == [(0, 1)]
    metrics = event_based_metrics({"a": reference}, {"a": detected}, collar=0.2)
    assert (metrics.overall.reference, metrics.overall.detected, metrics.overall.true_positives) == (2, 3, 1)
    assert metrics.per_class["cat"].f_measure != metrics.per_class["cat"].f_measure  # NaN: no reference cats
    with pytest.raises(ConfigError, match="collar must be a finite number of seconds >= 0, got -1"):
        event_based_metrics({}, {}, collar=-1)

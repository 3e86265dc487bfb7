"""The commands of issue 22 end to end on a tiny random checkpoint and short synthetic audio: calibrate writes
thresholds.json that reads back to what the engine's scores give; evaluate --annotations (Raven, Audacity,
CSV) gives sed_eval's numbers on the same events; segments cuts sample-exact clips and a review.csv that
calibrate and evaluate --review read back; bad files are refused in one line naming file and line."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import soundfile as sf

from ast_audio.answers.events import Event, EventOptions, events_from_windows
from ast_audio.answers.review import ReviewRow, read_review_csv, review_csv, sample_events
from ast_audio.answers.thresholds import Thresholds, choose_thresholds
from ast_audio.cli import main
from helpers import save_small_checkpoint

LABELS = ["sound 0", "sound 1", "sound 2"]
EVENT_ARGS = ["--thresholds", "median.json", "--threshold-off", "0.5"]  # each class at its median, no hysteresis


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A 3-class random checkpoint, a folder per class (4 clips of 1 s each), 3 recordings of 4 s at 44.1 kHz
    (16-bit, the first stereo), the engine's results on them, and median.json: each class's threshold at the
    median of its window scores."""
    root = tmp_path_factory.mktemp("issue22")
    checkpoint = save_small_checkpoint(root / "ckpt", 3)
    rng = np.random.default_rng(1)  # sounds whose median thresholds give each recording 2 events or more
    for c, label in enumerate(LABELS):
        os.makedirs(root / "data" / label)
        for i in range(4):
            noise = rng.standard_normal(16000) * 0.1 * (c + 1)
            sf.write(root / "data" / label / f"c{i}.wav", noise.astype(np.float32), 16000, subtype="PCM_16")
    recordings, t = [], np.arange(22050) / 44100
    for n in range(3):  # loud and quiet tones and noise, half a second each: window scores that vary
        chunks = []
        for _ in range(8):
            amplitude = rng.choice([0.02, 0.6])
            tone = np.sin(2 * np.pi * rng.uniform(200, 4000) * t) if rng.random() < 0.5 else None
            chunks.append(amplitude * (tone if tone is not None else rng.standard_normal(22050) * 0.5))
        samples = np.concatenate(chunks)
        if n == 0:
            samples = np.stack([samples, 0.5 * samples[::-1]], axis=1)
        path = str(root / f"rec{n}.wav")
        sf.write(path, samples, 44100, subtype="PCM_16")
        recordings.append(path)
    results = engine_results(checkpoint, recordings)
    medians = np.median(np.concatenate([r.window_scores for r in results]), axis=0)
    Thresholds({label: float(m) for label, m in zip(LABELS, medians)}, 0.5).write(root / "median.json")
    return root, checkpoint, recordings, results


def arguments(root, args: list[str]) -> list[str]:
    return [str(root / arg) if arg.endswith(".json") else arg for arg in args]


def engine_results(checkpoint: str, files: list[str]):
    from ast_audio.inference.options import InferenceOptions

    return InferenceOptions(model=checkpoint, device="cpu").load().classify(files)


def test_calibrate_writes_thresholds_json_the_engine_scores_give(workspace, capsys) -> None:
    from ast_audio.commands.calibrate import holdout_split

    root, checkpoint, *_ = workspace
    old = os.umask(0o027)
    try:
        code = main(["calibrate", checkpoint, str(root / "data"), "--min-positives", "2", "--calibration", "platt",
                     "--holdout", "0.25", "--device", "cpu", "-q"])
    finally:
        os.umask(old)
    out = capsys.readouterr().out
    assert code == 0
    path = os.path.join(checkpoint, "thresholds.json")
    assert os.stat(path).st_mode & 0o777 == 0o640
    written = Thresholds.read(path)
    clips = sorted(str(p) for p in (root / "data").rglob("*.wav"))
    results = engine_results(checkpoint, clips)
    scores = np.stack([r.scores for r in results])
    targets = np.array([[LABELS.index(os.path.basename(os.path.dirname(c))) == k for k in range(3)] for c in clips])
    fit, held = holdout_split(targets, 0.25, 0)
    assert len(held) == 3 and sorted(np.argmax(targets[held], axis=1)) == [0, 1, 2]  # one clip of each class
    expected = choose_thresholds(scores[fit], targets[fit], LABELS, min_positives=2, source=str(root / "data"))
    assert written.thresholds == pytest.approx(expected.thresholds, abs=1e-6)
    assert written.default == pytest.approx(expected.default, abs=1e-6) and written.calibration.method == "platt"
    assert Thresholds.from_json(written.to_json()).to_json() == written.to_json()
    for label in LABELS:
        assert label in out
    assert "on the held-out clips)" in out and "held out (3 clips):" in out and "held-out mean F1:" in out
    # Not a writable checkpoint directory, and no --output: refused before any model loads.
    assert main(["calibrate", "some/hub-id", str(root / "data")]) == 2
    assert "name the file with --output" in capsys.readouterr().err
    os.remove(path)


def sed_eval_event_and_segment(reference: dict, detected: dict, durations: dict) -> tuple:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcase_util = pytest.importorskip("dcase_util")
        sed_eval = pytest.importorskip("sed_eval")
    labels = sorted({e.label for events in reference.values() for e in events} & set(LABELS))
    events = sed_eval.sound_event.EventBasedMetrics(event_label_list=labels, t_collar=0.2, percentage_of_length=0.5)
    segments = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=labels, time_resolution=1.0)
    for file in reference:
        def rows(found: list[Event], f: str = file) -> object:
            return dcase_util.containers.MetaDataContainer(
                [{"filename": f, "event_label": e.label, "onset": e.start, "offset": e.end}
                 for e in found if e.label in labels]
            )

        events.evaluate(rows(reference[file]), rows(detected[file]))
        segments.evaluate(rows(reference[file]), rows(detected[file]), evaluated_length_seconds=durations[file])
    return labels, events, segments


def write_annotations(root, recordings: list[str], detected: dict) -> list[str]:
    """Reference events near the detections (some shifted within the collar, one dropped, one false, one of a
    label the model lacks), one file per format: a Raven table with extra columns, an Audacity track with a
    frequency line, a CSV with a file column in shuffled order."""
    reference = {}
    for n, path in enumerate(recordings):
        found = [Event(e.label, round(e.start + 0.1 * (i % 2), 6), e.end) for i, e in enumerate(detected[path])]
        reference[path] = found[1:] + [Event("sound 1", 3.0, 3.5), Event("bird", 0.5, 1.0)]
    raven = root / "rec0.Table.1.selections.txt"
    lines = ["Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tAnnotation\tNotes"]
    lines += [f"{i}\tSpectrogram 1\t1\t{e.start}\t{e.end}\t0\t8000\t{e.label}\tok" for i, e in
              enumerate(reference[recordings[0]], 1)]
    raven.write_text("\n".join(lines) + "\n")
    audacity = root / "rec1.txt"
    audacity.write_text("".join(f"{e.start}\t{e.end}\t{e.label}\n\\\t100\t2000\n" for e in reference[recordings[1]]))
    table = root / "more.csv"
    rows = [f"{os.path.basename(recordings[2])},{e.start},{e.end},{e.label}" for e in reference[recordings[2]]]
    table.write_text("filename,onset,offset,event_label\n" + "\n".join(reversed(rows)) + "\n")
    return [str(raven), str(audacity), str(table)], reference


def test_evaluate_annotations_in_three_formats_equals_sed_eval(workspace, capsys) -> None:
    root, checkpoint, recordings, results = workspace
    options = EventOptions(0.5, 0.5, class_thresholds=Thresholds.read(root / "median.json").thresholds)
    detected = {r.source: events_from_windows(r.windows, r.window_scores, r.labels, options) for r in results}
    durations = {r.source: r.duration for r in results}
    assert all(len(found) >= 2 for found in detected.values())
    files, reference = write_annotations(root, recordings, detected)
    output = root / "eval" / "metrics.json"
    code = main(["evaluate", checkpoint, *recordings, "--annotations", *files, *arguments(root, EVENT_ARGS),
                 "--batch-size", "8", "--device", "cpu", "-q", "--output", str(output),
                 "--plot", str(root / "eval" / "pr.png")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "1 annotated labels the model lacks are left out: bird" in captured.err
    metrics = json.loads(output.read_text())
    labels, events, segments = sed_eval_event_and_segment(reference, detected, durations)
    assert metrics["labels"] == labels and metrics["files"] == 3
    theirs = events.results_overall_metrics()["f_measure"]
    ours = metrics["event_based"]["overall"]
    assert 0 < ours["true_positives"] < ours["reference"] and ours["detected"] > ours["true_positives"]
    for name in ("precision", "recall", "f_measure"):
        assert ours[name] == pytest.approx(theirs[name], abs=1e-6)
        seg = metrics["segment_based"]["overall"][name]
        assert seg == pytest.approx(segments.overall_f_measure()[name], abs=1e-6)
        for label in labels:
            expected = events.class_wise_f_measure(label)[name]
            got = metrics["event_based"]["per_class"][label][name]
            assert (got is None and np.isnan(expected)) or got == pytest.approx(expected, abs=1e-6)
    assert metrics["segment_based"]["overall"]["error_rate"] == pytest.approx(
        segments.overall_error_rate()["error_rate"], abs=1e-6)
    assert len(metrics["sweep"]) == 19 * (len(labels) + 1)
    assert (root / "eval" / "metrics.sweep.csv").read_text().startswith("label,threshold,precision,recall")
    assert (root / "eval" / "pr.png").read_bytes()[:4] == b"\x89PNG"
    assert "overall" in captured.out


def test_segments_are_sample_exact_and_review_csv_reads_back(workspace, capsys) -> None:
    root, checkpoint, recordings, _ = workspace
    out = root / "clips"
    code = main(["segments", checkpoint, *recordings[:2], "--output-dir", str(out), *arguments(root, EVENT_ARGS),
                 "--padding", "0.5", "--device", "cpu", "-q"])
    assert code == 0, capsys.readouterr().err
    rows = read_review_csv(out / "review.csv")
    assert len(rows) >= 4 and all(row.verdict is None for row in rows)
    edges = 0
    for row in rows:
        source, rate = sf.read(row.file, dtype="int16")
        clip, clip_rate = sf.read(out / row.clip, dtype="int16")
        first = max(0, round((row.start - 0.5) * rate))
        last = min(len(source), round((row.end + 0.5) * rate))
        edges += first == 0 or last == len(source)
        assert clip_rate == rate == 44100 and clip.shape == source[first:last].shape
        assert np.array_equal(clip, source[first:last])
        assert row.label.replace(" ", "_") in row.clip and f"{row.score:.3f}" in row.clip
    assert edges > 0  # some clip is cut at a file edge
    # A person marks them; calibrate learns from the verdicts, evaluate --review reports precision.
    marked = [ReviewRow(r.file, r.start, r.end, r.label, r.score, r.clip, i % 3 != 0) for i, r in enumerate(rows)]
    (out / "review.csv").write_text(review_csv(marked))
    assert read_review_csv(out / "review.csv") == marked
    assert main(["evaluate", checkpoint, "--review", str(out / "review.csv"), "-o", str(root / "p.json")]) == 0
    overall = json.loads((root / "p.json").read_text())["overall"]
    assert overall == {"reviewed": len(marked), "right": sum(r.verdict for r in marked),
                       "precision": pytest.approx(sum(r.verdict for r in marked) / len(marked))}
    assert main(["calibrate", checkpoint, str(out / "review.csv"), "--min-positives", "1", "-o",
                 str(root / "t.json")]) == 0
    learned = Thresholds.read(root / "t.json")
    assert sum(item.positives for item in learned.classes.values()) == sum(r.verdict for r in marked)
    # A second run would replace the verdicts: refused.
    assert main(["segments", checkpoint, recordings[0], "--output-dir", str(out), "-q"]) == 2
    assert "holds" in capsys.readouterr().err


def test_stratified_sample_spreads_over_labels_and_scores() -> None:
    scored = [("f.wav", Event(label, i, i + 1, score=i / 100)) for i in range(100) for label in ("a", "b")]
    chosen = sample_events(scored, 10, stratify="score", strata=5, seed=1)
    assert len(chosen) == 10 and chosen == sorted(set(chosen))
    picked = [scored[i][1] for i in chosen]
    assert {e.label for e in picked} == {"a", "b"}
    assert sorted({min(int(e.score * 5), 4) for e in picked if e.label == "a"}) == [0, 1, 2, 3, 4]
    assert sample_events(scored, 10, seed=1) == sample_events(scored, 10, seed=1) != sample_events(scored, 10, seed=2)
    assert sample_events(scored, None) == list(range(200))


def test_evaluate_counts_the_detections_of_a_recording_annotated_without_events(workspace, capsys) -> None:
    # rec1 annotated by an empty Audacity label track (0 bytes, as Audacity exports an empty track): it is
    # evaluated, every detection in it a false one; rec0 annotated with exactly its detections.
    root, checkpoint, recordings, results = workspace
    options = EventOptions(0.5, 0.5, class_thresholds=Thresholds.read(root / "median.json").thresholds)
    detected = {r.source: events_from_windows(r.windows, r.window_scores, r.labels, options) for r in results}
    folder = root / "empty_track"
    folder.mkdir()
    lines = ["Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tAnnotation"]
    lines += [f"{i}\tSpectrogram 1\t1\t{e.start}\t{e.end}\t{e.label}" for i, e in enumerate(detected[recordings[0]], 1)]
    (folder / "rec0.Table.1.selections.txt").write_text("\n".join(lines) + "\n")
    (folder / "rec1.txt").write_bytes(b"")
    output = folder / "metrics.json"
    code = main(["evaluate", checkpoint, *recordings[:2], "--annotations", str(folder / "rec0.Table.1.selections.txt"),
                 str(folder / "rec1.txt"), *arguments(root, EVENT_ARGS), "--device", "cpu", "-q",
                 "--output", str(output)])
    captured = capsys.readouterr()
    assert code == 0 and "without annotations" not in captured.err, captured.err
    metrics = json.loads(output.read_text())
    labels = set(metrics["labels"])
    false = [e for e in detected[recordings[1]] if e.label in labels]
    assert metrics["files"] == 2 and false, "rec1 must have detections of an annotated label"
    overall = metrics["event_based"]["overall"]
    assert overall["true_positives"] == len(detected[recordings[0]])
    assert overall["detected"] == len(detected[recordings[0]]) + len(false)


def test_bad_review_and_annotation_files_are_one_line_errors(workspace, capsys) -> None:
    root, checkpoint, recordings, _ = workspace
    bad = root / "bad_review.csv"
    bad.write_text("file,start,end,label,score,clip,verdict\nrec0.wav,0,1,sound 0,0.5,c.wav,right\n"
                   "rec0.wav,1,2,sound 0,0.5,d.wav,maybe\n")
    assert main(["evaluate", checkpoint, "--review", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{bad} line 3: verdict 'maybe'" in err
    table = root / "bad.csv"
    table.write_text("filename,onset,offset,event_label\nrec0.wav,1.0,0.5,sound 0\n")
    assert main(["evaluate", checkpoint, recordings[0], "--annotations", str(table), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{table} line 2: offset 0.5 is before onset 1" in err
    assert main(["evaluate", checkpoint, str(root / "data"), str(root / "data")]) == 2
    assert "expected one DATA" in capsys.readouterr().err


def test_window_targets_by_hand() -> None:
    from ast_audio.answers.window_labels import window_targets

    windows = [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0)]
    events = [Event("a", 0.2, 0.5), Event("a", 2.9, 6.0), Event("b", 2.0, 2.0), Event("z", 0, 4)]
    # a: the 0.3 s event lies inside window 0; [2.9, 6] covers 0.1 s of window 1 (less than half of the 2 s
    # window) and 1.1 s of window 2 (more than half). b: a point on the edges of windows 0 and 2, inside 1.
    assert window_targets(windows, events, ["a", "b"]).astype(int).T.tolist() == [[1, 0, 1], [1, 1, 1]]


def test_calibrate_from_annotated_recordings_learns_on_windows(workspace, capsys) -> None:
    from ast_audio.answers.window_labels import window_targets

    root, checkpoint, recordings, results = workspace
    table = root / "calibration.csv"
    events = {path: [Event("sound 2", 0.0, 1.2), Event("sound 0", 2.0, 2.6), Event("sound 2", 3.3, 4.0)]
              for path in recordings}
    table.write_text("filename,onset,offset,event_label\n" + "".join(
        f"{os.path.basename(p)},{e.start},{e.end},{e.label}\n" for p, found in events.items() for e in found))
    code = main(["calibrate", checkpoint, *recordings, "--annotations", str(table), "--min-positives", "2",
                 "--device", "cpu", "-q", "-o", str(root / "windows.json")])
    assert code == 0, capsys.readouterr().err
    learned = Thresholds.read(root / "windows.json")
    labels = ["sound 0", "sound 2"]  # the annotated classes, in the model's order
    scores = np.concatenate([r.window_scores[:, [0, 2]] for r in results])
    targets = np.concatenate([window_targets(r.windows, events[r.source], labels) for r in results])
    expected = choose_thresholds(scores, targets, labels, min_positives=2)
    assert set(learned.classes) == set(labels) and targets.sum(axis=0).min() >= 2
    assert learned.thresholds == pytest.approx(expected.thresholds, abs=1e-6)
    assert learned.source.startswith("annotations: ")


def test_segments_select_classes_as_classify_does(workspace, capsys) -> None:
    """--include / --exclude (classify's class selection, shared declaration) pick the classes cut; a label the
    model lacks is a one-line usage error."""
    root, checkpoint, recordings, _ = workspace

    def cut(name: str, *selection: str) -> list:
        out = root / name
        code = main(["segments", checkpoint, *recordings, "--output-dir", str(out), *arguments(root, EVENT_ARGS),
                     "--device", "cpu", "-q", *selection])
        assert code == 0, capsys.readouterr().err
        return [(row.start, row.end, row.label, row.score) for row in read_review_csv(out / "review.csv")]

    every = cut("all")
    assert {label for _, _, label, _ in every} == set(LABELS)
    assert cut("only1", "--include", "sound 1") == [row for row in every if row[2] == "sound 1"]
    assert cut("not1", "--exclude", "sound 1") == [row for row in every if row[2] != "sound 1"]
    assert main(["segments", checkpoint, recordings[2], "--output-dir", str(root / "bad"), "--include", "Dog",
                 "-q"]) == 2
    err = capsys.readouterr().err
    assert "Dog" in err and "Traceback" not in err


def test_segments_of_a_file_with_a_240_character_stem(workspace, capsys) -> None:
    """The clips' names are shortened with a hash of the stem (two long stems stay apart); the job goes on."""
    import shutil

    from ast_audio.commands.segments import clip_name

    root, checkpoint, recordings, _ = workspace
    long = root / "long" / ("r" * 240 + ".wav")
    long.parent.mkdir()
    shutil.copy(recordings[0], long)
    out = root / "long_clips"
    code = main(["segments", checkpoint, str(long), recordings[1], "--output-dir", str(out),
                 *arguments(root, EVENT_ARGS), "--device", "cpu", "-q"])
    assert code == 0, capsys.readouterr().err
    rows = read_review_csv(out / "review.csv")
    mine = [row for row in rows if row.file == str(long)]
    assert mine and all(len(row.clip.encode()) <= 240 and "~" in row.clip and (out / row.clip).is_file()
                        for row in mine)
    assert all("~" not in row.clip for row in rows if row.file != str(long))
    assert clip_name("a" * 240 + "1.wav", 1, 2, "x", 0.5) != clip_name("a" * 240 + "2.wav", 1, 2, "x", 0.5)

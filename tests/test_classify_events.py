"""`ast-audio classify --events` and the class selection end to end: the events of the Python API in every
output form (JSON lines, CSV, Parquet, Raven, Audacity, WebVTT, SRT), read back by our parsers and by
crowsetta; --output-dir's mirror of the input tree; resume refusing other event options; usage errors."""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest
import soundfile as sf

from ast_audio.answers.events import EventOptions
from ast_audio.answers.formats import read_audacity, read_raven
from ast_audio.cli import main

RATE = 16000
LABELS = ["Bark", "Dog", "Cat", "Siren", "Speech"]  # real AudioSet class names
WINDOW = ["--window", "1.0", "--hop", "0.5"]


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny AudioSet-labelled checkpoint, a folder in/ with a.wav (3 s) and sub/b.wav (2 s) of noise and
    tones, and thresholds between the scores' quantiles so that some windows fire and others do not."""
    from ast_audio import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, AudioClassifier
    from helpers import SMALL, randomize_

    root = tmp_path_factory.mktemp("events")
    model = root / "model"
    config = ASTConfig(**SMALL, max_length=128, id2label=dict(enumerate(LABELS)),
                       problem_type="multi_label_classification")
    randomize_(ASTForAudioClassification(config), seed=5).save_pretrained(model)
    ASTFeatureExtractor(max_length=128).save_pretrained(model)
    rng = np.random.default_rng(1)
    (root / "in" / "sub").mkdir(parents=True)
    for name, seconds in (("a.wav", 3.0), ("sub/b.wav", 2.0)):
        t = np.arange(int(seconds * RATE)) / RATE
        tone = np.where(t > seconds / 2, np.sin(2 * np.pi * 880 * t), 0.0)
        sf.write(root / "in" / name, (0.3 * tone + 0.05 * rng.standard_normal(len(t))).astype(np.float32), RATE)
    classifier = AudioClassifier.from_pretrained(str(model), window=1.0, hop=0.5)
    paths = [str(root / "in" / "a.wav"), str(root / "in" / "sub" / "b.wav")]
    scores = np.concatenate([result.window_scores.ravel() for result in classifier.classify(paths)])
    on, off = (float(np.round(np.quantile(scores, q), 3)) for q in (0.75, 0.5))
    options = EventOptions(threshold=on, threshold_off=off)
    expected = {result.source: result.events for result in classifier.classify(paths, answers=_answers(options))}
    assert sum(map(len, expected.values())) >= 2, "the thresholds must give events to compare"
    return dict(root=root, model=str(model), paths=paths, expected=expected,
                flags=["--threshold", str(on), "--threshold-off", str(off)])


def _answers(events):
    from ast_audio.answers.options import AnswerOptions

    return AnswerOptions(events=events)


def run_cli(args, capsys):
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def classify(setup, capsys, *args, inputs=None):
    return run_cli(["classify", *(inputs or [setup["root"] / "in"]), "-m", setup["model"], *WINDOW, "-q",
                    *setup["flags"], *args], capsys)


def spans(events):
    return [(event.label, pytest.approx(event.start, abs=1e-6), pytest.approx(event.end, abs=1e-6))
            for event in events]


def test_events_in_json_csv_and_parquet(setup, capsys, tmp_path):
    import pyarrow.parquet as pq

    expected = setup["expected"]
    code, _, err = classify(setup, capsys, "-o", tmp_path / "out.jsonl")
    assert code == 0, err
    rows = {row["path"]: row for row in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    for path, events in expected.items():
        assert rows[path]["events"] == [pytest.approx(event.to_dict()) for event in events]
    code, _, err = classify(setup, capsys, "-o", tmp_path / "out.csv", "--no-timeline")
    assert code == 0, err
    table = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    for path, events in expected.items():
        rows_of = [row for row in table if row["path"] == path and row["level"] == "event"]
        assert [(row["label"], float(row["start"]), float(row["end"]), float(row["score"]), float(row["mean"]))
                for row in rows_of] == [(e.label, e.start, e.end, pytest.approx(e.score, abs=1e-6),
                                         pytest.approx(e.mean, abs=1e-6)) for e in events]  # times as JSON's
    code, _, err = classify(setup, capsys, "-o", tmp_path / "out.parquet")
    assert code == 0, err
    for row in pq.read_table(tmp_path / "out.parquet").to_pylist():
        assert row["events"] == [pytest.approx(event.to_dict()) for event in expected[row["path"]]]


def test_one_raven_table_for_a_folder_read_back(setup, capsys, tmp_path):
    crowsetta = pytest.importorskip("crowsetta")
    target = tmp_path / "all.selections.txt"
    code, _, err = classify(setup, capsys, "-f", "raven", "-o", target)
    assert code == 0, err
    text = target.read_text(encoding="utf-8")
    assert text.split("\n")[0].split("\t")[:10] == [
        "Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
        "Begin Path", "Begin File", "File Offset (s)"]
    ours = read_raven(text, str(target))
    assert {path: spans(events) for path, events in ours.items()} == {
        path: spans(events) for path, events in setup["expected"].items() if events}
    # crowsetta reads the table's own times: in a file-sequence table, b.wav's run on after a.wav's 3 s.
    boxes = crowsetta.formats.bbox.Raven.from_file(target, annot_col="Annotation").to_bbox()
    a, b = setup["paths"]
    running = [(e.label, e.start, e.end) for e in setup["expected"][a]]
    running += [(e.label, 3.0 + e.start, 3.0 + e.end) for e in setup["expected"][b]]
    theirs = sorted((box.label, box.onset, box.offset) for box in boxes)
    assert [label for label, *_ in theirs] == [label for label, *_ in sorted(running)]
    assert [t for _, *times in theirs for t in times] == pytest.approx(
        [t for _, *times in sorted(running) for t in times], abs=1e-6)


VTT_TIMING = re.compile(r"^(\d{2,}):([0-5]\d):([0-5]\d)\.(\d{3}) --> (\d{2,}):([0-5]\d):([0-5]\d)\.(\d{3})$")


def test_output_dir_mirrors_the_inputs_in_each_event_format(setup, capsys, tmp_path):
    crowsetta = pytest.importorskip("crowsetta")
    a, b = setup["paths"]
    for fmt, names in (("audacity", ("a.wav.txt", "sub/b.wav.txt")), ("vtt", ("a.wav.vtt", "sub/b.wav.vtt")),
                       ("srt", ("a.wav.srt", "sub/b.wav.srt")),
                       ("raven", ("a.Table.1.selections.txt", "sub/b.Table.1.selections.txt"))):
        folder = tmp_path / fmt
        code, _, err = classify(setup, capsys, "-f", fmt, "--output-dir", folder)
        assert code == 0, err
        index = [json.loads(line) for line in (folder / "index.jsonl").read_text().splitlines()]
        assert index == [{"path": a, "output": names[0]}, {"path": b, "output": names[1]}]
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name[0] != ".")
        assert files == sorted([*names, "index.jsonl"])
        for source, name in zip((a, b), names):
            expected, text = setup["expected"][source], (folder / name).read_text(encoding="utf-8")
            if fmt == "audacity":
                assert spans(read_audacity(text, name)) == spans(expected)
                seq = crowsetta.formats.seq.AudSeq.from_file(folder / name).to_seq() if expected else None
                assert seq is None or list(seq.labels) == [e.label for e in expected]
            elif fmt == "raven":
                assert spans(read_raven(text, name).get(None, [])) == spans(expected)
            elif fmt == "vtt":
                blocks = text.rstrip("\n").split("\n\n")
                assert blocks[0] == "WEBVTT" and len(blocks) == len(expected) + 1
                assert all(VTT_TIMING.match(block.split("\n")[1]) for block in blocks[1:])
            else:
                assert text.count(" --> ") == len(expected) and "," in text.split(" --> ")[0] if expected else True


def test_resume_refuses_other_event_options(setup, capsys, tmp_path):
    target = tmp_path / "out.jsonl"
    assert classify(setup, capsys, "-o", target)[0] == 0
    code, _, err = classify(setup, capsys, "-o", target, "--resume")
    assert code == 0 and "2 of 2 files already done" in err
    code, _, err = classify(setup, capsys, "-o", target, "--resume", "--min-gap", "0.5")
    # (the exit code of a refused resume is jobs/output.py's: 2 once it raises UsageError there)
    assert code != 0 and "cannot resume" in err and "events" in err and "min_gap" in err
    folder = tmp_path / "vtt"
    assert classify(setup, capsys, "-f", "vtt", "--output-dir", folder)[0] == 0
    code, _, err = classify(setup, capsys, "-f", "vtt", "--output-dir", folder, "--resume")
    assert code == 0 and "2 of 2 files already done" in err
    code, _, err = classify(setup, capsys, "-f", "vtt", "--output-dir", folder, "--resume", "--exclude", "Cat")
    assert code != 0 and "cannot resume" in err and "selection" in err
    # A name given twice is the name once: the resume of a job with it once goes on.
    excluded = tmp_path / "excluded"
    assert classify(setup, capsys, "-f", "vtt", "--output-dir", excluded, "--exclude", "Cat")[0] == 0
    code, _, err = classify(setup, capsys, "-f", "vtt", "--output-dir", excluded, "--resume",
                            "--exclude", "Cat", "--exclude", "Cat")
    assert code == 0 and "2 of 2 files already done" in err, err


def test_table_lists_the_events(setup, capsys):
    a = setup["paths"][0]
    code, out, err = classify(setup, capsys, "-f", "table", "--no-timeline", inputs=[a])
    assert code == 0, err
    lines = out.splitlines()
    events = setup["expected"][a]
    assert f"  events: {len(events)}" in lines
    assert [line.split()[3] for line in lines[lines.index(f"  events: {len(events)}") + 1:] if line.strip()] == [
        event.label for event in events]


def test_rollup_and_include_from_the_command_line(setup, capsys):
    a = setup["paths"][0]
    code, out, err = classify(setup, capsys, "--no-timeline", "-k", "5", "-f", "jsonl", inputs=[a])
    assert code == 0, err
    plain = {item["label"]: item["score"] for item in json.loads(out)["labels"]}
    code, out, err = classify(setup, capsys, "--rollup", "--include", "Animal", "--include", "Dog",
                              "--no-timeline", "-f", "jsonl", inputs=[a])
    assert code == 0, err
    row = json.loads(out)
    assert {item["label"] for item in row["labels"]} == {"Animal", "Dog"}
    assert {event["label"] for event in row["events"]} <= {"Animal", "Dog"}
    scores = {item["label"]: item["score"] for item in row["labels"]}
    assert scores["Animal"] >= max(plain["Bark"], plain["Dog"], plain["Cat"]) - 1e-6
    assert scores["Dog"] >= max(plain["Bark"], plain["Dog"]) - 1e-6


@pytest.mark.parametrize("args, message", [
    (["-f", "vtt"], "describes one recording: for several inputs use --output-dir"),
    (["-f", "raven"], "needs --output FILE (one table) or --output-dir"),
    (["-f", "jsonl", "--output-dir", "{tmp}/d"], "--format jsonl has none"),
    (["-o", "{tmp}/x.jsonl", "--output-dir", "{tmp}/d"], "exclude each other"),
    (["--include", "dog"], "'dog' is not a label of the model (did you mean 'Dog'?)"),
    (["--group", "pets"], "expected NAME=LABEL,LABEL"),
    (["--refine", "-1"], "refine must be a number of rounds from 0 to 3 (1 recommended), got -1"),
    (["--refine", "100"], "refine must be a number of rounds from 0 to 3 (1 recommended), got 100"),
    (["--threshold", "0.2", "--threshold-off", "0.4"], "threshold_off 0.4 is above threshold 0.2"),
    (["--threshold", "-0.5"], "threshold must be a score in [0, 1], got -0.5"),
    (["--threshold", "1.5"], "threshold must be a score in [0, 1], got 1.5"),
    (["--threshold-off", "-1"], "threshold_off must be a score in [0, 1], got -1"),
    (["--decide", "--threshold", "2"], "the default decision threshold must be a score in [0, 1], got 2"),
    (["--events", "--thresholds", "{tmp}/bad.json"], "bad.json: threshold of 'Dog' must be a score in [0, 1], got -3"),
])
def test_usage_errors_exit_2_with_one_line(setup, capsys, tmp_path, args, message):
    (tmp_path / "bad.json").write_text('{"version": 1, "default": 0.5, "thresholds": {"Dog": -3}}')
    code, _, err = run_cli(["classify", setup["root"] / "in", "-m", setup["model"], "-q",
                            *[arg.format(tmp=tmp_path) for arg in args]], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_thresholds_for_labels_the_model_lacks_are_a_one_line_warning(setup, capsys, tmp_path):
    from ast_audio.answers.thresholds import Thresholds

    path = tmp_path / "thresholds.json"
    Thresholds({"Dog": 0.4, "Tuba": 0.3, "Gong": 0.2}, default=0.5).write(path)
    code, out, err = run_cli(["classify", setup["paths"][1], "-m", setup["model"], *WINDOW, "-q",
                              "--thresholds", path, "-f", "jsonl"], capsys)
    assert code == 0 and json.loads(out)["events"] is not None, err
    assert err.strip() == "ast-audio: warning: the thresholds name labels the model lacks (ignored): Gong, Tuba"


def test_rollup_refused_for_labels_that_are_not_audiosets(setup, capsys, tmp_path):
    from helpers import save_small_checkpoint

    other = save_small_checkpoint(tmp_path / "other", labels=3)
    code, _, err = run_cli(["classify", setup["paths"][0], "-m", other, "--rollup", "-q"], capsys)
    assert code == 2 and "rollup needs AudioSet labels" in err and len(err.strip().splitlines()) == 1, err


def test_output_dir_json_per_file_and_a_bad_input(setup, capsys, tmp_path):
    import shutil

    inputs = tmp_path / "in"
    (inputs / "deep" / "er").mkdir(parents=True)
    shutil.copy(setup["paths"][0], inputs / "deep" / "er" / "a.wav")
    (inputs / "bad.wav").write_bytes(b"RIFF not really audio")
    folder = tmp_path / "out"
    code, _, err = classify(setup, capsys, "--output-dir", folder, inputs=[inputs])
    assert code == 3 and "bad.wav" in err  # one bad input: reported, the others written
    index = [json.loads(line) for line in (folder / "index.jsonl").read_text().splitlines()]
    assert [row.get("output") for row in index] == [None, "deep/er/a.wav.json"] and "error" in index[0]
    assert not (folder / "bad.wav.json").exists()
    record = json.loads((folder / "deep" / "er" / "a.wav.json").read_text())
    assert record["path"] == str(inputs / "deep" / "er" / "a.wav")
    assert record["events"] == [pytest.approx(e.to_dict()) for e in setup["expected"][setup["paths"][0]]]


def test_plot_draws_the_events(setup):
    pytest.importorskip("matplotlib")
    from ast_audio import AudioClassifier
    from ast_audio.jobs.plot import draw_result

    a = setup["paths"][0]
    classifier = AudioClassifier.from_pretrained(setup["model"], window=1.0, hop=0.5)
    result = classifier.classify(a, answers=_answers(EventOptions(threshold=0.0, threshold_off=0.0)))
    figure = draw_result(result, top=3)
    bars = [c for c in figure.axes[1].collections if c.get_gid() == "events"]
    assert [tuple(segment[:, 0]) for bar in bars for segment in bar.get_segments()] == [(0.0, 3.0)] * 3


def test_output_dir_with_names_near_the_file_systems_limit(setup, capsys, tmp_path):
    """A 240-character stem: its output (248 bytes) is written, its temporary name fitting too; a 250-character
    one, whose output name (262 bytes) cannot exist, is that input's error line and the job goes on."""
    import shutil

    folder = tmp_path / "in"
    folder.mkdir()
    fits, too_long = folder / ("x" * 240 + ".wav"), folder / ("y" * 250 + ".wav")
    for path in (fits, too_long):
        shutil.copy(setup["paths"][0], path)
    out = tmp_path / "out"
    classify(setup, capsys, "-f", "vtt", "--output-dir", out, inputs=[folder])
    index = {line["path"]: line for line in map(json.loads, (out / "index.jsonl").read_text().splitlines())}
    assert index[str(fits)] == {"path": str(fits), "output": fits.name + ".vtt"}
    assert (out / (fits.name + ".vtt")).read_text().startswith("WEBVTT")
    assert "longer than the file system allows" in index[str(too_long)]["error"]
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # no temporary file left


def test_atomic_write_of_a_name_at_the_file_systems_limit(tmp_path):
    """A final name of 255 bytes (the usual limit) is written whole: the temporary name is short."""
    import os

    from ast_audio.io_utils import atomic_write_bytes

    target = tmp_path / ("é" * 100 + "n" * 55)  # 255 bytes in UTF-8
    atomic_write_bytes(target, b"whole")
    assert target.read_bytes() == b"whole" and os.listdir(tmp_path) == [target.name]

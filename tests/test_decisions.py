"""Decisions (`--decide`): the labels at or above their thresholds, per clip and per window, computed once in
`prepare.assemble` and written by `jobs.records` in every form; the thresholds from --thresholds, the
checkpoint's thresholds.json or --threshold; a resume with other thresholds refused."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ast_audio.answers.decisions import DecisionThresholds
from ast_audio.answers.options import AnswerOptions
from ast_audio.answers.thresholds import Thresholds
from ast_audio.cli import main
from ast_audio.errors import ConfigError
from ast_audio.inference.prepare import WindowPlan, assemble
from ast_audio.jobs.records import clip_json, clip_record, csv_rows, json_record, records_table

RATE = 16000
WINDOW = ["--window", "1.0", "--hop", "0.5"]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def expected_decisions(scores: np.ndarray, labels: list[str], thresholds: Thresholds) -> list[dict]:
    """The oracle: `Thresholds.decide` on one row of scores, as records sorted by score."""
    mask = thresholds.decide(scores, labels)
    limits = thresholds.threshold_array(labels)
    chosen = sorted(np.flatnonzero(mask), key=lambda i: -scores[i])
    return [{"label": labels[i], "score": pytest.approx(float(scores[i])), "threshold": float(limits[i])}
            for i in chosen]


def test_assemble_decides_clip_and_windows_after_the_selection_in_every_record_form():
    labels = ["Dog", "Cat", "Siren"]
    scores = np.array([[0.9, 0.2, 0.6], [0.1, 0.8, 0.45], [0.3, 0.7, 0.2]], dtype=np.float32)
    plan = WindowPlan(0, "x.wav", [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0)], 2.0)
    thresholds = Thresholds({"Siren": 0.4, "Cat": 0.75}, default=0.5)
    # "pets" is a group without its own threshold: it uses the default (0.5)
    options = AnswerOptions(decide=thresholds, groups={"pets": ["Dog", "Cat"]}, exclude=["Dog"])
    result = assemble(plan, scores, np.zeros((3, 4)), labels, "mean", options)
    assert result.labels == ["Cat", "Siren", "pets"]
    record = clip_json(result)
    assert record["decisions"] == expected_decisions(result.scores, result.labels, thresholds)
    # pets: mean 0.8 >= 0.5 (the default); Siren 0.417 >= 0.4; Cat 0.567 < 0.75
    assert [d["label"] for d in record["decisions"]] == ["pets", "Siren"]
    for window, row in zip(record["windows"], result.window_scores):
        assert window["decisions"] == expected_decisions(row, result.labels, thresholds)
    assert [[d["label"] for d in w["decisions"]] for w in record["windows"]] == [
        ["pets", "Siren"], ["Cat", "pets", "Siren"], ["pets"]]
    # the table row (Parquet) reads back to the same record
    table = records_table([clip_record(result)])
    assert json_record(table.to_pylist()[0]) == record
    assert table.schema.field("decisions").type.value_type.names == ["label", "score", "threshold"]
    rows = [row for row in csv_rows(result) if "decision" in row[1]]
    assert [(row[1], row[2], row[3], row[4], row[5]) for row in rows] == [
        ("decision", 0.0, 2.0, 1, "pets"), ("decision", 0.0, 2.0, 2, "Siren"), ("window decision", 0.0, 1.0, 1, "pets"),
        ("window decision", 0.0, 1.0, 2, "Siren"), ("window decision", 0.5, 1.5, 1, "Cat"),
        ("window decision", 0.5, 1.5, 2, "pets"), ("window decision", 0.5, 1.5, 3, "Siren"),
        ("window decision", 1.0, 2.0, 1, "pets")]
    # off: no decisions anywhere, the record as before
    plain = clip_json(assemble(plan, scores, np.zeros((3, 4)), labels, "mean", AnswerOptions()))
    assert "decisions" not in plain and all("decisions" not in w for w in plain["windows"])


def test_decide_options_hashable_in_numbers_and_checked(tmp_path):
    path = tmp_path / "thresholds.json"
    Thresholds({"Dog": 0.7}, default=0.4).write(path)
    read = AnswerOptions(decide=Path(path))
    assert read == AnswerOptions(decide=DecisionThresholds(0.4, {"Dog": 0.7})) and hash(read)
    assert read.active and AnswerOptions(decide=0.3).decide == DecisionThresholds(0.3)
    numbers = read.numbers()["decide"]
    assert json.loads(json.dumps(numbers)) == numbers and numbers["default"] == 0.4 and numbers["classes"] == 1
    other = AnswerOptions(decide=DecisionThresholds(0.4, {"Dog": 0.71}))
    assert other.numbers()["decide"]["content"] != numbers["content"]
    assert AnswerOptions().numbers() == {}
    with pytest.raises(ConfigError, match="decide must be"):
        AnswerOptions(decide="0.5")
    with pytest.raises(ConfigError, match="threshold of 'Dog' must be a finite number"):
        DecisionThresholds(0.5, {"Dog": float("nan")})
    with pytest.raises(ConfigError, match=r"the default decision threshold must be a score in \[0, 1\], got -1"):
        AnswerOptions(decide=-1)
    with pytest.raises(ConfigError, match=r"threshold of 'Dog' must be a score in \[0, 1\], got 1.5"):
        DecisionThresholds(0.5, {"Dog": 1.5})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny 6-class checkpoint with a thresholds.json beside it (thresholds between its scores' quantiles, so
    some classes are decided and others not), another thresholds file, and a 2.5 s recording."""
    from ast_audio import AudioClassifier
    from helpers import save_small_checkpoint

    root = tmp_path_factory.mktemp("decide")
    model = save_small_checkpoint(root / "model", labels=6, seed=4)
    rng = np.random.default_rng(2)
    t = np.arange(int(2.5 * RATE)) / RATE
    audio = 0.3 * np.where(t > 1.2, np.sin(2 * np.pi * 660 * t), 0.0) + 0.05 * rng.standard_normal(len(t))
    sf.write(root / "a.wav", audio.astype(np.float32), RATE)
    result = AudioClassifier.from_pretrained(model, window=1.0, hop=0.5).classify([str(root / "a.wav")])[0]
    labels, low, high = result.labels, *np.quantile(result.window_scores, [0.3, 0.7])
    beside = Thresholds({labels[0]: float(low), labels[1]: float(high)}, default=float((low + high) / 2))
    beside.write(root / "model" / "thresholds.json")
    other = Thresholds({labels[2]: float(low)}, default=float(high))
    other.write(root / "other.json")
    return dict(root=root, model=model, wav=str(root / "a.wav"), result=result, beside=beside, other=other)


def run(setup, capsys, *args):
    code = main(["classify", setup["wav"], "-m", setup["model"], *WINDOW, "-q", "--decide", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_decided(record: dict, result, thresholds: Thresholds) -> None:
    assert record["decisions"] == expected_decisions(result.scores, result.labels, thresholds)
    assert len(record["windows"]) == len(result.windows) == 4
    for window, row in zip(record["windows"], result.window_scores):
        assert window["decisions"] == expected_decisions(row, result.labels, thresholds)


def test_classify_decide_reads_the_checkpoint_thresholds_and_thresholds_wins(setup, capsys, tmp_path):
    result = setup["result"]
    code, out, err = run(setup, capsys, "-f", "jsonl")
    assert code == 0, err
    record = json.loads(out)
    assert_decided(record, result, setup["beside"])
    assert "events" not in record  # --decide alone finds no events
    assert 0 < sum(len(w["decisions"]) for w in record["windows"]) < 4 * 6  # the thresholds cut somewhere
    code, out, err = run(setup, capsys, "-f", "jsonl", "--thresholds", setup["root"] / "other.json")
    assert code == 0, err
    assert_decided(json.loads(out), result, setup["other"])
    # the same decisions through the Python API, which takes the checkpoint's file with decide=True
    from ast_audio import AudioClassifier

    api = AudioClassifier.from_pretrained(setup["model"], window=1.0, hop=0.5, decide=True)
    assert_decided(clip_json(api.classify([setup["wav"]])[0]), result, setup["beside"])
    # CSV rows and the table show them
    code, _, err = run(setup, capsys, "-o", tmp_path / "out.csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    decided = [row["label"] for row in rows if row["level"] == "decision"]
    assert decided == [d["label"] for d in record["decisions"]]
    assert sum(row["level"] == "window decision" for row in rows) == sum(len(w["decisions"]) for w in record["windows"])
    code, out, err = run(setup, capsys)
    assert code == 0 and f"decisions: {len(record['decisions'])} above their thresholds" in out, err


def test_resume_refuses_other_thresholds(setup, capsys, tmp_path):
    target = tmp_path / "out.jsonl"
    code, _, err = run(setup, capsys, "-o", target)
    assert code == 0, err
    code, _, err = run(setup, capsys, "-o", target, "--resume")
    assert code == 0, err
    code, _, err = run(setup, capsys, "-o", target, "--resume", "--thresholds", setup["root"] / "other.json")
    assert code != 0 and "cannot resume" in err and "decide" in err, err

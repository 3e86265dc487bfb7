"""Dataset statistics: exact pooled mean/std of the fbank, bad files skipped and reported, the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from ast_audio import AudioError, dataset_statistics, fbank
from ast_audio.cli import main

RATE = 16000


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    clips = {
        "quiet.wav": 0.01 * rng.standard_normal(RATE),
        "loud.flac": 0.3 * rng.standard_normal(2 * RATE),
        "sub/tone.wav": 0.5 * np.sin(2 * np.pi * 500 * np.arange(RATE // 2) / RATE),
    }
    (tmp_path / "sub").mkdir()
    for name, samples in clips.items():
        sf.write(tmp_path / name, samples.astype(np.float32), RATE, subtype="FLOAT" if name.endswith(".wav") else "PCM_24")
    # Expected values from what the files hold (FLAC quantises to 24 bits).
    clips = {name: sf.read(tmp_path / name, dtype="float32")[0] for name in clips}
    return tmp_path, clips


def expected_stats(clips, max_length=None):
    values = []
    for samples in clips.values():
        features = fbank(torch.from_numpy(samples.astype(np.float32)))
        values.append(features[:max_length].double().flatten())
    everything = torch.cat(values)
    return everything.mean().item(), everything.std(unbiased=False).item(), sum(len(v) for v in values) // 128


def test_pooled_statistics_are_exact(dataset):
    root, clips = dataset
    files = [str(root / name) for name in clips]
    stats = dataset_statistics(files, progress=False)
    mean, std, frames = expected_stats(clips)
    assert stats.mean == pytest.approx(mean, abs=1e-6) and stats.std == pytest.approx(std, abs=1e-6)
    assert stats.files == 3 and stats.frames == frames and stats.failed == []
    cropped = dataset_statistics(files, max_length=50, progress=False, workers=1)
    mean50, std50, frames50 = expected_stats(clips, max_length=50)
    assert cropped.mean == pytest.approx(mean50, abs=1e-6) and cropped.frames == frames50


def test_command_line_reports_bad_files_and_writes_json(dataset, capsys):
    root, clips = dataset
    (root / "broken.wav").write_text("not audio")
    output = root / "stats.json"
    code = main(["stats", str(root), "--output", str(output), "--quiet"])
    assert code == 3
    printed = json.loads(capsys.readouterr().out)
    written = json.loads(output.read_text())
    assert printed == written
    assert written["files"] == 3 and len(written["failed"]) == 1 and "broken.wav" in written["failed"][0]["error"]
    mean, std, _ = expected_stats(clips)
    assert written["mean"] == pytest.approx(mean, abs=1e-6) and written["std"] == pytest.approx(std, abs=1e-6)


def test_manifest_input(dataset, capsys):
    root, clips = dataset
    (root / "list.txt").write_text("\n".join(clips) + "\n")
    assert main(["stats", "--manifest", str(root / "list.txt"), "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == 3


def test_nothing_usable_is_an_error(tmp_path, capsys):
    (tmp_path / "a.wav").write_text("text")
    with pytest.raises(AudioError, match="none of the 1 files could be used"):
        dataset_statistics([str(tmp_path / "a.wav")], progress=False)
    (tmp_path / "empty").mkdir()
    assert main(["stats", str(tmp_path / "empty")]) == 1
    assert "no audio files found" in capsys.readouterr().err

"""ASTFeatureExtractor against the reference extractor (transformers, NumPy path), and its API."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from ast_audio import ASTFeatureExtractor, AudioError

transformers = pytest.importorskip("transformers")
RATE = 16000


def clips() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(20 * RATE) / RATE
    return {
        "noise_10s": (0.1 * rng.standard_normal(10 * RATE)).astype(np.float32),
        "sweep_10s": (0.5 * np.sin(2 * np.pi * np.cumsum(np.linspace(50, 7900, 10 * RATE)) / RATE)).astype(np.float32),
        "silence_2s": np.zeros(2 * RATE, np.float32),
        "short_0.3s": (0.3 * rng.standard_normal(int(0.3 * RATE))).astype(np.float32),
        "long_20s": (0.05 * rng.standard_normal(20 * RATE) + 0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32),
        "loud_int_scale": (3000 * rng.standard_normal(RATE)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def extractors():
    return ASTFeatureExtractor(), transformers.ASTFeatureExtractor()


@pytest.mark.parametrize("name", list(clips()))
def test_matches_reference_per_clip(extractors, name):
    ours, reference = extractors
    clip = clips()[name]
    mine = ours(clip, sampling_rate=RATE, return_tensors="np")["input_values"]
    theirs = reference(clip, sampling_rate=RATE, return_tensors="np")["input_values"]
    assert mine.shape == theirs.shape == (1, 1024, 128)
    difference = np.abs(mine - theirs).max()
    assert difference <= 1e-3, f"{name}: max |difference| {difference:.2e}"


def test_matches_reference_on_a_mixed_batch(extractors):
    ours, reference = extractors
    batch = list(clips().values())
    mine = ours(batch, sampling_rate=RATE, return_tensors="pt")["input_values"]
    theirs = reference(batch, sampling_rate=RATE, return_tensors="pt")["input_values"]
    assert mine.shape == theirs.shape == (6, 1024, 128)
    assert (mine - theirs).abs().max().item() <= 1e-3


def test_single_and_batch_rules_and_return_types(extractors):
    ours, reference = extractors
    clip = clips()["noise_10s"][:RATE]
    as_list = ours(clip.tolist(), sampling_rate=RATE)["input_values"]
    assert isinstance(as_list, list) and len(as_list) == 1 and as_list[0].shape == (1024, 128)
    two_d = ours(np.stack([clip, clip]), sampling_rate=RATE, return_tensors="np")["input_values"]
    assert two_d.shape == (2, 1024, 128)
    from_torch = ours(torch.from_numpy(clip), sampling_rate=RATE, return_tensors="pt").input_values
    torch.testing.assert_close(from_torch[0], torch.from_numpy(two_d[0]))
    theirs_list = reference([clip, clip], sampling_rate=RATE)["input_values"]
    assert len(theirs_list) == len(ours([clip, clip], sampling_rate=RATE)["input_values"]) == 2


def test_max_length_override_and_attention_mask(extractors):
    ours, _ = extractors
    short, long = np.zeros(RATE, np.float32) + 0.01, np.random.default_rng(1).standard_normal(5 * RATE).astype(np.float32)
    out = ours([short, long], sampling_rate=RATE, return_tensors="pt", max_length=128, return_attention_mask=True)
    assert out.input_values.shape == (2, 128, 128)
    assert out.attention_mask[0].sum().item() == 98 and out.attention_mask[1].sum().item() == 128
    padded = (0.0 - ours.mean) / (2 * ours.std)
    assert torch.all(out.input_values[0, 98:] == torch.tensor(padded, dtype=torch.float32))


def test_batch_of_different_lengths_equals_one_by_one(extractors):
    ours, _ = extractors
    batch = [c for c in clips().values()]
    together = ours(batch, sampling_rate=RATE, return_tensors="pt").input_values
    for row, clip in enumerate(batch):
        alone = ours(clip, sampling_rate=RATE, return_tensors="pt").input_values[0]
        torch.testing.assert_close(together[row], alone, atol=1e-5, rtol=0)


def test_sampling_rate_mismatch_and_missing_rate(extractors, caplog):
    ours, _ = extractors
    with pytest.raises(AudioError, match=r"sampled at 44100 Hz, but this feature extractor .* expects 16000 Hz"):
        ours(np.zeros(44100, np.float32), sampling_rate=44100)
    with caplog.at_level(logging.WARNING):
        ours(np.zeros(RATE, np.float32))
    assert "sampling_rate" in caplog.text


@pytest.mark.parametrize(
    "bad,message",
    [
        (np.zeros(0, np.float32), r"clip 0: 0 samples is shorter than one 25 ms frame"),
        (np.zeros(200, np.float32), r"clip 0: 200 samples is shorter than one 25 ms frame \(400 samples at 16000 Hz\)"),
        ([np.zeros(800, np.float32), np.array([0.0, np.nan] * 400, np.float32)], "clip 1: contains NaN or infinite"),
        (np.array([np.inf] * 800, np.float32), "contains NaN or infinite"),
        (np.zeros((2, 2, 800), np.float32), "only mono audio is supported"),
        ([], "empty list"),
        ("a string", "raw_speech must be"),
        (np.zeros(800, np.int16), "expected float samples"),
    ],
)
def test_bad_input_errors(extractors, bad, message):
    with pytest.raises(AudioError, match=message):
        extractors[0](bad, sampling_rate=RATE)


def test_preprocessor_config_round_trip_and_reference_reads_it(tmp_path):
    ours = ASTFeatureExtractor(max_length=128, mean=-6.845978, std=5.5654526)
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["feature_extractor_type"] == "ASTFeatureExtractor" and saved["max_length"] == 128
    again = ASTFeatureExtractor.from_pretrained(tmp_path)
    assert again.to_dict() == ours.to_dict()
    theirs = transformers.ASTFeatureExtractor.from_pretrained(tmp_path)
    assert (theirs.max_length, theirs.mean, theirs.std) == (128, -6.845978, 5.5654526)
    clip = np.random.default_rng(3).standard_normal(2 * RATE).astype(np.float32) * 0.1
    diff = np.abs(again(clip, sampling_rate=RATE, return_tensors="np")["input_values"]
                  - theirs(clip, sampling_rate=RATE, return_tensors="np")["input_values"]).max()
    assert diff <= 1e-3


def test_reads_reference_preprocessor_config(tmp_path):
    transformers.ASTFeatureExtractor(max_length=512, mean=-6.6268077, std=5.358466).save_pretrained(tmp_path)
    ours = ASTFeatureExtractor.from_pretrained(tmp_path)
    assert (ours.max_length, ours.mean, ours.std, ours.sampling_rate) == (512, -6.6268077, 5.358466, 16000)


def test_float64_input_and_device_argument(extractors):
    ours, _ = extractors
    clip = np.random.default_rng(4).standard_normal(RATE) * 0.1
    out = ours(clip, sampling_rate=RATE, return_tensors="pt", device="cpu").input_values
    assert out.dtype == torch.float32 and out.device.type == "cpu"

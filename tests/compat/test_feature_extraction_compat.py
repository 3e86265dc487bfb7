"""transformers' AST feature-extraction tests (their inputs and assertions) run on ast-audio's extractor.

Left out: the integration test on a Hub dataset (offline here); tests/test_feature_extractor.py compares the
extractor with transformers' own on clips the tests build."""

from __future__ import annotations

import json
import random

import numpy as np
import torch

from ast_audio import ASTFeatureExtractor

SETTINGS = dict(feature_size=1, padding_value=0.0, sampling_rate=16000, return_attention_mask=True, do_normalize=True)


def random_lists(rows: int, length: int, seed: int = 0) -> list[list[float]]:
    rng = random.Random(seed)
    return [[rng.random() for _ in range(length)] for _ in range(rows)]


def test_call_lists_arrays_and_batches_agree():
    extractor = ASTFeatureExtractor(**SETTINGS)
    speech = [random_lists(1, n, seed=n)[0] for n in range(800, 1400, 200)]
    arrays = [np.asarray(x) for x in speech]
    single_list = extractor(speech[0], sampling_rate=16000, return_tensors="np").input_values
    single_array = extractor(arrays[0], sampling_rate=16000, return_tensors="np").input_values
    assert np.allclose(single_list, single_array, atol=1e-3)
    batch_lists = extractor(speech, sampling_rate=16000, padding=True, return_tensors="np").input_values
    batch_arrays = extractor(arrays, sampling_rate=16000, padding=True, return_tensors="np").input_values
    for a, b in zip(batch_lists, batch_arrays):
        assert np.allclose(a, b, atol=1e-3)
    equal = [random_lists(1, 800, seed=i)[0] for i in range(3)]
    as_lists = extractor(equal, sampling_rate=16000, return_tensors="np").input_values
    as_2d = extractor(np.asarray(equal), sampling_rate=16000, return_tensors="np").input_values  # 2-D is a batch
    for a, b in zip(as_lists, as_2d):
        assert np.allclose(a, b, atol=1e-3)


def test_double_precision_pad():
    extractor = ASTFeatureExtractor(**SETTINGS)
    values = np.random.default_rng(0).random(100).astype(np.float64)
    for inputs in (values.tolist(), values):
        assert extractor.pad([{"input_values": inputs}], return_tensors="np").input_values.dtype == np.float32
        assert extractor.pad([{"input_values": inputs}], return_tensors="pt").input_values.dtype == torch.float32


def test_from_and_save_pretrained(tmp_path):
    first = ASTFeatureExtractor(**SETTINGS)
    saved = first.save_pretrained(tmp_path)[0]
    assert isinstance(json.loads(open(saved, encoding="utf-8").read()), dict)  # a JSON object, as checked upstream
    assert ASTFeatureExtractor.from_pretrained(tmp_path).to_dict() == first.to_dict()


def test_to_json_file(tmp_path):
    first = ASTFeatureExtractor(**SETTINGS)
    first.to_json_file(tmp_path / "feat_extract.json")
    assert ASTFeatureExtractor.from_json_file(tmp_path / "feat_extract.json").to_dict() == first.to_dict()

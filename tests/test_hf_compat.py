"""Drop-in behaviour of the public implementation's API, checked against `transformers` itself where it runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ast_audio import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, ASTModel
from conftest import SMALL, randomize_, spectrogram

transformers = pytest.importorskip("transformers")


def test_head_count_is_checked_when_the_model_is_built():
    """The config accepts hidden_size=32 with 12 heads, as the reference's does; building the model refuses it
    (transformers 5.x builds it and silently reshapes into 16 heads of 2)."""
    config = ASTConfig(hidden_size=32)
    reference_config = transformers.ASTConfig(hidden_size=32)
    assert config.hidden_size == reference_config.hidden_size == 32
    with pytest.raises(ValueError, match=r"The hidden size \(32\) is not a multiple of the number of attention heads"):
        ASTModel(config)


def test_config_level_output_flags_are_stored_and_honoured(tmp_path):
    config = ASTConfig(**SMALL, max_length=128, num_labels=3, output_attentions=True, output_hidden_states=True,
                       return_dict=False)
    model = randomize_(ASTForAudioClassification(config, attn_implementation="eager")).eval()
    with torch.no_grad():
        outputs = model(spectrogram(1, 128))
    assert isinstance(outputs, tuple) and len(outputs) == 3  # logits, hidden states, attentions
    assert len(outputs[1]) == SMALL["num_hidden_layers"] + 1 and len(outputs[2]) == SMALL["num_hidden_layers"]
    with torch.no_grad():
        assert not isinstance(model(spectrogram(1, 128), return_dict=True), tuple)  # the call wins
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["output_attentions"] is True and saved["return_dict"] is False
    reference = transformers.ASTConfig.from_pretrained(tmp_path)
    assert reference.output_attentions and reference.output_hidden_states and not reference.return_dict
    assert ASTConfig.from_pretrained(tmp_path).return_dict is False
    assert model.get_output_embeddings() is None


def test_json_methods_and_subfolder(tmp_path):
    config = ASTConfig(**SMALL, max_length=128, num_labels=2)
    config.to_json_file(tmp_path / "c.json")
    assert ASTConfig.from_json_file(tmp_path / "c.json") == config
    extractor = ASTFeatureExtractor(max_length=128, mean=-5.0)
    assert json.loads(extractor.to_json_string()) == extractor.to_dict()
    extractor.to_json_file(tmp_path / "e.json")
    assert ASTFeatureExtractor.from_pretrained(tmp_path / "e.json").mean == -5.0
    written = extractor.save_pretrained(tmp_path / "repo" / "feature")
    assert written == [str(tmp_path / "repo" / "feature" / "preprocessor_config.json")]
    randomize_(ASTForAudioClassification(config)).save_pretrained(tmp_path / "repo" / "model")
    model = ASTForAudioClassification.from_pretrained(tmp_path / "repo", subfolder="model")
    assert model.config.max_length == 128
    assert ASTConfig.from_pretrained(tmp_path / "repo", subfolder="model").num_labels == 2
    assert ASTFeatureExtractor.from_pretrained(tmp_path / "repo", subfolder="feature").mean == -5.0


def test_pad_matches_the_reference():
    ours, reference = ASTFeatureExtractor(), transformers.ASTFeatureExtractor()
    rng = np.random.default_rng(0)
    features = {"input_values": [rng.standard_normal(n).astype(np.float32) for n in (3000, 5000)]}  # raw audio
    for kwargs in (dict(padding="longest"), dict(padding="max_length", max_length=6400)):
        got = ours.pad(dict(features), return_tensors="np", **kwargs)
        expected = reference.pad(dict(features), return_tensors="np", **kwargs)
        np.testing.assert_array_equal(got["input_values"], expected["input_values"])
    got = ours.pad(dict(features), padding="longest", return_attention_mask=True, return_tensors="pt")
    expected = reference.pad(dict(features), padding="longest", return_attention_mask=True, return_tensors="pt")
    assert torch.equal(got["attention_mask"].long(), expected["attention_mask"].long())


def test_num_parameters_counts_as_the_reference():
    """Every combination of only_trainable / exclude_embeddings, with the encoder frozen (a common fine-tune)."""
    config = dict(**SMALL, max_length=128, num_labels=3)
    ours = ASTForAudioClassification(ASTConfig(**config))
    reference = transformers.ASTForAudioClassification(transformers.ASTConfig(**config))
    for model in (ours, reference):
        model.audio_spectrogram_transformer.requires_grad_(False)
    head = sum(p.numel() for p in ours.classifier.parameters())
    assert ours.num_parameters(only_trainable=True) == head < ours.num_parameters()
    for only_trainable in (False, True):
        for exclude_embeddings in (False, True):
            flags = dict(only_trainable=only_trainable, exclude_embeddings=exclude_embeddings)
            assert ours.num_parameters(**flags) == reference.num_parameters(**flags), flags

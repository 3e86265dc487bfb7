"""ASTConfig: public field names and defaults, validation, and config.json round trips."""

from __future__ import annotations

import json
import logging

import pytest

from ast_audio import ASTConfig, ConfigError

transformers = pytest.importorskip("transformers")

FIELDS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "layer_norm_eps", "patch_size",
    "qkv_bias", "frequency_stride", "time_stride", "max_length", "num_mel_bins", "num_labels", "problem_type",
)

# A config.json as the public MIT/ast-finetuned-audioset-10-10-0.4593 checkpoint has it (labels shortened).
PUBLIC_CONFIG = {
    "architectures": ["ASTForAudioClassification"],
    "attention_probs_dropout_prob": 0.0,
    "frequency_stride": 10,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "hidden_size": 768,
    "id2label": {"0": "Speech", "1": "Male speech, man speaking", "2": "Music"},
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "label2id": {"Speech": 0, "Male speech, man speaking": 1, "Music": 2},
    "layer_norm_eps": 1e-12,
    "max_length": 1024,
    "model_type": "audio-spectrogram-transformer",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "num_mel_bins": 128,
    "patch_size": 16,
    "qkv_bias": True,
    "time_stride": 10,
    "torch_dtype": "float32",
    "transformers_version": "4.25.0.dev0",
}


def test_defaults_match_reference():
    ours, theirs = ASTConfig(), transformers.ASTConfig()
    for field in FIELDS:
        assert getattr(ours, field) == getattr(theirs, field), field
    assert ours.num_patches == 1212 and ours.frequency_patches == 12 and ours.time_patches == 101


def test_public_config_json_loads_without_warnings(tmp_path, caplog):
    (tmp_path / "config.json").write_text(json.dumps(PUBLIC_CONFIG))
    with caplog.at_level(logging.WARNING):
        config = ASTConfig.from_pretrained(tmp_path)
    assert not caplog.records
    assert config.num_labels == 3 and config.id2label[1] == "Male speech, man speaking"
    assert config.label2id["Music"] == 2 and config.dtype == "float32"


def test_unknown_keys_are_ignored_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        config = ASTConfig.from_dict({**PUBLIC_CONFIG, "my_custom_flag": 3})
    assert "my_custom_flag" in caplog.text
    assert not hasattr(config, "my_custom_flag")


def test_round_trip_and_reference_reads_ours(tmp_path):
    config = ASTConfig(num_labels=3, max_length=128, time_stride=12, problem_type="multi_label_classification")
    config.save_pretrained(tmp_path)
    again = ASTConfig.from_pretrained(tmp_path)
    assert again == config
    theirs = transformers.ASTConfig.from_pretrained(tmp_path)
    for field in FIELDS:
        assert getattr(theirs, field) == getattr(config, field), field
    assert ASTConfig.from_dict(config.to_dict()) == config


def test_num_labels_override_replaces_label_names():
    config = ASTConfig.from_dict(PUBLIC_CONFIG, num_labels=5)
    assert config.num_labels == 5 and config.id2label[4] == "LABEL_4"
    config.num_labels = 2
    assert config.label2id == {"LABEL_0": 0, "LABEL_1": 1}


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(frequency_stride=20), r"frequency_stride \(20\) is larger than patch_size \(16\)"),
        (dict(time_stride=17), r"time_stride \(17\) is larger than patch_size"),
        (dict(max_length=10), r"max_length \(10 frames\) is shorter than one patch \(16\)"),
        (dict(num_mel_bins=8), r"num_mel_bins \(8\) is smaller than one patch"),
        (dict(hidden_size=0), "hidden_size must be a positive integer, got 0"),
        (dict(hidden_dropout_prob=1.5), r"hidden_dropout_prob must be in \[0, 1\), got 1.5"),
        (dict(hidden_act="tanhh"), "hidden_act 'tanhh' is not supported"),
        (dict(problem_type="ranking"), "problem_type 'ranking' is not one of"),
        (dict(num_labels=-1), "num_labels must be a non-negative integer"),
        (dict(num_labels=3, id2label={0: "a", 1: "b"}), r"num_labels \(3\) disagrees with id2label \(2 entries\)"),
        (dict(id2label={0: "a", 2: "b"}), "id2label keys must be 0..1"),
    ],
)
def test_invalid_values_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ASTConfig(**kwargs)


def test_bad_config_file_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json: not valid JSON"):
        ASTConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**PUBLIC_CONFIG, "frequency_stride": 20}))
    with pytest.raises(ConfigError, match=r"config.json: frequency_stride \(20\) is larger than patch_size"):
        ASTConfig.from_pretrained(tmp_path)

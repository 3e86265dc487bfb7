"""Checkpoint files: formats, corrupt files, shape mismatches, missing tensors, and the offline Hub."""

from __future__ import annotations

import json
import logging
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from ast_audio import (
    ASTConfig,
    ASTForAudioClassification,
    ASTModel,
    CheckpointError,
    CheckpointNotFoundError,
)
from helpers import SMALL, randomize_, spectrogram


@pytest.fixture
def checkpoint(tmp_path):
    model = randomize_(ASTForAudioClassification(ASTConfig(**SMALL, max_length=128, num_labels=4))).eval()
    model.save_pretrained(tmp_path / "ckpt")
    return model, tmp_path / "ckpt"


def logits(model, seed=0):
    with torch.no_grad():
        return model(spectrogram(2, model.config.max_length, seed=seed)).logits


def test_save_writes_public_layout(checkpoint):
    model, path = checkpoint
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors"]
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["ASTForAudioClassification"]
    assert config["model_type"] == "audio-spectrogram-transformer" and config["dtype"] == "float32"
    names = set(load_file(path / "model.safetensors"))
    assert "audio_spectrogram_transformer.encoder.layer.1.attention.attention.query.weight" in names
    assert "classifier.dense.weight" in names and len(names) == len(model.state_dict())
    assert not [p for p in os.listdir(path) if p.endswith(".tmp")]


def test_pytorch_bin_checkpoint_loads(checkpoint, tmp_path):
    model, _ = checkpoint
    model.save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert (tmp_path / "bin" / "pytorch_model.bin").is_file()
    torch.testing.assert_close(logits(ASTForAudioClassification.from_pretrained(tmp_path / "bin")), logits(model))


def test_sharded_safetensors_checkpoint_loads(checkpoint, tmp_path):
    model, path = checkpoint
    state = load_file(path / "model.safetensors")
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    out = tmp_path / "sharded"
    out.mkdir()
    (out / "config.json").write_text((path / "config.json").read_text())
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, out / shard, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    torch.testing.assert_close(logits(ASTForAudioClassification.from_pretrained(out)), logits(model))


def test_truncated_and_garbage_safetensors_raise_clear_errors(checkpoint):
    _, path = checkpoint
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors: corrupt or truncated safetensors file"):
        ASTForAudioClassification.from_pretrained(path)
    weights.write_bytes(b"\x00" * 3)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        ASTForAudioClassification.from_pretrained(path)
    weights.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty weights file"):
        ASTForAudioClassification.from_pretrained(path)


def test_corrupt_pytorch_bin_raises_clear_error(checkpoint, tmp_path):
    model, _ = checkpoint
    model.save_pretrained(tmp_path / "bin", safe_serialization=False)
    weights = tmp_path / "bin" / "pytorch_model.bin"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="pytorch_model.bin: not a readable PyTorch weights file"):
        ASTForAudioClassification.from_pretrained(tmp_path / "bin")


def test_pickle_with_code_is_refused(checkpoint, tmp_path):
    model, _ = checkpoint
    model.save_pretrained(tmp_path / "bin", safe_serialization=False)
    torch.save({"weights": model.state_dict(), "extra": logging.getLogger("x")}, tmp_path / "bin" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="not a readable PyTorch weights file"):
        ASTForAudioClassification.from_pretrained(tmp_path / "bin")


def test_head_size_mismatch(checkpoint, caplog):
    model, path = checkpoint
    with pytest.raises(CheckpointError, match=r"classifier.dense.weight: checkpoint \(4, 64\) vs model \(10, 64\).*ignore_mismatched_sizes=True"):
        ASTForAudioClassification.from_pretrained(path, num_labels=10)
    with caplog.at_level(logging.WARNING):
        new_head = ASTForAudioClassification.from_pretrained(path, num_labels=10, ignore_mismatched_sizes=True)
    assert "re-initialised because shapes differ: classifier.dense.weight (4, 64) -> (10, 64)" in caplog.text
    assert new_head.config.num_labels == 10
    assert new_head.classifier.dense.bias.abs().sum() == 0  # freshly initialised
    torch.testing.assert_close(new_head.classifier.layernorm.weight, model.classifier.layernorm.weight)
    with torch.no_grad():
        x = spectrogram(1, 128)
        torch.testing.assert_close(
            new_head.audio_spectrogram_transformer(x).pooler_output, model.audio_spectrogram_transformer(x).pooler_output
        )


def test_encoder_mismatch_names_tensor_and_shapes(checkpoint):
    _, path = checkpoint
    with pytest.raises(CheckpointError, match=r"position_embeddings: checkpoint \(1, 146, 64\) vs model \(1, 1214, 64\)"):
        ASTForAudioClassification.from_pretrained(path, max_length=1024)


def test_missing_and_unexpected_tensors_reported_by_name(checkpoint, caplog):
    _, path = checkpoint
    state = load_file(path / "model.safetensors")
    del state["audio_spectrogram_transformer.encoder.layer.1.output.dense.bias"]
    state["some.extra.tensor"] = torch.zeros(3)
    save_file(state, path / "model.safetensors")
    with caplog.at_level(logging.WARNING):
        model = ASTForAudioClassification.from_pretrained(path)
    assert "newly initialised (not in the checkpoint): audio_spectrogram_transformer.encoder.layer.1.output.dense.bias" in caplog.text
    assert "unused tensors in the checkpoint: some.extra.tensor" in caplog.text
    assert model.audio_spectrogram_transformer.encoder.layer[1].output.dense.bias.abs().sum() == 0
    _, info = ASTForAudioClassification.from_pretrained(path, output_loading_info=True)
    assert info["missing_keys"] == ["audio_spectrogram_transformer.encoder.layer.1.output.dense.bias"]


def test_base_model_and_head_model_load_each_others_checkpoints(checkpoint, tmp_path, caplog):
    model, path = checkpoint
    base = ASTModel.from_pretrained(path)
    with torch.no_grad():
        x = spectrogram(1, 128)
        torch.testing.assert_close(base(x).pooler_output, model.audio_spectrogram_transformer(x).pooler_output)
    base.save_pretrained(tmp_path / "base")
    with caplog.at_level(logging.WARNING):
        head = ASTForAudioClassification.from_pretrained(tmp_path / "base", num_labels=6)
    assert "classifier.dense.weight" in caplog.text and head.config.num_labels == 6


def test_unknown_keyword_is_a_type_error(checkpoint):
    _, path = checkpoint
    with pytest.raises(TypeError, match="unexpected keyword arguments: num_lables"):
        ASTForAudioClassification.from_pretrained(path, num_lables=3)


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no such checkpoint directory"):
        ASTForAudioClassification.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFoundError, match="has no config.json"):
        ASTForAudioClassification.from_pretrained(tmp_path / "empty")
    ASTConfig(**SMALL).save_pretrained(tmp_path / "empty")
    with pytest.raises(CheckpointNotFoundError, match="no model.safetensors or pytorch_model.bin"):
        ASTForAudioClassification.from_pretrained(tmp_path / "empty")


def test_offline_hub_id_gives_one_line_error(tmp_path):
    with pytest.raises(CheckpointNotFoundError) as info:
        ASTForAudioClassification.from_pretrained(
            "MIT/ast-finetuned-audioset-10-10-0.4593", cache_dir=tmp_path, local_files_only=True
        )
    message = str(info.value)
    assert "\n" not in message
    assert "MIT/ast-finetuned-audioset-10-10-0.4593" in message and "offline" in message
    assert "local checkpoint directory" in message


def test_device_argument(checkpoint):
    _, path = checkpoint
    assert ASTForAudioClassification.from_pretrained(path, device="cpu").device.type == "cpu"

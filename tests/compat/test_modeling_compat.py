"""transformers' AST model tests (the tester's geometry, inputs and assertions, plus the common checks they
inherit that apply to AST) run on ast-audio's classes.

Left out: the integration test on the AudioSet checkpoint from the Hub (offline here); tests/test_parity.py
compares logits with transformers' own model at the full AudioSet geometry on weights the tests build."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from ast_audio import ASTConfig, ASTForAudioClassification, ASTModel

BATCH, LENGTH, MEL_BINS, HIDDEN, LAYERS, LABELS = 13, 24, 16, 32, 2, 10


def tester_config(**overrides) -> ASTConfig:
    settings = dict(patch_size=2, max_length=LENGTH, num_mel_bins=MEL_BINS, hidden_size=HIDDEN,
                    num_hidden_layers=LAYERS, num_attention_heads=4, intermediate_size=37, hidden_act="gelu",
                    hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, is_decoder=False,
                    initializer_range=0.02, frequency_stride=2, time_stride=2, attn_implementation="eager")
    return ASTConfig(**{**settings, **overrides})


SEQ_LENGTH = ((MEL_BINS - 2) // 2 + 1) * ((LENGTH - 2) // 2 + 1) + 2  # patches + CLS + distillation


def inputs(seed: int = 0) -> torch.Tensor:
    return torch.rand(BATCH, LENGTH, MEL_BINS, generator=torch.Generator().manual_seed(seed))


def test_model_output_shape():
    model = ASTModel(tester_config()).eval()
    assert model(inputs()).last_hidden_state.shape == (BATCH, SEQ_LENGTH, HIDDEN)


@pytest.mark.parametrize("model_class", [ASTModel, ASTForAudioClassification])
def test_model_get_set_embeddings_and_forward_signature(model_class):
    model = model_class(tester_config())
    assert isinstance(model.get_input_embeddings(), nn.Module)
    output_embeddings = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    assert output_embeddings is None or isinstance(output_embeddings, nn.Linear)
    assert list(inspect.signature(model.forward).parameters)[:1] == ["input_values"]


def test_config_common(tmp_path):
    config = tester_config(num_labels=LABELS)
    assert config.hidden_size == HIDDEN and config.num_labels == LABELS and len(config.id2label) == LABELS
    assert ASTConfig.from_dict(config.to_dict()) == config
    config.to_json_file(tmp_path / "config.json")
    assert ASTConfig.from_json_file(tmp_path / "config.json") == config
    config.save_pretrained(tmp_path / "saved")
    assert ASTConfig.from_pretrained(tmp_path / "saved") == config
    config.num_labels = 3
    assert len(config.id2label) == 3 and len(config.label2id) == 3
    assert ASTConfig().hidden_size == 768  # builds without arguments


def test_classification_with_labels_and_training_backward():
    model = ASTForAudioClassification(tester_config(num_labels=LABELS)).train()
    labels = torch.randint(0, LABELS, (BATCH,), generator=torch.Generator().manual_seed(1))
    outputs = model(inputs(), labels=labels)
    assert outputs.logits.shape == (BATCH, LABELS) and outputs.loss.ndim == 0
    outputs.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_attention_and_hidden_state_outputs():
    model = ASTModel(tester_config(), attn_implementation="eager").eval()
    with torch.no_grad():
        outputs = model(inputs(), output_attentions=True, output_hidden_states=True)
    assert len(outputs.attentions) == LAYERS and outputs.attentions[0].shape == (BATCH, 4, SEQ_LENGTH, SEQ_LENGTH)
    assert len(outputs.hidden_states) == LAYERS + 1 and outputs.hidden_states[0].shape == (BATCH, SEQ_LENGTH, HIDDEN)
    config = tester_config(output_attentions=True, output_hidden_states=True)  # the same from the config
    with torch.no_grad():
        from_config = ASTModel(config, attn_implementation="eager").eval()(inputs())
    assert len(from_config.attentions) == LAYERS and len(from_config.hidden_states) == LAYERS + 1


def test_save_load_gives_the_same_outputs(tmp_path):
    model = ASTForAudioClassification(tester_config(num_labels=LABELS)).eval()
    model.save_pretrained(tmp_path)
    loaded = ASTForAudioClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs()).logits, model(inputs()).logits)
    tuple_outputs = loaded(inputs(), return_dict=False)
    assert isinstance(tuple_outputs, tuple) and tuple_outputs[0].shape == (BATCH, LABELS)

"""Same random weights in, same numbers out: our model against the reference `transformers` implementation."""

from __future__ import annotations

import pytest
import torch

from ast_audio import ASTConfig, ASTForAudioClassification, ASTModel
from helpers import SMALL, randomize_, spectrogram

transformers = pytest.importorskip("transformers")

GEOMETRIES = {
    "default-10-10-1024": dict(frequency_stride=10, time_stride=10, max_length=1024),
    "16-16-1024": dict(frequency_stride=16, time_stride=16, max_length=1024),
    "speech-commands-128": dict(frequency_stride=10, time_stride=10, max_length=128),
    "uneven-12-14-500": dict(frequency_stride=12, time_stride=14, max_length=500),
}
ATOL = 1e-4


def reference_model(num_labels: int = 5, attn: str = "sdpa", seed: int = 0, **overrides):
    config = transformers.ASTConfig(**{**SMALL, **overrides}, num_labels=num_labels)
    model = transformers.ASTForAudioClassification(config)
    randomize_(model, seed)
    return model


def reference_from_dir(path, attn: str):
    return transformers.ASTForAudioClassification.from_pretrained(path, attn_implementation=attn).eval()


# Every geometry with the default attention; eager attention once (its arithmetic does not depend on the
# geometry; test_train_mode_with_zero_dropout_matches and test_our_checkpoint_loads_in_reference run it too).
@pytest.mark.parametrize("geometry,attn", [*((name, "sdpa") for name in GEOMETRIES), ("speech-commands-128", "eager")])
def test_reference_checkpoint_loads_and_matches(tmp_path, geometry, attn):
    reference = reference_model(**GEOMETRIES[geometry])
    reference.save_pretrained(tmp_path)
    reference = reference_from_dir(tmp_path, attn)
    ours = ASTForAudioClassification.from_pretrained(tmp_path, attn_implementation=attn)
    assert ours.attn_implementation == attn
    x = spectrogram(2, GEOMETRIES[geometry]["max_length"])
    with torch.no_grad():
        theirs_out = reference(x, output_hidden_states=True)
        theirs_base = reference.audio_spectrogram_transformer(x)
        ours_out = ours(x, output_hidden_states=True)
        ours_base = ours.audio_spectrogram_transformer(x)
    torch.testing.assert_close(ours_out.logits, theirs_out.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours_base.pooler_output, theirs_base.pooler_output, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours_base.last_hidden_state, theirs_base.last_hidden_state, atol=ATOL, rtol=0)
    assert len(ours_out.hidden_states) == len(theirs_out.hidden_states) == SMALL["num_hidden_layers"] + 1
    for mine, theirs in zip(ours_out.hidden_states, theirs_out.hidden_states):
        torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=0)


def test_attention_weights_match_reference_eager(tmp_path):
    reference_model(max_length=128).save_pretrained(tmp_path)
    reference = reference_from_dir(tmp_path, "eager")
    ours = ASTForAudioClassification.from_pretrained(tmp_path, attn_implementation="sdpa")  # falls back to eager
    x = spectrogram(2, 128)
    with torch.no_grad():
        theirs = reference(x, output_attentions=True).attentions
        mine = ours(x, output_attentions=True).attentions
    assert len(mine) == len(theirs) == SMALL["num_hidden_layers"]
    for a, b in zip(mine, theirs):
        assert a.shape == (2, SMALL["num_attention_heads"], 146, 146)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_train_mode_with_zero_dropout_matches(tmp_path, attn):
    reference_model(max_length=128).save_pretrained(tmp_path)
    reference = reference_from_dir(tmp_path, attn).train()
    ours = ASTForAudioClassification.from_pretrained(tmp_path, attn_implementation=attn).train()
    x = spectrogram(3, 128, seed=1)
    labels = torch.tensor([0, 4, 2])
    theirs = reference(x, labels=labels)
    mine = ours(x, labels=labels)
    torch.testing.assert_close(mine.logits, theirs.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(mine.loss, theirs.loss, atol=ATOL, rtol=0)
    mine.loss.backward()
    theirs.loss.backward()
    ours_grad = ours.classifier.dense.weight.grad
    theirs_grad = reference.classifier.dense.weight.grad
    torch.testing.assert_close(ours_grad, theirs_grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_our_checkpoint_loads_in_reference(tmp_path, attn):
    config = ASTConfig(**SMALL, max_length=1024, num_labels=7)
    ours = randomize_(ASTForAudioClassification(config), seed=3).eval()
    ours.save_pretrained(tmp_path)
    reference = reference_from_dir(tmp_path, attn)
    assert reference.config.num_labels == 7
    x = spectrogram(2, 1024, seed=2)
    with torch.no_grad():
        mine = ours(x, output_hidden_states=True)
        theirs = reference(x, output_hidden_states=True)
    torch.testing.assert_close(mine.logits, theirs.logits, atol=ATOL, rtol=0)
    for a, b in zip(mine.hidden_states, theirs.hidden_states):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_base_model_checkpoint_both_directions(tmp_path):
    ours = randomize_(ASTModel(ASTConfig(**SMALL, max_length=128)), seed=4).eval()
    ours.save_pretrained(tmp_path / "ours")
    reference = transformers.ASTModel.from_pretrained(tmp_path / "ours").eval()
    x = spectrogram(2, 128)
    with torch.no_grad():
        torch.testing.assert_close(ours(x).pooler_output, reference(x).pooler_output, atol=ATOL, rtol=0)
    reference.save_pretrained(tmp_path / "theirs")
    again = ASTModel.from_pretrained(tmp_path / "theirs")
    with torch.no_grad():
        torch.testing.assert_close(again(x).last_hidden_state, ours(x).last_hidden_state, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "problem_type,num_labels,make_labels",
    [
        ("single_label_classification", 5, lambda: torch.tensor([1, 4, 0])),
        ("multi_label_classification", 5, lambda: (torch.rand(3, 5) > 0.5).float()),
        ("regression", 1, lambda: torch.randn(3)),
        ("regression", 3, lambda: torch.randn(3, 3)),
        (None, 5, lambda: torch.tensor([2, 2, 3])),  # inferred: integer labels -> single label
        (None, 5, lambda: torch.rand(3, 5)),  # inferred: float labels -> multi label
        (None, 1, lambda: torch.randn(3)),  # inferred: one output -> regression
    ],
)
def test_losses_match_reference(tmp_path, problem_type, num_labels, make_labels):
    reference = reference_model(num_labels=num_labels, max_length=128)
    reference.config.problem_type = problem_type
    reference.save_pretrained(tmp_path)
    reference = reference_from_dir(tmp_path, "sdpa")
    ours = ASTForAudioClassification.from_pretrained(tmp_path)
    assert ours.config.problem_type == problem_type
    labels = make_labels()
    x = spectrogram(3, 128)
    with torch.no_grad():
        mine = ours(x, labels=labels).loss
        theirs = reference(x, labels=labels).loss
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_full_size_default_model_matches(tmp_path):
    """The real AudioSet geometry and width: 12 layers of 768, 1214 tokens, 527 labels."""
    # Built on the meta device and given storage: randomize_ sets every parameter and the model has no buffers,
    # so the reference's own 86M-weight initialisation (the slowest step) would be overwritten anyway.
    with torch.device("meta"):
        reference = transformers.ASTForAudioClassification(transformers.ASTConfig(num_labels=527))
    assert not list(reference.buffers())
    reference = randomize_(reference.to_empty(device="cpu"), seed=5)
    reference.save_pretrained(tmp_path)
    reference = reference_from_dir(tmp_path, "sdpa")
    ours = ASTForAudioClassification.from_pretrained(tmp_path)
    assert 86_000_000 < ours.num_parameters() < 87_500_000
    x = spectrogram(1, 1024)
    with torch.no_grad():
        torch.testing.assert_close(ours(x).logits, reference(x).logits, atol=ATOL, rtol=0)

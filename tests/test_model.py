"""Model behaviour beyond parity: input checks, dtypes, initialisation, outputs, attention fallback."""

from __future__ import annotations

import logging

import pytest
import torch

from ast_audio import ASTConfig, ASTForAudioClassification, ASTModel, InputShapeError
from helpers import SMALL, randomize_, spectrogram


@pytest.fixture(scope="module")
def model():
    return randomize_(ASTForAudioClassification(ASTConfig(**SMALL, max_length=128, num_labels=3))).eval()


@pytest.mark.parametrize(
    "shape,message",
    [
        ((2, 128, 128 + 1), r"129 mel bins where the model expects 128"),
        ((2, 100, 128), r"pad or cut the spectrogram to 128 frames"),
        ((2, 10, 128), r"10 frames is fewer than one patch \(16\)"),
        ((128, 128), r"add the batch dimension"),
        ((2, 1, 128, 128), r"must have shape \(batch, 128, 128\)"),
    ],
)
def test_wrong_input_shapes_raise_value_error(model, shape, message):
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(shape))


def test_transposed_input_is_recognised():
    model = ASTModel(ASTConfig(**SMALL, max_length=1024))
    with pytest.raises(InputShapeError, match=r"looks transposed.*transpose\(1, 2\)") as info:
        model(torch.zeros(1, 128, 1024))
    assert "(batch, 1024, 128)" in str(info.value)


def test_integer_and_non_tensor_input_rejected(model):
    with pytest.raises(InputShapeError, match="floating point"):
        model(torch.zeros(1, 128, 128, dtype=torch.long))
    with pytest.raises(InputShapeError, match="torch.Tensor"):
        model([[0.0] * 128] * 128)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_close_to_float32(tmp_path, model, dtype):
    model.save_pretrained(tmp_path)
    half = ASTForAudioClassification.from_pretrained(tmp_path, dtype=dtype)
    assert half.dtype == dtype and all(p.dtype == dtype for p in half.parameters())
    x = spectrogram(2, 128)
    with torch.no_grad():
        reference = model(x).logits
        logits = half(x).logits  # float32 input is cast to the model's dtype
        moved = model.to(dtype)(x.to(dtype)).logits
    model.float()
    assert logits.dtype == dtype
    torch.testing.assert_close(logits.float(), reference, atol=0.1, rtol=0.05)
    torch.testing.assert_close(moved.float(), logits.float(), atol=1e-6, rtol=0)


def test_dtype_auto_and_names(tmp_path, model):
    model.to(torch.bfloat16).save_pretrained(tmp_path)
    model.float()
    assert ASTForAudioClassification.from_pretrained(tmp_path, dtype="auto").dtype == torch.bfloat16
    assert ASTForAudioClassification.from_pretrained(tmp_path).dtype == torch.float32
    assert ASTForAudioClassification.from_pretrained(tmp_path, torch_dtype="float16").dtype == torch.float16
    with pytest.raises(ValueError, match="not a floating point torch dtype"):
        ASTForAudioClassification.from_pretrained(tmp_path, dtype="int8")


def test_initialisation_follows_reference_scheme():
    torch.manual_seed(0)
    model = ASTForAudioClassification(ASTConfig(hidden_size=256, num_attention_heads=4, num_hidden_layers=2,
                                                intermediate_size=512, max_length=128, num_labels=10))
    linear = model.audio_spectrogram_transformer.encoder.layer[0].intermediate.dense.weight
    # trunc_normal_(std=0.02) with the default absolute bounds +-2, as the reference: effectively N(0, 0.02).
    assert abs(linear.std().item() - 0.02) < 0.0005 and abs(linear.mean().item()) < 0.0005
    assert model.classifier.dense.bias.abs().sum() == 0
    assert torch.all(model.audio_spectrogram_transformer.layernorm.weight == 1)
    embeddings = model.audio_spectrogram_transformer.embeddings
    for token in (embeddings.cls_token, embeddings.distillation_token, embeddings.position_embeddings):
        assert token.abs().sum() == 0
    conv = embeddings.patch_embeddings.projection.weight
    assert abs(conv.std().item() - 0.02) < 0.0005


def test_outputs_by_key_index_and_tuple(model):
    x = spectrogram(1, 128)
    with torch.no_grad():
        out = model(x, labels=torch.tensor([1]))
        as_tuple = model(x, labels=torch.tensor([1]), return_dict=False)
    assert out.keys() == ["loss", "logits"]
    assert torch.equal(out["logits"], out.logits) and torch.equal(out[1], out.logits)
    assert torch.equal(as_tuple[1], out.logits) and len(as_tuple) == 2


def test_attentions_with_sdpa_fall_back_with_warning(model, caplog):
    x = spectrogram(1, 128)
    with caplog.at_level(logging.WARNING), torch.no_grad():
        out = model(x, output_attentions=True)
    assert "eager" in caplog.text
    assert len(out.attentions) == 2
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(1, 4, 146))
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, out.logits, atol=1e-5, rtol=0)


def test_switching_attention_kernel(model):
    x = spectrogram(1, 128)
    with torch.no_grad():
        sdpa = model(x).logits
        model.set_attn_implementation("eager")
        eager = model(x).logits
        model.set_attn_implementation("sdpa")
    assert model.attn_implementation == "sdpa"
    torch.testing.assert_close(sdpa, eager, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        model.set_attn_implementation("flash")


def test_dropout_active_only_in_training():
    config = ASTConfig(**SMALL, max_length=128, hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3)
    model = randomize_(ASTForAudioClassification(config))
    x = spectrogram(1, 128)
    model.train()
    assert not torch.allclose(model(x).logits, model(x).logits)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x).logits, model(x).logits)


def test_gradient_checkpointing_gives_same_gradients_with_less_saved_activation():
    model = randomize_(ASTForAudioClassification(ASTConfig(**SMALL, max_length=128, num_labels=3))).train()
    x, labels = spectrogram(2, 128), torch.tensor([0, 2])

    def backward_saving() -> int:
        """Run forward and backward; returns the bytes of activations autograd saved for the backward pass."""
        saved = []

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            if not isinstance(tensor, torch.nn.Parameter):
                saved.append(tensor.numel() * tensor.element_size())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = model(x, labels=labels).loss
        loss.backward()
        return sum(saved)

    plain_bytes = backward_saving()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.gradient_checkpointing_enable()
    checkpointed_bytes = backward_saving()
    for a, p in zip(plain, model.parameters()):
        torch.testing.assert_close(p.grad, a, atol=1e-6, rtol=1e-5)
    # Each layer keeps only its input; its attention maps and MLP activations are recomputed in the backward pass.
    assert checkpointed_bytes < plain_bytes / 3, (checkpointed_bytes, plain_bytes)


def test_loss_label_errors_are_clear(model):
    x = spectrogram(2, 128)
    with pytest.raises(ValueError, match=r"expects labels of shape \(2, 3\)"):
        model(x, labels=torch.rand(2, 5))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_pooled_only_last_layer_matches_the_full_forward(attn):
    """Classification computes only the CLS and distillation tokens in the last layer: same logits, same loss
    and same gradients as the full forward (which hidden_states requests)."""
    model = randomize_(ASTForAudioClassification(ASTConfig(**SMALL, max_length=128, num_labels=3), attn)).train()
    x, labels = spectrogram(2, 128), torch.tensor([0, 2])
    full = model(x, labels=labels, output_hidden_states=True)
    full.loss.backward()
    full_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    fast = model(x, labels=labels)
    fast.loss.backward()
    assert fast.hidden_states is None and len(full.hidden_states) == 3
    torch.testing.assert_close(fast.logits, full.logits, atol=1e-6, rtol=1e-5)
    for name, param, expected in zip([n for n, _ in model.named_parameters()], model.parameters(), full_grads):
        torch.testing.assert_close(param.grad, expected, atol=1e-6, rtol=1e-5, msg=name)
    encoder = model.audio_spectrogram_transformer
    torch.testing.assert_close(encoder.forward_pooled(x), encoder(x).pooler_output, atol=1e-6, rtol=1e-5)

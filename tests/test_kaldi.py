"""Our Kaldi fbank against golden values from torchaudio's compliance.kaldi (fixture) and its own invariants."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from ast_audio import AudioError, FbankOptions, fbank

GOLDEN = np.load(os.path.join(os.path.dirname(__file__), "fixtures", "kaldi_golden.npz"))
VARIANTS = {
    "ast": dict(htk_compat=True),
    "hamming_energy": dict(window_type="hamming", num_mel_bins=64, use_energy=True),
    "povey_no_snip": dict(window_type="povey", num_mel_bins=40, snip_edges=False),
    "rect_htk_energy_band": dict(window_type="rectangular", num_mel_bins=30, low_freq=100.0, high_freq=-500.0,
                                 use_energy=True, raw_energy=False, htk_compat=True),
}
CASES = [key.split("/", 2)[1:] for key in GOLDEN.files if key.startswith("float64/")]


@pytest.mark.parametrize("variant,signal", CASES)
def test_matches_torchaudio_float64_golden(variant, signal):
    samples = torch.from_numpy(GOLDEN[f"input/{signal}"])
    expected = GOLDEN[f"float64/{variant}/{signal}"]
    options = FbankOptions(**VARIANTS[variant])
    ours64 = fbank(samples.double(), options).numpy()
    ours32 = fbank(samples, options).numpy()
    assert ours64.shape == ours32.shape == expected.shape
    # torchaudio builds its mel filters in float32 (about 5e-5 of log-energy); ours are float64.
    np.testing.assert_allclose(ours64, expected, atol=2e-4, rtol=0)
    np.testing.assert_allclose(ours32, expected, atol=1e-3, rtol=0)


def test_float32_torchaudio_golden_within_its_own_precision():
    """torchaudio in float32 is itself off by up to ~1e-2 on pure tones; ours (refined) is closer to exact."""
    for signal in ("noise", "sweep", "tone_with_dc", "am_noise"):
        samples = torch.from_numpy(GOLDEN[f"input/{signal}"])
        exact = GOLDEN[f"float64/ast/{signal}"]
        theirs = GOLDEN[f"float32/ast/{signal}"]
        ours = fbank(samples, htk_compat=True).numpy()
        assert np.abs(ours - exact).max() <= np.abs(theirs - exact).max() + 1e-4


def test_defaults_are_ast_settings():
    options = FbankOptions()
    assert (options.window_size, options.window_shift, options.fft_size) == (400, 160, 512)
    assert options.num_mel_bins == 128 and options.window_type == "hanning" and options.dither == 0.0
    assert options.num_frames(160000) == 998 and options.num_frames(399) == 0


def test_empty_mel_filter_column_is_log_epsilon():
    features = fbank(torch.randn(16000) * 0.1)
    assert torch.all(features[:, 3] == torch.log(torch.tensor(torch.finfo(torch.float32).eps)))


def test_batch_equals_rows_and_1d_input():
    batch = torch.randn(3, 8000) * 0.2
    together = fbank(batch)
    for row in range(3):
        torch.testing.assert_close(together[row], fbank(batch[row]), atol=1e-5, rtol=0)
    assert together.shape == (3, 48, 128)


def test_frames_independent_of_trailing_samples():
    x = torch.randn(16000) * 0.1
    short, longer = fbank(x[:8000]), fbank(x)
    torch.testing.assert_close(longer[: short.shape[0]], short, atol=1e-5, rtol=0)


def test_dither_is_seeded():
    x = torch.randn(8000) * 0.1
    a = fbank(x, dither=1e-3, generator=torch.Generator().manual_seed(7))
    b = fbank(x, dither=1e-3, generator=torch.Generator().manual_seed(7))
    c = fbank(x, dither=1e-3, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_silence_is_floor_everywhere():
    assert torch.all(fbank(torch.zeros(4000)) == float(np.log(np.float32(np.finfo(np.float32).eps))))


def test_too_short_and_bad_input_errors():
    with pytest.raises(AudioError, match=r"399 samples is shorter than one 25 ms frame \(400 samples at 16000 Hz\)"):
        fbank(torch.zeros(399))
    with pytest.raises(AudioError, match="floating point"):
        fbank(torch.zeros(1000, dtype=torch.int16))
    with pytest.raises(AudioError, match=r"got shape \(1, 2, 1000\)"):
        fbank(torch.zeros(1, 2, 1000))
    with pytest.raises(ValueError, match="window_type must be one of"):
        FbankOptions(window_type="kaiser")
    with pytest.raises(ValueError, match="low_freq"):
        FbankOptions(low_freq=9000)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    x = torch.randn(2, 16000) * 0.1
    torch.testing.assert_close(fbank(x.cuda()).cpu(), fbank(x), atol=1e-3, rtol=0)


def test_subtract_mean_covers_the_energy_column_as_torchaudio():
    x = torch.randn(16000) * 0.1
    plain = fbank(x, use_energy=True)
    centred = fbank(x, use_energy=True, subtract_mean=True)
    torch.testing.assert_close(centred, plain - plain.mean(0), atol=1e-5, rtol=0)
    assert centred.mean(0).abs().max() < 1e-5  # every column, the energy's (column 0) too


def test_out_is_written_in_place_and_checked():
    batch = torch.randn(2, 8000) * 0.1
    output = torch.full((2, 60, 128), 7.0)
    result = fbank(batch, out=output[:, :48])
    assert result.data_ptr() == output.data_ptr()
    torch.testing.assert_close(output[:, :48], fbank(batch), atol=0, rtol=0)
    assert torch.all(output[:, 48:] == 7.0)
    with pytest.raises(ValueError, match=r"shape \(2, 48, 128\)"):
        fbank(batch, out=torch.empty(2, 50, 128))


@pytest.mark.parametrize("chunk", [7, 100])
def test_blocks_of_frames_give_the_same_features(monkeypatch, chunk):
    """Pieces of long rows (chunk 7 < 48 frames) and groups of rows (chunk 100) match the one-block result."""
    from ast_audio.features import kaldi

    batch = torch.randn(3, 8000) * 0.1
    batch[1, 2000:4000] = torch.sin(torch.arange(2000) * 0.3)  # a tone: frames refined in float64
    whole = fbank(batch)
    monkeypatch.setattr(kaldi, "CHUNK_FRAMES", chunk)
    torch.testing.assert_close(fbank(batch), whole, atol=1e-5, rtol=0)


def test_float64_refinement_of_whole_clips_and_of_single_frames():
    """A sweep (every frame refined: the whole clip recomputed) and noise with a short piece of the sweep
    (10 of 98 frames gathered and recomputed) both match float64; unrefined, the sweep's weak bands are not."""
    t = torch.arange(16000, dtype=torch.float64) / 16000
    sweep = 0.5 * torch.sin(2 * torch.pi * (100 * t + 3450 * t**2))
    mixed = torch.randn(16000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.1
    mixed[6000:7600] = sweep[6000:7600]
    batch = torch.stack((sweep, mixed)).float()
    exact = fbank(batch.double())
    assert (fbank(batch) - exact).abs().amax((1, 2)).max() < 5e-4
    assert torch.all((fbank(batch, refine=False) - exact).abs().amax((1, 2)) > 2e-3)


def test_reused_buffers_keep_results_exact_across_window_sizes_and_batch_sizes():
    """The FFT buffer's zero tail survives options with the same FFT size but a shorter window, and a
    smaller batch is served from the front of the larger one's buffers."""
    from ast_audio.features.workspace import workspace

    # 16250 samples make 100 frames with either window, so the FFT buffers have the same shape.
    x = torch.randn(8, 16250, generator=torch.Generator().manual_seed(3)) * 0.1
    long_window, short_window = FbankOptions(frame_length=25.0), FbankOptions(frame_length=20.0)
    assert long_window.fft_size == short_window.fft_size == 512
    first = fbank(x, long_window).clone()
    shorter = fbank(x, short_window).clone()
    workspace.buffers.clear()
    torch.testing.assert_close(fbank(x, short_window), shorter, atol=0, rtol=0)
    torch.testing.assert_close(fbank(x, long_window), first, atol=0, rtol=0)
    key = (("padded", 400), torch.float32, torch.device("cpu"), 512)
    storage = workspace.buffers[key].data_ptr()
    torch.testing.assert_close(fbank(x[:3], long_window), first[:3], atol=1e-5, rtol=0)
    assert workspace.buffers[key].data_ptr() == storage


def test_inputs_of_many_lengths_do_not_pile_up_buffers():
    from ast_audio.features.workspace import workspace

    workspace.buffers.clear()
    generator = torch.Generator().manual_seed(4)
    # 12 lengths a batch size: buffers kept per length would already be more than the 8 allowed.
    for samples in range(16000, 16000 + 12 * 37, 37):
        fbank(torch.randn(2, samples, generator=generator))
    kept = len(workspace.buffers)
    for samples in range(20000, 20000 + 12 * 41, 41):
        fbank(torch.randn(3, samples, generator=generator))
    assert len(workspace.buffers) == kept <= 8  # 4 kinds, in float32 and in float64 (refinement)

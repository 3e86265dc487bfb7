"""Calibration of scores to probabilities (Platt, isotonic): lower ECE on held-out clips, the JSON form, the
ECE itself, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from ast_audio.answers.calibration import Calibration, expected_calibration_error, fit_calibration
from ast_audio.answers.thresholds import Thresholds, choose_thresholds
from ast_audio.errors import ConfigError

LABELS = ["a", "b", "c", "d", "rare"]


def overconfident(seed: int, clips: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    """Clips whose true probability is sigmoid(z); the scores are sigmoid(3 z + bias): far too confident,
    shifted differently per class. "rare" has 2 positives."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-1.0, 1.5, (clips, len(LABELS)))
    targets = rng.random(z.shape) < 1.0 / (1.0 + np.exp(-z))
    targets[:, -1] = False
    targets[:2, -1] = True
    bias = np.array([0.5, -1.0, 1.0, 0.0, 0.0])
    return 1.0 / (1.0 + np.exp(-(3.0 * z + bias))), targets


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_lowers_ece_on_held_out_clips(method: str) -> None:
    scores, targets = overconfident(1)
    held_scores, held_targets = overconfident(2)
    calibration = fit_calibration(scores, targets, LABELS, method=method)
    assert calibration.uncalibrated == ("rare",)
    common = slice(0, 4)
    before = expected_calibration_error(held_scores[:, common], held_targets[:, common])
    after = expected_calibration_error(calibration.apply(held_scores, LABELS)[:, common], held_targets[:, common])
    print(f"{method}: held-out ECE (15 bins) before {before:.4f}, after {after:.4f}")
    assert after < before / 3
    # Per class too.
    for column in range(4):
        probabilities = calibration.apply(held_scores, LABELS)[:, column]
        assert expected_calibration_error(probabilities, held_targets[:, column]) < expected_calibration_error(
            held_scores[:, column], held_targets[:, column])
    # The uncalibrated class passes through; the calibration is monotone (it keeps each class's ranking).
    np.testing.assert_array_equal(calibration.apply(held_scores, LABELS)[:, -1], held_scores[:, -1])
    order = np.argsort(held_scores[:, 0])
    assert (np.diff(calibration.apply(held_scores, LABELS)[order, 0]) >= -1e-12).all()


def test_platt_recovers_the_true_mapping() -> None:
    scores, targets = overconfident(3, clips=4000)
    a, b = fit_calibration(scores, targets, LABELS).platt["a"]
    # logit(score) = 3 z + 0.5 and the truth is sigmoid(z): a = 1/3, b = -0.5/3 (Platt's smoothing is tiny here).
    assert a == pytest.approx(1 / 3, abs=0.03) and b == pytest.approx(-0.5 / 3, abs=0.05)


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_round_trips_inside_thresholds_json(method: str) -> None:
    scores, targets = overconfident(4, clips=400)
    calibration = fit_calibration(scores, targets, LABELS, method=method)
    thresholds = choose_thresholds(scores, targets, LABELS)
    with_calibration = Thresholds(**{**thresholds.__dict__, "calibration": calibration})
    again = Thresholds.from_json(with_calibration.to_json())
    assert again.calibration == calibration
    np.testing.assert_array_equal(again.calibration.apply(scores, LABELS), calibration.apply(scores, LABELS))


def test_isotonic_matches_scikit_learn_predictions() -> None:
    from sklearn.isotonic import IsotonicRegression

    scores, targets = overconfident(5, clips=600)
    calibration = fit_calibration(scores, targets, LABELS, method="isotonic")
    reference = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(scores[:, 1], targets[:, 1])
    probe = np.linspace(-0.1, 1.1, 301)
    ours = calibration.apply(np.tile(probe[:, None], (1, len(LABELS))), LABELS)[:, 1]
    np.testing.assert_allclose(ours, reference.predict(probe), atol=1e-12)


def test_expected_calibration_error_by_hand() -> None:
    # 4 predictions in 2 bins of width 0.5: bin [0, .5) holds 0.1, 0.2 (one positive: |0.5 - 0.15| = 0.35),
    # bin [.5, 1] holds 0.9, 1.0 (two positives: |1 - 0.95| = 0.05): ECE = (2 * 0.35 + 2 * 0.05) / 4 = 0.2.
    assert expected_calibration_error([0.1, 0.2, 0.9, 1.0], [1, 0, 1, 1], bins=2) == pytest.approx(0.2)
    assert expected_calibration_error([0.0, 1.0], [0, 1]) == 0.0


def test_bad_calibration_input_is_refused() -> None:
    with pytest.raises(ConfigError, match="one of platt, isotonic"):
        fit_calibration(np.zeros((3, 1)), np.zeros((3, 1)), ["a"], method="beta")
    with pytest.raises(ConfigError, match=r"scores in \[0, 1\]"):
        fit_calibration(np.full((3, 1), 2.0), np.zeros((3, 1)), ["a"])
    with pytest.raises(ConfigError, match=r"lie in \[0, 1\]"):
        expected_calibration_error([1.5], [1])
    with pytest.raises(ConfigError, match="t.json: calibration of 'a' must be"):
        Calibration.from_dict({"method": "platt", "classes": {"a": {"a": 1}}}, "t.json")
    with pytest.raises(ConfigError, match="t.json: calibration must be"):
        Calibration.from_dict({"method": "spline", "classes": {}}, "t.json")

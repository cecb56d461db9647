"""Tests of lib.calibration and lib.stats.mean_se against hand-computed values."""
import numpy as np
import pytest

from lib import calibration, stats


def test_a_calibrated_model_lies_on_the_diagonal_and_a_flat_one_does_not():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=5000)
    table = calibration.reliability(p, p, n_bins=10)
    assert np.allclose(table.p_model, table.p_ref) and calibration.calibration_error(table) == 0
    assert table.n.sum() == p.size
    flat = calibration.reliability(np.full_like(p, 0.25), p, n_bins=10)
    assert len(flat) == 1 and flat.p_model.item() == 0.25
    assert flat.p_ref.item() == pytest.approx(0.25)             # averages over classes match ...
    sharp = np.eye(4)[p.argmax(1)]
    over = calibration.reliability(sharp, p, n_bins=4)
    assert over.p_ref.iloc[-1] < 0.9                            # ... an overconfident model's do not
    assert calibration.calibration_error(over) > 0.1


def test_kl_per_prediction_by_hand():
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    m = np.array([[0.25, 0.75, 0.0], [0.5, 0.25, 0.25]])
    kl = calibration.kl_per_prediction(p, m)
    assert kl[0] == pytest.approx(0.5 * np.log(2) + 0.5 * np.log(0.5 / 0.75))
    assert kl[1] == pytest.approx(np.log(2))
    assert calibration.kl_per_prediction(m, p)[1] == np.inf      # the model rules out what m allows


def test_frequencies_and_mean_se():
    assert calibration.frequencies([2, 0], 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    mean, se = stats.mean_se([1.0, 2.0, 3.0])
    assert (mean, se) == (2.0, pytest.approx(1 / np.sqrt(3)))


@pytest.mark.parametrize("call, match", [
    (lambda: calibration.reliability([[0.5, 0.6]], [[0.5, 0.5]]), "p_model must hold probability"),
    (lambda: calibration.reliability([[0.5, 0.5]], [[1.0, 0.0], [0.0, 1.0]]), "same shape"),
    (lambda: calibration.reliability([[0.5, 0.5]], [[0.5, 0.5]], n_bins=0), "n_bins must be in"),
    (lambda: calibration.kl_per_prediction([[np.nan, 1.0]], [[0.5, 0.5]]), "p_ref must hold"),
    (lambda: calibration.frequencies([3], 3), "target must hold classes in 0..2"),
    (lambda: stats.mean_se([1.0]), "at least two finite"),
    (lambda: stats.mean_se([1.0, np.nan]), "at least two finite"),
])
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()

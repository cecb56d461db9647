"""Tests of lib.stats: empirical pair frequencies, mutual information and tree distance."""
import numpy as np
import pytest

from lib import stats, tree


def test_pair_frequencies_converge_to_exact_pair_marginals():
    M = tree.random_grammar(3, seed=2)
    _, leaves = tree.sample(M, 3, 200_000, k=1, seed=0)
    F = stats.pair_frequencies(leaves, 3)
    P = tree.pair_marginals(M, 3, k=1)
    assert F.shape == (8, 8, 3, 3)
    np.testing.assert_allclose(F.sum(axis=(2, 3)), 1.0)
    assert np.abs(F - P).max() < 5 * np.sqrt(0.25 / 200_000)      # five binomial standard errors


def test_mutual_information_of_independent_and_identical_pairs():
    p = np.array([0.2, 0.3, 0.5])
    indep = np.broadcast_to(np.outer(p, p), (2, 2, 3, 3))
    np.testing.assert_allclose(stats.mutual_information(indep), 0.0, atol=1e-15)
    same = np.broadcast_to(np.diag(p), (2, 2, 3, 3))
    np.testing.assert_allclose(stats.mutual_information(same), -(p * np.log(p)).sum())


def test_tree_distance():
    d = stats.tree_distance(3)
    assert d[0, 1] == 1 and d[0, 2] == 2 and d[0, 7] == 3 and d[5, 5] == 0 and d[6, 7] == 1
    np.testing.assert_array_equal(d, d.T)


@pytest.mark.parametrize("leaves, match", [
    (np.array([[0, 1, 3, 1]]), "no masks"), (np.zeros((0, 4), dtype=int), "at least one sequence"),
    (np.array([[0, 1, 1]]), "sequence length"),
])
def test_pair_frequencies_rejects_bad_input(leaves, match):
    with pytest.raises(ValueError, match=match):
        stats.pair_frequencies(leaves, 3)


def test_mutual_information_rejects_bad_tables():
    with pytest.raises(ValueError, match="shape"):
        stats.mutual_information(np.ones((2, 3, 2, 2)) / 4)
    with pytest.raises(ValueError, match="probability tables"):
        stats.mutual_information(np.ones((2, 2, 2, 2)))

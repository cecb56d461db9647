"""Tests of lib.bp against brute-force enumeration of tiny filtered trees."""
import numpy as np
import pytest

import exact
from lib import bp, tree

TINY = [(2, 1), (2, 2), (3, 2), (2, 3), (4, 1), (3, 0)]     # (q, depth)


def grammars(q):
    dense = np.random.default_rng(q).dirichlet(np.ones(q * q), size=q).reshape(q, q, q)
    return {"sparse": tree.random_grammar(q, seed=3), "dense": dense}


def random_leaves(q, depth, n=40, seed=0):
    """Random strings with about a third of the positions masked, plus one fully masked row."""
    rng = np.random.default_rng(seed)
    leaves = rng.integers(q, size=(n, 2**depth))
    leaves[rng.random(leaves.shape) < 0.3] = q
    leaves[0] = q
    return leaves


@pytest.mark.parametrize("q, depth", TINY)
@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_bp_matches_enumeration(q, depth, kind):
    M = grammars(q)[kind]
    leaves = random_leaves(q, depth)
    for k in range(depth + 1):
        P = exact.joint_root_leaves(M, depth, k)
        np.testing.assert_allclose(bp.root_posterior(M, leaves, k), exact.root_posterior(P, leaves),
                                   rtol=0, atol=1e-10)
        np.testing.assert_allclose(bp.leaf_posterior(M, leaves, k), exact.leaf_posterior(P, leaves),
                                   rtol=0, atol=1e-10)


def test_bp_assuming_another_k_is_that_models_posterior():
    """'BP assuming model k' is exact for model k whatever law produced the data."""
    M = grammars(2)["dense"]
    _, leaves = tree.sample(M, 3, 30, k=0, seed=2)
    P = exact.joint_root_leaves(M, 3, 3)
    np.testing.assert_allclose(bp.root_posterior(M, leaves, k=3), exact.root_posterior(P, leaves), atol=1e-10)


def test_fully_masked_sequence_gives_prior_and_one_point_marginals():
    M = tree.random_grammar(4)
    masked = np.full((1, 16), 4)
    for k in range(5):
        np.testing.assert_allclose(bp.root_posterior(M, masked, k), 0.25, atol=1e-15)
        T = tree.path_marginals(M, 4)                       # leaf i given root
        np.testing.assert_allclose(bp.leaf_posterior(M, masked, k)[0], T.mean(axis=1), atol=1e-12)


def test_unambiguous_grammar_gives_certain_root_at_k0():
    M = tree.random_grammar(4)
    roots, leaves = tree.sample(M, 4, 2000, seed=5)
    post = bp.root_posterior(M, leaves)
    np.testing.assert_allclose(post.max(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(post.argmax(axis=1), roots)


def test_root_bp_at_k_equal_depth_is_naive_bayes():
    M = tree.random_grammar(4)
    _, leaves = tree.sample(M, 4, 500, k=4, seed=6)
    T = tree.path_marginals(M, 4)                           # (16, q, q)
    likelihood = np.prod(T[np.arange(16), :, leaves], axis=1)   # (n, q)
    np.testing.assert_allclose(bp.root_posterior(M, leaves, 4),
                               likelihood / likelihood.sum(1, keepdims=True), atol=1e-12)


def test_leaf_posterior_at_observed_position_equals_posterior_of_that_position_masked():
    M = tree.random_grammar(4)
    _, leaves = tree.sample(M, 4, 200, k=1, seed=7)
    full = bp.leaf_posterior(M, leaves, k=1)
    for i in (0, 5, 15):
        masked = leaves.copy()
        masked[:, i] = 4
        np.testing.assert_allclose(bp.leaf_posterior(M, masked, k=1)[:, i], full[:, i], atol=1e-12)


def test_results_do_not_depend_on_chunking():
    M = tree.random_grammar(4)
    _, leaves = tree.sample(M, 4, 3 * bp._CHUNK // 2, k=2, seed=8)
    head = slice(bp._CHUNK - 5, bp._CHUNK + 5)
    for k in (0, 2, 4):
        np.testing.assert_allclose(bp.root_posterior(M, leaves, k)[head], bp.root_posterior(M, leaves[head], k))
        np.testing.assert_allclose(bp.leaf_posterior(M, leaves, k)[head], bp.leaf_posterior(M, leaves[head], k))


def test_empty_batch():
    M = tree.random_grammar(3)
    assert bp.root_posterior(M, np.zeros((0, 4), dtype=int)).shape == (0, 3)
    assert bp.leaf_posterior(M, np.zeros((0, 4), dtype=int), k=2).shape == (0, 4, 3)


def test_zero_probability_sequence_is_rejected():
    # Parent 0 emits only (0, 0) and parent 1 only (1, 1): the string "0 1" cannot be produced.
    M = np.zeros((2, 2, 2))
    M[0, 0, 0] = M[1, 1, 1] = 1.0
    leaves = np.array([[0, 0], [0, 1], [1, 1]])
    with pytest.raises(ValueError, match=r"1 sequence\(s\) have probability zero .*first at row 1"):
        bp.root_posterior(M, leaves)
    with pytest.raises(ValueError, match="probability zero"):
        bp.leaf_posterior(M, leaves)
    np.testing.assert_allclose(bp.root_posterior(M, leaves[[0, 2]]), [[1, 0], [0, 1]])
    np.testing.assert_allclose(bp.root_posterior(M, [[0, 2]]), [[1, 0]])    # "0 ?" is fine


@pytest.mark.parametrize("leaves, match", [
    (np.array([[0, 1, 2, -1]]), r"symbols must be in 0\.\.3"),
    (np.array([[0, 1, 2, 4]]), r"symbols must be in 0\.\.3"),
    (np.array([[0.0, 1.0, 2.0, 1.5]]), "integer symbol ids"),
    (np.array([[0, 1, 2]]), "sequence length must be 2\\*\\*depth, got 3"),
    (np.array([0, 1, 2, 1]), r"shape \(n, 2\*\*depth\)"),
])
@pytest.mark.parametrize("fn", [bp.root_posterior, bp.leaf_posterior])
def test_bad_leaves_are_rejected(fn, leaves, match):
    with pytest.raises(ValueError, match=match):
        fn(tree.random_grammar(3), leaves)


@pytest.mark.parametrize("fn", [bp.root_posterior, bp.leaf_posterior])
def test_bad_k_and_grammar_are_rejected(fn):
    M = tree.random_grammar(3)
    leaves = np.zeros((2, 4), dtype=int)
    with pytest.raises(ValueError, match=r"k must be in 0\.\.2, got 3"):
        fn(M, leaves, k=3)
    with pytest.raises(ValueError, match="k must be an integer"):
        fn(M, leaves, k=1.0)
    with pytest.raises(ValueError, match="row-stochastic"):
        fn(M * 0.5, leaves)
    with pytest.raises(ValueError, match="M must have shape"):
        fn(M[:, :2, :2], leaves)

"""Tests of lib.tree: the reference grammar, the exact filtered sampler and its filtering properties."""
import numpy as np
import pytest
from scipy import stats

import exact
from lib import tree

# Check values of the authors' reference generator (seed 0, q = 4, sigma = 1), 3 decimals.
REFERENCE_M = {
    0: {(0, 1): .706, (1, 2): .163, (2, 0): .016, (2, 1): .115},
    1: {(0, 2): .036, (1, 0): .341, (3, 1): .080, (3, 2): .543},
    2: {(1, 3): .326, (2, 2): .101, (2, 3): .452, (3, 3): .121},
    3: {(0, 0): .132, (0, 3): .164, (1, 1): .151, (3, 0): .553},
}
TINY = [(2, 1), (2, 2), (3, 2), (2, 3)]          # (q, depth) small enough to enumerate


def dense_grammar(q, seed=1):
    return np.random.default_rng(seed).dirichlet(np.ones(q * q), size=q).reshape(q, q, q)


def test_random_grammar_matches_reference_generator():
    M = tree.random_grammar(4, sigma=1.0, seed=0)
    for a, support in REFERENCE_M.items():
        assert {tuple(map(int, bc)) for bc in zip(*np.nonzero(M[a]))} == set(support)
        for (b, c), p in support.items():
            assert M[a, b, c] == pytest.approx(p, abs=5e-4)


@pytest.mark.parametrize("q", [2, 3, 5])
def test_random_grammar_is_sparse_unambiguous_and_seeded(q):
    M = tree.random_grammar(q, sigma=1.3, seed=7)
    assert M.shape == (q, q, q) and M.dtype == np.float64
    np.testing.assert_allclose(M.sum(axis=(1, 2)), 1.0, atol=1e-14)
    assert ((M > 0).sum(axis=(1, 2)) == q).all()          # q allowed pairs per parent
    assert ((M > 0).sum(axis=0) == 1).all()               # every pair has exactly one parent
    np.testing.assert_array_equal(M, tree.random_grammar(q, sigma=1.3, seed=7))
    assert not np.array_equal(M, tree.random_grammar(q, sigma=1.3, seed=8))


def test_sigma_zero_gives_uniform_blocks():
    M = tree.random_grammar(3, sigma=0.0, seed=2)
    np.testing.assert_allclose(M[M > 0], 1 / 3)


@pytest.mark.parametrize("kwargs, match", [
    ({"q": 1}, "q must be in >= 2"), ({"q": 2.5}, "q must be an integer"),
    ({"q": True}, "q must be an integer"), ({"q": "4"}, "q must be an integer"),
    ({"q": 4, "sigma": float("nan")}, "sigma must be a finite number"),
    ({"q": 4, "sigma": -1.0}, "sigma must be a finite number >= 0"),
    ({"q": 4, "seed": -1}, "seed must be in >= 0"),
])
def test_random_grammar_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tree.random_grammar(**kwargs)


@pytest.mark.parametrize("q, depth", TINY)
def test_path_marginals_match_enumeration(q, depth):
    M = dense_grammar(q)
    for k in range(depth + 1):
        np.testing.assert_allclose(tree.path_marginals(M, k), exact.path_matrices(M, depth, k), atol=1e-12)


def test_sample_shapes_dtype_and_seed():
    M = tree.random_grammar(4)
    roots, leaves = tree.sample(M, 4, 1000, k=2, seed=3)
    assert roots.shape == (1000,) and leaves.shape == (1000, 16)
    assert roots.dtype == np.int64 and leaves.dtype == np.int64
    assert leaves.min() >= 0 and leaves.max() < 4
    r2, l2 = tree.sample(M, 4, 1000, k=2, seed=3)
    np.testing.assert_array_equal(leaves, l2)
    np.testing.assert_array_equal(roots, r2)
    assert not np.array_equal(leaves, tree.sample(M, 4, 1000, k=2, seed=4)[1])


def test_sample_edge_sizes():
    M = tree.random_grammar(3)
    roots, leaves = tree.sample(M, 0, 5)
    np.testing.assert_array_equal(leaves[:, 0], roots)       # depth 0: the root is the leaf
    roots, leaves = tree.sample(M, 3, 0, k=3)
    assert roots.shape == (0,) and leaves.shape == (0, 8)


def test_sample_tree_is_consistent_with_the_rule():
    M = tree.random_grammar(4)
    levels = tree.sample_tree(M, 4, 5000, k=0, seed=1)
    for i in range(4):
        parent, kids = levels[i], levels[i + 1]
        assert (M[parent, kids[:, 0::2], kids[:, 1::2]] > 0).all()
    filtered = tree.sample_tree(M, 4, 10, k=3, seed=1)
    assert (filtered[1] == -1).all() and (filtered[2] == -1).all() and (filtered[3] >= 0).all()


def _chi_square(M, depth, k_law, n, seed, k_sample=None):
    """Chi-square p-value of (root, leaves) counts sampled from model ``k_sample`` (default: ``k_law``)
    against the exact law of model ``k_law``, and the number of draws in cells that law forbids."""
    q = M.shape[0]
    P = exact.joint_root_leaves(M, depth, k_law).ravel()
    roots, leaves = tree.sample(M, depth, n, k=k_law if k_sample is None else k_sample, seed=seed)
    cell = np.ravel_multi_index((roots, *leaves.T), (q,) * (1 + 2**depth))
    counts = np.bincount(cell, minlength=P.size)
    allowed = P > 0
    pvalue = stats.chisquare(counts[allowed], counts[allowed].sum() * P[allowed] / P[allowed].sum()).pvalue
    return pvalue, counts[~allowed].sum()


@pytest.mark.parametrize("q, depth", [(2, 2), (3, 1), (2, 3)])
@pytest.mark.parametrize("sparse", [True, False])
def test_sampler_frequencies_match_exact_probabilities(q, depth, sparse):
    M = tree.random_grammar(q, seed=5) if sparse else dense_grammar(q)
    for k in range(depth + 1):
        pvalue, forbidden = _chi_square(M, depth, k, 200_000, seed=11 + k)
        assert forbidden == 0 and pvalue > 1e-3


def test_chi_square_detects_a_wrong_sampler():
    """The frequency test has power: data from model k=0 fail against the k=2 law."""
    pvalue, forbidden = _chi_square(tree.random_grammar(2, seed=5), 2, 2, 200_000, seed=1, k_sample=0)
    assert forbidden > 0 or pvalue < 1e-6


def _marginal(P, keep):
    """Sum a (root, leaf_0, ..., leaf_{L-1}) table over every axis not in ``keep``."""
    return P.sum(axis=tuple(t for t in range(P.ndim) if t not in keep))


@pytest.mark.parametrize("q, depth", [(2, 3), (3, 2)])
def test_filtering_keeps_one_point_marginals(q, depth):
    """lib's exact pair laws keep every leaf's law under filtering, as brute force says."""
    M = dense_grammar(q)
    full = exact.joint_root_leaves(M, depth, 0)
    for k in range(depth + 1):
        P = tree.pair_marginals(M, depth, k)
        for i in range(2**depth):
            np.testing.assert_allclose(np.diag(P[i, i]), _marginal(full, {1 + i}), atol=1e-12)


@pytest.mark.parametrize("q, depth", [(2, 3), (3, 2)])
def test_filtering_keeps_within_block_and_removes_between_block_correlations(q, depth):
    """lib's exact pair laws under filtering k: a pair inside a block of 2**(depth-k) leaves keeps
    the full model's law; a pair across blocks is independent given the root. Both references
    come from brute-force enumeration of the full and of the filtered joint law."""
    M = dense_grammar(q)
    full = exact.joint_root_leaves(M, depth, 0)
    L = 2**depth
    for k in range(1, depth + 1):
        P, joint = tree.pair_marginals(M, depth, k), exact.joint_root_leaves(M, depth, k)
        size = L // 2**k
        for i in range(L):
            for j in range(i + 1, L):
                if i // size == j // size:
                    np.testing.assert_allclose(P[i, j], _marginal(full, {1 + i, 1 + j}), atol=1e-12)
                else:
                    trio = _marginal(joint, {0, 1 + i, 1 + j})             # (root, x_i, x_j)
                    root = trio.sum(axis=(1, 2))[:, None, None]
                    product = trio.sum(axis=2, keepdims=True) * trio.sum(axis=1, keepdims=True) / root
                    np.testing.assert_allclose(P[i, j], product.sum(0), atol=1e-12)
    # ... while the full model does correlate leaves beyond the root (the test above has power)
    P0 = tree.pair_marginals(M, depth, 0)
    trio = _marginal(full, {0, 1, 1 + L // 2})
    product = trio.sum(axis=2, keepdims=True) * trio.sum(axis=1, keepdims=True) / trio.sum(axis=(1, 2))[:, None, None]
    assert np.abs(P0[0, L // 2] - product.sum(0)).max() > 1e-4


def _bad_grammars():
    M = tree.random_grammar(3)
    negative = M.copy(); negative[0, 0, 0] = -0.1; negative[0, 0, 1] += 0.1
    nan = M.copy(); nan[1, 1, 1] = np.nan
    return [(M[:2], "M must have shape"), (np.ones((1, 1, 1)), "M must have shape"),
            (negative, "non-negative"), (nan, "finite"), (M * 1.1, "row-stochastic")]


@pytest.mark.parametrize("M, match", _bad_grammars())
def test_sample_rejects_bad_grammar(M, match):
    with pytest.raises(ValueError, match=match):
        tree.sample(M, 2, 10)


@pytest.mark.parametrize("kwargs, match", [
    ({"depth": -1}, "depth must be in >= 0"), ({"depth": 2.0}, "depth must be an integer"),
    ({"n": -5}, "n must be in >= 0"), ({"k": 3}, r"k must be in 0\.\.2"), ({"k": -1}, r"k must be in 0\.\.2"),
    ({"seed": -2}, "seed must be in >= 0"),
])
def test_sample_rejects_bad_arguments(kwargs, match):
    args = {"M": tree.random_grammar(3), "depth": 2, "n": 10, "k": 0, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=match):
        tree.sample(**args)


@pytest.mark.parametrize("q, depth", [(2, 3), (3, 2)])
def test_pair_marginals_match_enumeration(q, depth):
    M = dense_grammar(q)
    L = 2**depth
    for k in range(depth + 1):
        leaves_joint = exact.joint_root_leaves(M, depth, k).sum(axis=0)
        P = tree.pair_marginals(M, depth, k)
        for i in range(L):
            for j in range(i + 1, L):
                others = tuple(t for t in range(L) if t not in (i, j))
                np.testing.assert_allclose(P[i, j], leaves_joint.sum(axis=others), atol=1e-12)
                np.testing.assert_allclose(P[j, i], P[i, j].T)
            np.testing.assert_allclose(np.diag(P[i, i]), P[i, (i + 1) % L].sum(axis=1), atol=1e-12)


def test_pair_marginals_rejects_bad_k():
    with pytest.raises(ValueError, match=r"k must be in 0\.\.2"):
        tree.pair_marginals(tree.random_grammar(3), 2, k=5)

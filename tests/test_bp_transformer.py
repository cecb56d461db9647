"""Tests of lib.bp_transformer: the hand-set encoder against exact BP (lib.bp).

Error bound. Every channel the feed-forward units read (parses, hypotheses, position bits) holds
small integers or halves, and the sibling-block attention weights are exactly ``2**-m`` or 0
(``exp(-2 BETA)`` underflows), so those channels are exact. Rounding enters only where real
numbers are added: log-weights (one addition per layer, an average of at most L copies in each
attention), the readout's sum over L tokens and d channels, and the final log-softmax. Each logit
``Z[s, a]`` is a sum of at most ``2 L + d`` terms no larger than ``gap`` in magnitude, so
``|dZ| <= (2 L + d) eps gap``; the log-softmax and the marginal add at most twice that, and
``|dp| <= 2 |d log p|`` while ``|d log p| < 1``. We allow a factor 8 on top, plus ``1e-14`` for
BP's own rounding (it normalises after every level).
"""
import numpy as np
import pytest
import torch

from lib import bp, tree
from lib import bp_transformer as bpt

BOOK = tree.BOOK_SETTING
SETTINGS = {                                       # name: (q, depth, sigma, grammar seed)
    "book": (BOOK["q"], BOOK["depth"], BOOK["sigma"], BOOK["seed"]),
    "q3_depth3_peaked": (3, 3, 2.0, 1),
    "q2_depth5": (2, 5, 1.0, 2),
}


def error_bound(model) -> float:
    """The bound of this module's docstring on max |p_model - p_BP| (float64)."""
    L, eps = 2**model.depth, np.finfo(np.float64).eps
    bound = 8 * 2 * 3 * (2 * L + model.d_model) * eps * model.gap + 1e-14
    assert bound == model.error_bound()          # the module states the same bound
    return bound


def one_mask(leaves, q):
    """A copy of ``leaves`` with one masked leaf (id q) per row, its position cycling over L."""
    x = leaves.copy()
    x[np.arange(len(x)), np.arange(len(x)) % x.shape[1]] = q
    return x


def setting(name):
    q, depth, sigma, seed = SETTINGS[name]
    return tree.random_grammar(q, sigma=sigma, seed=seed), depth


@pytest.mark.parametrize("name", SETTINGS)
def test_root_posterior_equals_bp_clean_and_one_mask_every_k(name):
    M, depth = setting(name)
    q = M.shape[0]
    for k in range(depth + 1):
        model = bpt.build(M, depth, k)
        leaves = tree.sample(M, depth, 400, k=k, seed=10 + k)[1]
        for x in (leaves, one_mask(leaves, q)):
            p = model(torch.tensor(x)).exp().numpy()
            err = np.abs(p - bp.root_posterior(M, x, k)).max()
            assert err <= error_bound(model) <= 1e-6, (k, err)


def test_uniform_strings_at_k0():
    """Every string parses under an unambiguous grammar, so BP is defined off the model's law."""
    M, depth = setting("book")
    x = np.random.default_rng(3).integers(4, size=(300, 2**depth))
    x[:150] = one_mask(x[:150], 4)
    model = bpt.build(M, depth, 0)
    err = np.abs(model(torch.tensor(x)).exp().numpy() - bp.root_posterior(M, x, 0)).max()
    assert err <= error_bound(model)


@pytest.mark.parametrize("name", ["book", "q3_depth3_peaked"])
def test_masked_leaf_posterior_equals_bp_every_k(name):
    M, depth = setting(name)
    q, L = M.shape[0], 2**depth
    for k in range(depth + 1):
        model = bpt.build(M, depth, k)
        leaves = tree.sample(M, depth, 200, k=k, seed=20 + k)[1]
        x, m = one_mask(leaves, q), np.arange(len(leaves)) % L
        p = model.leaf_log_posterior(torch.tensor(x)).exp().numpy()
        ref = bp.leaf_posterior(M, x, k)[np.arange(len(x)), m]
        assert np.abs(p - ref).max() <= error_bound(model)


def test_leave_one_out_equals_bp_leaf_posterior_on_clean_sequences():
    M, depth = setting("book")
    for k in (0, 2, depth):
        model = bpt.build(M, depth, k)
        leaves = tree.sample(M, depth, 50, k=k, seed=30 + k)[1]
        err = np.abs(bpt.leave_one_out(model, leaves) - bp.leaf_posterior(M, leaves, k)).max()
        assert err <= error_bound(model)


@pytest.mark.parametrize("name", SETTINGS)
def test_sizes_layers_and_heads(name):
    M, depth = setting(name)
    q = M.shape[0]
    for k in range(depth + 1):
        model = bpt.build(M, depth, k)
        assert model.n_layers == len(model.layers) == (depth if k == 0 else depth - k + 1)
        assert model.n_layers <= depth
        assert model.d_model == depth + 3 * q + q * q
        assert all(layer.self_attn.n_heads == 1 for layer in model.layers)
        assert all(type(layer).__name__ == "BPEncoderLayer" for layer in model.layers)


def test_attention_is_the_sibling_block_exactly():
    M, depth = setting("book")
    model = bpt.build(M, depth, 0)
    x = torch.tensor(tree.sample(M, depth, 3, seed=4)[1])
    _, patterns = model.joint_logits(x, return_attention=True)
    pos = np.arange(2**depth)
    for t, pattern in enumerate(patterns):
        sibling = (pos[:, None] >> (t + 1) == pos[None, :] >> (t + 1)) & (
            (pos[:, None] >> t & 1) != (pos[None, :] >> t & 1))
        expected = sibling / sibling.sum(1, keepdims=True)
        assert np.array_equal(pattern[:, 0].numpy(), np.broadcast_to(expected, (3, 16, 16)))


def test_build_leaves_the_global_random_stream_alone():
    torch.manual_seed(5)
    a = torch.rand(3)
    torch.manual_seed(5)
    bpt.build(setting("book")[0], 4)
    assert torch.equal(torch.rand(3), a)


@pytest.mark.parametrize("kwargs, message", [
    ({"depth": 0}, r"depth must be in 1\.\.10"),
    ({"depth": 11}, r"depth must be in 1\.\.10"),
    ({"depth": 2.0}, r"depth must be an integer"),
    ({"depth": 4, "k": -1}, r"k must be in 0\.\.4"),
    ({"depth": 4, "k": 5}, r"k must be in 0\.\.4"),
])
def test_bad_depth_or_k_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bpt.build(setting("book")[0], **kwargs)


def test_bad_grammar_raises():
    dense = np.random.default_rng(0).dirichlet(np.ones(9), size=3).reshape(3, 3, 3)
    with pytest.raises(ValueError, match=r"M must give every child pair \(b, c\) exactly one"):
        bpt.build(dense, 2)
    with pytest.raises(ValueError, match=r"M must have shape \(q, q, q\)"):
        bpt.build(np.ones((2, 2)), 2)


def test_bad_inputs_raise():
    model = bpt.build(setting("book")[0], 4)
    clean = np.zeros((2, 16), dtype=int)
    two = clean.copy()
    two[:, :2] = 4
    with pytest.raises(ValueError, match=r"x must have shape \(n >= 1, 16\)"):
        model(np.zeros((2, 8), dtype=int))
    with pytest.raises(ValueError, match=r"x must hold ids in 0\.\.4"):
        model(clean + 5)
    with pytest.raises(ValueError, match=r"x must have 0\.\.1 masked leaves per sequence"):
        model(two)
    assert model(two, max_masked=2).shape == (2, 4)      # accepted on request, not exact
    with pytest.raises(ValueError, match=r"x must have 1\.\.1 masked leaves per sequence"):
        model.leaf_log_posterior(clean)

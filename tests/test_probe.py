"""Tests of lib.probe: hooks, ancestors from sample_tree, probe recovery of a planted code, divergences."""
import numpy as np
import pytest
import torch

from lib import bp, probe, tree
from lib.transformer import ModelConfig, Transformer

M = tree.random_grammar(3, seed=2)
DEPTH = 3


def test_residual_stream_matches_the_forward_pass():
    cfg = ModelConfig(vocab=5, seq_len=8, n_classes=4, task="mlm", d_model=8, n_layers=2, n_heads=2,
                      d_ff=16, dropout=0.0)
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    x = torch.randint(5, (6, 8))
    H = probe.residual_stream(model, x)
    assert H.shape == (3, 6, 8, 8)
    with torch.no_grad():
        h = model.embed(x) + model.pe
        np.testing.assert_allclose(H[0], h.numpy(), atol=1e-6)
        for l, layer in enumerate(model.layers, start=1):
            h, _ = layer(h)
            np.testing.assert_allclose(H[l], h.numpy(), atol=1e-6)
        np.testing.assert_allclose(model.readout(torch.from_numpy(H[-1])).numpy(), model(x).numpy(),
                                   atol=1e-6)
    assert not model.layers[0]._forward_pre_hooks and not model.layers[1]._forward_hooks


def test_internal_nodes_are_consistent_with_leaves_and_root():
    levels = tree.sample_tree(M, DEPTH, 500, k=0, seed=3)
    np.testing.assert_array_equal(probe.ancestors(levels, 0), np.repeat(levels[0], 8, axis=1))
    np.testing.assert_array_equal(probe.ancestors(levels, DEPTH), levels[-1])
    for i in range(DEPTH):                         # every node emitted its two children
        parent, left, right = levels[i], levels[i + 1][:, 0::2], levels[i + 1][:, 1::2]
        assert np.all(M[parent, left, right] > 0)
    for m in range(DEPTH):                         # exact BP on each block recovers its ancestor
        post = bp.root_posterior(M, levels[-1].reshape(-1, 2 ** (DEPTH - m)))
        np.testing.assert_allclose(post, np.eye(3)[levels[m].ravel()], atol=1e-12)


def test_ancestors_of_filtered_levels_are_missing():
    levels = tree.sample_tree(M, DEPTH, 50, k=2, seed=4)
    assert np.all(probe.ancestors(levels, 1) == -1) and np.all(probe.ancestors(levels, 2) >= 0)


def test_probe_recovers_a_planted_linear_code():
    rng = np.random.default_rng(0)
    y = rng.integers(4, size=4000)
    code = rng.standard_normal((4, 10))
    h = 3.0 * code[y] + rng.standard_normal((4000, 10)) + 5.0        # offset tests standardisation
    p = probe.fit_probe(h[:3000], y[:3000], 4).predict_proba(h[3000:])
    assert p.shape == (1000, 4) and np.allclose(p.sum(1), 1.0)
    assert (p.argmax(1) == y[3000:]).mean() > 0.97
    noise = probe.fit_probe(rng.standard_normal((3000, 10)), y[:3000], 4).predict_proba(h[3000:])
    assert (noise.argmax(1) == y[3000:]).mean() < 0.35                # no code, chance level


def test_fit_is_deterministic():
    rng = np.random.default_rng(1)
    h, y = rng.standard_normal((200, 5)), rng.integers(3, size=200)
    a, b = probe.fit_probe(h, y, 3), probe.fit_probe(h, y, 3)
    np.testing.assert_array_equal(a.W, b.W)


def test_divergence_identities():
    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    assert probe.divergence(p, p) == (0.0, 0.0)
    onehot = np.eye(3)[[0, 2]]
    kl, tv = probe.divergence(onehot, p)
    assert kl == pytest.approx(-np.mean(np.log([0.5, 0.5])))
    assert tv == pytest.approx(1 - 0.5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(h=np.zeros((4, 2)), y=np.array([0, 1, 2, 3]), q=3), "y must hold"),
    (dict(h=np.zeros((4, 2)), y=np.zeros(3, dtype=int), q=3), "h must be"),
    (dict(h=np.zeros((4, 2)), y=np.zeros(4, dtype=int), q=1), "q must"),
    (dict(h=np.zeros((4, 2)), y=np.zeros(4, dtype=int), q=2, l2=-1.0), "l2 must"),
])
def test_fit_probe_rejects_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        probe.fit_probe(**kwargs)


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="m must"):
        probe.ancestors(tree.sample_tree(M, DEPTH, 2), 4)
    with pytest.raises(ValueError, match="same shape"):
        probe.divergence(np.ones((2, 2)) / 2, np.ones((2, 3)) / 3)
    with pytest.raises(ValueError, match="p must"):
        probe.divergence(np.ones((1, 2)) / 2, np.array([[0.9, 0.9]]))
    fitted = probe.fit_probe(np.eye(2), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="h must"):
        fitted.predict_proba(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="h must be finite"):      # used to return NaN
        fitted.predict_proba(np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="h must be finite"):      # used to fit NaN weights
        probe.fit_probe(np.array([[np.inf], [0.0]]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="n >= 1"):                # used to return NaN
        probe.divergence(np.ones((0, 2)), np.ones((0, 2)))
    with pytest.raises(ValueError, match="p_ref must have finite"):
        probe.divergence(np.array([[np.nan, 1.0]]), np.ones((1, 2)) / 2)
    with pytest.raises(ValueError, match="levels must"):
        probe.ancestors([], 0)

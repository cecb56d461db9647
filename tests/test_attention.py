"""Tests of lib.attention: block masks, locality scores of hand-built patterns, pattern averaging."""
import numpy as np
import pytest
import torch

from lib import attention
from lib.transformer import ModelConfig, Transformer


def test_block_masks_match_lowest_common_ancestor():
    masks = attention.block_masks(3)
    height = np.array([[int(a ^ b).bit_length() for b in range(8)] for a in range(8)])
    for m in range(4):
        np.testing.assert_array_equal(masks[m], (height <= m).astype(float))
    np.testing.assert_array_equal(masks[0], np.eye(8))


def test_block_diagonal_pattern_has_locality_one_from_its_block_size():
    depth, m0 = 4, 2
    A = attention.block_masks(depth)[m0]
    A = A / A.sum(1, keepdims=True)                        # uniform inside blocks of size 4
    score = attention.block_locality(A)
    np.testing.assert_allclose(score[m0:], 1.0)
    np.testing.assert_allclose(score[:m0], 2.0 ** np.arange(m0) / 2**m0)


def test_uniform_pattern_gives_uniform_locality_and_batches_broadcast():
    A = np.full((2, 3, 16, 16), 1 / 16)
    np.testing.assert_allclose(attention.block_locality(A), np.broadcast_to(
        attention.uniform_locality(4), (2, 3, 5)))


def test_neighbour_pattern_scores():
    A = np.zeros((8, 8))
    A[np.arange(8), np.arange(8) ^ 4] = 1.0                # attend to the mirror in the other half
    np.testing.assert_allclose(attention.block_locality(A), [0, 0, 0, 1])


def test_average_patterns_is_the_mean_of_the_model_patterns():
    cfg = ModelConfig(vocab=4, seq_len=16, n_classes=4, d_model=8, n_layers=2, n_heads=2, d_ff=16,
                      dropout=0.0)
    torch.manual_seed(0)
    model = Transformer(cfg)
    x = np.random.default_rng(0).integers(4, size=(7, 16))
    mean, first = attention.average_patterns(model, x)
    with torch.no_grad():
        _, patterns = model(torch.as_tensor(x), return_attention=True)
    A = torch.stack(patterns, 1).double()
    np.testing.assert_allclose(mean, A.mean(0).numpy(), atol=1e-12)
    np.testing.assert_allclose(first, A[0].numpy(), atol=1e-7)
    np.testing.assert_allclose(mean.sum(-1), 1.0, atol=1e-6)


@pytest.mark.parametrize("bad, match", [(np.ones((3, 4)), "shape"), (np.ones((6, 6)) / 6, "power of two"),
                                        (np.ones((4, 4)), "rows summing"), (-np.eye(4), "non-negative")])
def test_block_locality_rejects_bad_patterns(bad, match):
    with pytest.raises(ValueError, match=match):
        attention.block_locality(bad)


def test_bad_depth_and_inputs_raise():
    with pytest.raises(ValueError, match="depth"):
        attention.block_masks(-1)
    cfg = ModelConfig(vocab=4, seq_len=16, n_classes=4, d_model=8, n_layers=1, n_heads=1, d_ff=8)
    model = Transformer(cfg)
    with pytest.raises(ValueError, match="shape"):
        attention.average_patterns(model, np.zeros((2, 8), dtype=int))
    with pytest.raises(ValueError, match="token ids"):
        attention.average_patterns(model, np.full((2, 16), 4))


def test_block_scale_reads_the_smallest_block_that_keeps_the_attention():
    L, depth = 16, 4
    self_only, siblings = np.eye(L), np.kron(np.eye(L // 2), np.full((2, 2), 0.5))
    leaky = 0.95 * siblings + 0.05 / L                     # 0.95 + 0.05 * 2 / 16 in pairs
    patterns = np.stack([self_only, siblings, leaky, np.full((L, L), 1 / L)])
    scores = attention.block_locality(patterns)
    np.testing.assert_array_equal(attention.block_scale(scores), [1, 2, 2, L])
    # a stricter level pushes the leaky pattern out to the block that holds 0.99 of it
    assert attention.block_scale(scores[2], 0.99) == 16
    assert attention.block_scale(scores[2], 0.95) == 2
    assert attention.block_scale(attention.uniform_locality(depth), 0.5) == 8


@pytest.mark.parametrize("scores, level, match", [
    ([0.2, 0.5], 0.9, "last entry 1"), ([0.2, 1.0], 0.0, "level must be in"),
    ([0.2, 1.0], 1.5, "level must be in")])
def test_block_scale_rejects_bad_input(scores, level, match):
    with pytest.raises(ValueError, match=match):
        attention.block_scale(scores, level)

"""Probes: read a tree node out of a transformer's token representations.

The residual stream of `lib.transformer` after each encoder layer is captured with forward hooks
(the model is not modified). Two kinds of probe map a token's standardised representation
(d_model) to a target symbol in ``0..q-1``, here the token's ancestor at level ``m`` of the tree,
one probe shared by all positions:

- :func:`fit_probe`, a multinomial logistic regression fitted full-batch by L-BFGS from zero
  weights with a small L2 penalty (deterministic: the randomness is all in the data);
- the paper's readout, one hidden ReLU layer (64 units in the paper) trained by Adam with early
  stopping, many probes at once: `lib.two_layer_probes`.

:func:`random_encoder` gives the control: an untrained encoder of a model's shape, seeded, whose
probes measure what the probe alone can extract from symbols and positions. Chapter 5's study
of these probes (its sizes, seeds and stored tables) is `lib.probe_study`. Introduced in
chapter 5.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lib.transformer import ModelConfig, Transformer, token_ids
from lib.validate import check_int, check_real

_ROWS = 1024          # sequences per forward pass


@torch.no_grad()
def residual_stream(model: Transformer, x) -> np.ndarray:
    """Token representations entering layer 1 and leaving every layer, captured by forward hooks.

    Parameters
    ----------
    model : Transformer
    x : array_like of int, shape (n, L)
        Input token ids in ``0..vocab-1``.

    Returns
    -------
    numpy.ndarray, shape (n_layers + 1, n, L, d_model), float32
        Entry 0 is embedding plus position; entry ``l`` is the output of layer ``l``.
    """
    x = token_ids(model.cfg, x)
    captured = []
    hooks = [model.layers[0].register_forward_pre_hook(lambda mod, args: captured.append(args[0]))]
    hooks += [layer.register_forward_hook(lambda mod, args, out: captured.append(out[0]))
              for layer in model.layers]
    model.eval()
    try:
        chunks = []
        for lo in range(0, len(x), _ROWS):
            captured.clear()
            model(x[lo:lo + _ROWS])
            chunks.append(torch.stack(captured))                    # (n_layers + 1, B, L, d)
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(chunks, dim=1).numpy()


def ancestors(levels: list[np.ndarray], m: int) -> np.ndarray:
    """Each leaf's ancestor at level ``m``, from the levels of `lib.tree.sample_tree`.

    Returns
    -------
    numpy.ndarray, shape (n, 2**depth), int64
        ``out[s, i]`` is node ``i >> (depth - m)`` of level ``m`` (``-1`` where that level does
        not exist in a filtered tree).
    """
    if len(levels) < 1:
        raise ValueError("levels must hold at least the root level (output of tree.sample_tree)")
    depth = len(levels) - 1
    m = check_int("m", m, 0, depth)
    return np.repeat(levels[m], 2 ** (depth - m), axis=1)


@dataclass(frozen=True)
class Probe:
    """A fitted linear probe: ``softmax(W (h - mean) / std + b)``; shapes (q, d), (q,), (d,), (d,)."""

    W: np.ndarray
    b: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def predict_proba(self, h) -> np.ndarray:
        """Probabilities (n, q) for representations ``h`` (n, d)."""
        h = np.asarray(h, dtype=np.float64)
        if h.ndim != 2 or h.shape[1] != self.W.shape[1]:
            raise ValueError(f"h must have shape (n, {self.W.shape[1]}), got {h.shape}")
        if not np.all(np.isfinite(h)):
            raise ValueError("h must be finite (no NaN or inf entries)")
        z = ((h - self.mean) / self.std) @ self.W.T + self.b
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)


def fit_probe(h, y, q: int, l2: float = 1e-4, max_iter: int = 200) -> Probe:
    """Fit a multinomial logistic regression from representations to symbols.

    Parameters
    ----------
    h : array_like, shape (n, d)
        Representations (one row per token).
    y : array_like of int, shape (n,)
        Targets in ``0..q-1``.
    q : int
        Number of classes.
    l2 : float
        Penalty ``l2 * ||W||^2`` added to the mean cross-entropy (nats).
    max_iter : int
        L-BFGS iterations.

    Returns
    -------
    Probe
    """
    q = check_int("q", q, 2)
    l2 = check_real("l2", l2, 0.0)
    max_iter = check_int("max_iter", max_iter, 1)
    h, y = np.asarray(h, dtype=np.float64), np.asarray(y)
    if h.ndim != 2 or y.shape != (len(h),) or len(h) == 0:
        raise ValueError(f"h must be (n, d) and y (n,) with n >= 1, got {h.shape} and {y.shape}")
    if not np.all(np.isfinite(h)):
        raise ValueError("h must be finite (no NaN or inf entries)")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= q:
        raise ValueError(f"y must hold integers in 0..{q - 1}")
    mean, std = h.mean(0), h.std(0) + 1e-8
    X, t = torch.from_numpy((h - mean) / std), torch.from_numpy(y.astype(np.int64))
    W = torch.zeros(q, h.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(q, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=max_iter, tolerance_grad=1e-9,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(X @ W.T + b, t) + l2 * (W**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return Probe(W.detach().numpy(), b.detach().numpy(), mean, std)


def divergence(p_ref, p) -> tuple[float, float]:
    """Mean ``KL(p_ref || p)`` (nats) and mean total variation between rows of two (n, q) laws.

    ``0 log 0 = 0``, so a one-hot ``p_ref`` gives ``KL = -mean log p[true]`` (the probe's
    cross-entropy) and ``TV = 1 - mean p[true]``.
    """
    p_ref, p = np.asarray(p_ref, dtype=float), np.asarray(p, dtype=float)
    if p_ref.ndim != 2 or p.shape != p_ref.shape or len(p) == 0:
        raise ValueError(f"p_ref and p must have the same shape (n, q) with n >= 1, got "
                         f"{p_ref.shape} and {p.shape}")
    for name, P in (("p_ref", p_ref), ("p", p)):
        if not np.all(np.isfinite(P)) or np.any(P < 0) or not np.allclose(P.sum(1), 1.0, atol=1e-6):
            raise ValueError(f"{name} must have finite, non-negative rows summing to one")
    safe = np.where(p_ref > 0, p_ref, 1.0)
    kl = np.sum(np.where(p_ref > 0, p_ref * (np.log(safe) - np.log(np.maximum(p, 1e-300))), 0.0), 1)
    return float(kl.mean()), float(0.5 * np.abs(p_ref - p).sum(1).mean())


def random_encoder(cfg: ModelConfig, seed: int) -> Transformer:
    """An untrained encoder of shape ``cfg`` (eval mode), its weights drawn from ``seed``.

    The same initialisation as a training run with ``init_seed = seed`` (`lib.train`), drawn
    inside a forked random state so that the caller's torch random stream is left as it was.
    """
    if not isinstance(cfg, ModelConfig):
        raise ValueError(f"cfg must be a ModelConfig, got {type(cfg).__name__}")
    seed = check_int("seed", seed, 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Transformer(cfg)
    return model.eval()

"""Probes: read a tree node out of a transformer's token representations.

The residual stream of `lib.transformer` after each encoder layer is captured with forward hooks
(the model is not modified). Two kinds of probe map a token's standardised representation
(d_model) to a target symbol in ``0..q-1``, here the token's ancestor at level ``m`` of the tree,
one probe shared by all positions:

- :func:`fit_probe`, a multinomial logistic regression fitted full-batch by L-BFGS from zero
  weights with a small L2 penalty (deterministic: the randomness is all in the data);
- :func:`fit_two_layer_probes`, the paper's readout, one hidden ReLU layer (64 units in the
  paper) trained by Adam on minibatches with early stopping on a held-out split; many probes
  (every layer times every level) are trained at once as independent networks, seeded.

:func:`random_encoder` gives the control: an untrained encoder of a model's shape, seeded, whose
probes measure what the probe alone can extract from symbols and positions. Chapter 5's study
of these probes (its sizes, seeds and stored tables) is `lib.probe_study`. Introduced in
chapter 5.
"""
from __future__ import annotations

import math
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


@dataclass(frozen=True)
class TwoLayerProbes:
    """Independent two-layer probes, one per representation ``r`` and target ``t``.

    ``p_rt(h) = softmax(W2[r, t] relu(W1[r, t] (h - mean[r]) / std[r] + b1[r, t]) + b2[r, t])``
    with W1 (R, T, d, hidden), b1 (R, T, hidden), W2 (R, T, hidden, q), b2 (R, T, q), mean and
    std (R, d). ``best_epoch`` (R, T) is the epoch whose weights were kept (lowest validation
    loss); ``val_loss`` (epochs run + 1, R, T) the validation cross-entropy (nats) per epoch.
    """

    W1: np.ndarray
    b1: np.ndarray
    W2: np.ndarray
    b2: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    best_epoch: np.ndarray
    val_loss: np.ndarray

    def predict_proba(self, H) -> np.ndarray:
        """Probabilities (R, T, n, q) for representations ``H`` (R, n, d)."""
        R, _, d, _ = self.W1.shape
        H = _representations("H", H, R, d)
        params = [torch.from_numpy(a) for a in (self.W1, self.b1, self.W2, self.b2)]
        out = []
        with torch.no_grad():
            for X in _standardised_chunks(H, self.mean, self.std):
                out.append(torch.softmax(_two_layer_logits(X, *params), dim=-1))
        return torch.cat(out, dim=2).numpy()


def _representations(name: str, H, R: int | None = None, d: int | None = None) -> np.ndarray:
    """``H`` as a finite float32 array (R, n, d) with n >= 1, checked against ``R`` and ``d``."""
    H = np.asarray(H, dtype=np.float32)
    if (H.ndim != 3 or H.shape[1] == 0 or (R is not None and H.shape[0] != R)
            or (d is not None and H.shape[2] != d)):
        want = f"({R if R is not None else 'R'}, n >= 1, {d if d is not None else 'd'})"
        raise ValueError(f"{name} must have shape {want}, got {H.shape}")
    if not np.all(np.isfinite(H)):
        raise ValueError(f"{name} must be finite (no NaN or inf entries)")
    return H


def _targets(name: str, Y, n: int, q: int, T: int | None = None) -> np.ndarray:
    """``Y`` as an int64 array (T, n) of symbols in ``0..q-1``."""
    Y = np.asarray(Y)
    if Y.ndim != 2 or Y.shape[1] != n or (T is not None and Y.shape[0] != T) or not len(Y):
        raise ValueError(f"{name} must have shape ({T if T is not None else 'T >= 1'}, {n}), "
                         f"got {Y.shape}")
    if not np.issubdtype(Y.dtype, np.integer) or Y.min() < 0 or Y.max() >= q:
        raise ValueError(f"{name} must hold integers in 0..{q - 1}")
    return Y.astype(np.int64)


def _standardised_chunks(H: np.ndarray, mean: np.ndarray, std: np.ndarray, rows: int = 1 << 15):
    """Chunks of ``(H - mean) / std`` along the token axis, as float32 tensors (R, rows, d)."""
    mean, std = torch.from_numpy(mean)[:, None], torch.from_numpy(std)[:, None]
    for lo in range(0, H.shape[1], rows):
        yield (torch.from_numpy(H[:, lo:lo + rows]) - mean) / std


def _two_layer_logits(X, W1, b1, W2, b2) -> torch.Tensor:
    """Logits (R, T, B, q) of every probe for standardised representations X (R, B, d)."""
    z = torch.relu(torch.einsum("rbd,rtdh->rtbh", X, W1) + b1[:, :, None])
    return torch.einsum("rtbh,rthq->rtbq", z, W2) + b2[:, :, None]


def _mean_losses(H, Y, mean, std, params, rows: int = 1 << 15) -> torch.Tensor:
    """Mean cross-entropy (R, T) of every probe on representations H (R, n, d), targets Y (T, n)."""
    total = 0.0
    with torch.no_grad():
        for c, X in enumerate(_standardised_chunks(H, mean, std, rows)):
            logits = _two_layer_logits(X, *params)                        # (R, T, B, q)
            y = torch.from_numpy(Y[:, c * rows:(c + 1) * rows]).expand(len(X), -1, -1)
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                  reduction="none")
            total = total + nll.view(y.shape).sum(-1)
    return total / H.shape[1]


def fit_two_layer_probes(H, Y, q: int, H_val, Y_val, hidden: int = 64, lr: float = 1e-3,
                         batch_size: int = 1024, max_epochs: int = 20, patience: int = 3,
                         seed: int = 0, lr_final: float = 1.0) -> TwoLayerProbes:
    """Train one two-layer probe per pair (representation ``r``, target ``t``), all at once.

    The probes share nothing but the minibatch order: the loss is the sum of their mean
    cross-entropies and Adam's update is per parameter, so each probe follows the trajectory
    it would follow alone. After every epoch each probe's validation loss is measured; its
    weights at its lowest validation loss are kept, and training stops once no probe has
    improved for ``patience`` epochs (or after ``max_epochs``).

    Parameters
    ----------
    H : array_like, shape (R, n, d)
        R representations of the same n tokens (for example the layers of an encoder).
    Y : array_like of int, shape (T, n)
        T targets of the same tokens (for example the ancestor levels), in ``0..q-1``.
    q : int
        Number of classes.
    H_val, Y_val : array_like, shapes (R, n_val, d) and (T, n_val)
        Held-out tokens for early stopping.
    hidden : int
        Hidden ReLU units per probe (the paper's readout: 64).
    lr, batch_size, max_epochs, patience : float, int, int, int
        Adam learning rate, tokens per step, passes over the data at most, early-stopping
        patience in epochs.
    lr_final : float
        Fraction of ``lr`` reached at the last step of ``max_epochs`` by a cosine decay
        (``1``: a constant rate).
    seed : int
        Seed of the initial weights (PyTorch's ``nn.Linear`` law) and of the minibatch order.

    Returns
    -------
    TwoLayerProbes
    """
    q = check_int("q", q, 2)
    hidden = check_int("hidden", hidden, 1)
    lr = check_real("lr", lr, 1e-12)
    batch_size = check_int("batch_size", batch_size, 1)
    max_epochs = check_int("max_epochs", max_epochs, 1)
    patience = check_int("patience", patience, 1)
    seed = check_int("seed", seed, 0)
    if not 0.0 < check_real("lr_final", lr_final, 0.0) <= 1.0:
        raise ValueError(f"lr_final must be in (0, 1], got {lr_final}")
    H = _representations("H", H)
    R, n, d = H.shape
    Y = _targets("Y", Y, n, q)
    T = len(Y)
    H_val = _representations("H_val", H_val, R, d)
    Y_val = _targets("Y_val", Y_val, H_val.shape[1], q, T)
    mean = H.mean(axis=1, dtype=np.float64).astype(np.float32)            # (R, d)
    std = (H.std(axis=1, dtype=np.float64) + 1e-6).astype(np.float32)
    X = torch.from_numpy(np.concatenate(list(_standardised_chunks(H, mean, std)), axis=1))
    targets = torch.from_numpy(Y)
    gen = torch.Generator().manual_seed(seed)

    def uniform(shape, fan_in):                    # nn.Linear's default initial law
        return ((2 * torch.rand(shape, generator=gen) - 1) / fan_in**0.5).requires_grad_()

    params = [uniform((R, T, d, hidden), d), uniform((R, T, hidden), d),
              uniform((R, T, hidden, q), hidden), uniform((R, T, q), hidden)]
    opt = torch.optim.Adam(params, lr=lr)
    best = [p.detach().clone() for p in params]
    history = [_mean_losses(H_val, Y_val, mean, std, best)]
    best_loss, since = history[0].clone(), torch.zeros(R, T, dtype=torch.long)
    best_epoch = torch.zeros(R, T, dtype=torch.long)
    steps, step = max_epochs * -(-n // batch_size), 0
    for epoch in range(1, max_epochs + 1):
        order = torch.randperm(n, generator=gen)
        for lo in range(0, n, batch_size):
            decay = 0.5 * (1 + math.cos(math.pi * step / steps))
            opt.param_groups[0]["lr"] = lr * (lr_final + (1 - lr_final) * decay)
            step += 1
            idx = order[lo:lo + batch_size]
            logits = _two_layer_logits(X[:, idx], *params)                # (R, T, B, q)
            y = targets[:, idx].expand(R, -1, -1)                          # (R, T, B)
            loss = F.cross_entropy(logits.reshape(-1, q), y.reshape(-1),
                                   reduction="sum") / len(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
        history.append(_mean_losses(H_val, Y_val, mean, std, params))
        better = history[-1] < best_loss
        for b, p in zip(best, params):
            b[better] = p.detach()[better]
        best_loss = torch.where(better, history[-1], best_loss)
        best_epoch[better] = epoch
        since = torch.where(better, 0, since + 1)
        if (since >= patience).all():
            break
    W1, b1, W2, b2 = (b.numpy() for b in best)
    return TwoLayerProbes(W1, b1, W2, b2, mean, std, best_epoch.numpy(),
                          torch.stack(history).numpy())

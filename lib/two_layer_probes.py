"""The paper's probe readout: independent two-layer probes, all trained at once.

One hidden ReLU layer (64 units in the paper) maps a token's standardised representation
(d_model) to a target symbol in ``0..q-1``. :func:`fit_two_layer_probes` trains one such probe per
pair (representation, target), for example every layer of an encoder times every ancestor level,
as independent networks sharing only the minibatch order: Adam on minibatches, seeded, with early
stopping on a held-out split. The representations come from `lib.probe.residual_stream`; the
linear probe and the untrained control are in `lib.probe`; chapter 5's study is
`lib.probe_study`. Introduced in chapter 5.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lib.validate import check_int, check_real


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
    q, hidden = check_int("q", q, 2), check_int("hidden", hidden, 1)
    seed, lr = check_int("seed", seed, 0), check_real("lr", lr, 1e-12)
    batch_size = check_int("batch_size", batch_size, 1)
    max_epochs = check_int("max_epochs", max_epochs, 1)
    patience = check_int("patience", patience, 1)
    if not 0.0 < check_real("lr_final", lr_final, 0.0) <= 1.0:
        raise ValueError(f"lr_final must be in (0, 1], got {lr_final}")
    H = _representations("H", H)
    R, n, d = H.shape
    Y = _targets("Y", Y, n, q)
    H_val = _representations("H_val", H_val, R, d)
    Y_val = _targets("Y_val", Y_val, H_val.shape[1], q, len(Y))
    mean = H.mean(axis=1, dtype=np.float64).astype(np.float32)            # (R, d)
    std = (H.std(axis=1, dtype=np.float64) + 1e-6).astype(np.float32)
    X = torch.from_numpy(np.concatenate(list(_standardised_chunks(H, mean, std)), axis=1))
    gen = torch.Generator().manual_seed(seed)
    params = _initial_weights(R, len(Y), d, hidden, q, gen)
    opt = torch.optim.Adam(params, lr=lr)
    schedule = _cosine(lr, lr_final, max_epochs * -(-n // batch_size))
    best = [p.detach().clone() for p in params]
    history = [_mean_losses(H_val, Y_val, mean, std, best)]
    best_loss, since = history[0].clone(), torch.zeros(history[0].shape, dtype=torch.long)
    best_epoch = torch.zeros(history[0].shape, dtype=torch.long)
    for epoch in range(1, max_epochs + 1):
        _epoch(X, torch.from_numpy(Y), params, opt, schedule, batch_size, gen)
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


def _initial_weights(R: int, T: int, d: int, hidden: int, q: int,
                     gen: torch.Generator) -> list[torch.Tensor]:
    """W1 (R, T, d, hidden), b1 (R, T, hidden), W2 (R, T, hidden, q), b2 (R, T, q), drawn in
    this order from ``nn.Linear``'s default law, uniform in +-1/sqrt(fan_in)."""
    def uniform(shape, fan_in):
        return ((2 * torch.rand(shape, generator=gen) - 1) / fan_in**0.5).requires_grad_()

    return [uniform((R, T, d, hidden), d), uniform((R, T, hidden), d),
            uniform((R, T, hidden, q), hidden), uniform((R, T, q), hidden)]


def _cosine(lr: float, lr_final: float, steps: int):
    """Learning rate at each of ``steps`` steps: cosine from ``lr`` to ``lr_final * lr``."""
    for step in range(steps):
        decay = 0.5 * (1 + math.cos(math.pi * step / steps))
        yield lr * (lr_final + (1 - lr_final) * decay)


def _epoch(X, Y, params, opt, schedule, batch_size: int, gen: torch.Generator) -> None:
    """One pass over the tokens X (R, n, d), targets Y (T, n), in an order drawn from ``gen``;
    the loss is the sum over probes of their mean cross-entropies."""
    R, n = X.shape[:2]
    order = torch.randperm(n, generator=gen)
    for lo in range(0, n, batch_size):
        opt.param_groups[0]["lr"] = next(schedule)
        idx = order[lo:lo + batch_size]
        logits = _two_layer_logits(X[:, idx], *params)                    # (R, T, B, q)
        y = Y[:, idx].expand(R, -1, -1)                                    # (R, T, B)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                               reduction="sum") / len(idx)
        opt.zero_grad()
        loss.backward()
        opt.step()

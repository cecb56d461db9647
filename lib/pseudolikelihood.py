"""The inverse Potts problem by pseudo-likelihood, on factorized and on unconstrained couplings.

Given sequences drawn from a generalized Potts model (`lib.potts`), pseudo-likelihood fits the
single-site conditionals ``p(s_i = a | s_{-i}) = softmax_a( sum_{j != i} K_ij V[a, s_j] )``. Here
are the objective with hand-written gradients, an L-BFGS fit, and the gauge fixing that compares
an estimate with the truth ``(beta J, U)``. One layer of factored attention
(`lib.factored_attention`) trained by MLM minimises the same objective. The standard method
(plmDCA, Ekeberg et al. 2013) fits unconstrained couplings ``W[i, a, j, b]`` and fields
``h[i, a]`` instead: ``full_pl_objective`` and ``fit_full_pseudolikelihood``, the baseline that
shows what the factorization saves. Introduced in chapter 6.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from lib.potts import check_factors, check_potts, check_sequences
from lib.validate import check_int, check_real


def pl_objective(K, V, s, lam: float = 0.0) -> tuple[float, np.ndarray, np.ndarray]:
    """Negative log pseudo-likelihood per site of ``K_ij V[a, b]`` plus a ridge, with its gradients.

    ``loss = -(1/(nL)) sum_{n,i} log p(s_i | s_{-i}) + lam (||K_offdiag||^2 + ||V||^2)``, the
    gradients written out by hand (no autodiff), so that they check the attention layer's.

    Returns
    -------
    loss : float
    dK : numpy.ndarray, shape (L, L), zero diagonal
    dV : numpy.ndarray, shape (q, q)
    """
    K, V = check_factors(K, V)
    s = check_sequences(s, K.shape[0], V.shape[0])
    return _pl_terms(K, V, s, np.eye(V.shape[0])[s], check_real("lam", lam, lo=0.0))


def _pl_terms(K, V, s, Y, lam: float) -> tuple[float, np.ndarray, np.ndarray]:
    """`pl_objective` on checked inputs, with the one-hot ``Y`` (n, L, q) of ``s`` given."""
    (n, L), q = s.shape, V.shape[0]
    K = K - np.diag(np.diag(K))
    Vs = V.T[s]                                                  # Vs[n, j, a] = V[a, s_nj]
    logp = log_softmax(K @ Vs, axis=2)
    loss = -float((logp * Y).sum()) / (n * L) + lam * float((K**2).sum() + (V**2).sum())
    R = (np.exp(logp) - Y) / (n * L)                             # d loss / d logits  (n, L, q)
    # dK_ij = sum_{n,a} R[n,i,a] V[a, s_nj];  dV[a,b] = sum_{n,i} R[n,i,a] (K Y)[n,i,b]
    Rt = R.transpose(1, 0, 2).reshape(L, n * q)
    dK = Rt @ Vs.transpose(1, 0, 2).reshape(L, n * q).T + 2 * lam * K
    np.fill_diagonal(dK, 0.0)
    dV = R.reshape(-1, q).T @ (K @ Y).reshape(-1, q)
    return loss, dK, dV + 2 * lam * V


def fit_pseudolikelihood(s, q: int, lam: float = 1e-4, *, init_seed: int = 0,
                         max_iter: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Solve the inverse Potts problem by pseudo-likelihood on the factorized couplings (L-BFGS).

    Parameters
    ----------
    s : array_like of int, shape (M, L)
        Training sequences.
    q : int
        Number of colours.
    lam : float
        Ridge on ``K`` and ``V`` added to the per-site loss, see `pl_objective`.
    init_seed : int
        Seed of the small random start (the origin is a saddle of the bilinear objective).
    max_iter : int
        L-BFGS iterations at most.

    Returns
    -------
    K : numpy.ndarray, shape (L, L), zero diagonal, not symmetrized
    V : numpy.ndarray, shape (q, q)
    """
    q = check_int("q", q, 2)
    s = check_sequences(s, None, q)
    L, Y, lam = s.shape[1], np.eye(q)[s], check_real("lam", lam, lo=0.0)
    rng = np.random.default_rng(check_int("init_seed", init_seed, 0))
    theta0 = 0.1 * rng.standard_normal(L * L + q * q)

    def objective(theta):
        K, V = theta[:L * L].reshape(L, L), theta[L * L:].reshape(q, q)
        loss, dK, dV = _pl_terms(K, V, s, Y, lam)
        return loss, np.concatenate([dK.ravel(), dV.ravel()])

    options = {"maxiter": check_int("max_iter", max_iter, 1), "gtol": 1e-10, "ftol": 1e-14}
    res = minimize(objective, theta0, jac=True, method="L-BFGS-B", options=options)
    K = res.x[:L * L].reshape(L, L)
    np.fill_diagonal(K, 0.0)
    return K, res.x[L * L:].reshape(q, q)


def fix_gauge(K, V, U) -> tuple[np.ndarray, np.ndarray]:
    """Bring an estimate ``(K, V)`` to the gauge of the truth ``(beta J, U)``.

    The conditionals do not change under (i) ``V[a, b] -> V[a, b] + f_b`` (a shift over the
    predicted colour ``a``), (ii) ``(K, V) -> (c K, V / c)``, and a PL fit gives ``K_ij != K_ji``.
    We centre ``V`` over ``a``, symmetrize ``K``, and choose ``c`` so that the centred ``V`` has the
    norm of the centred ``U`` and a positive overlap with it.

    Returns
    -------
    K : numpy.ndarray, shape (L, L), symmetric, comparable with ``beta J``
    V : numpy.ndarray, shape (q, q), centred over axis 0, comparable with the centred ``U``
    """
    K, V = check_factors(K, V)
    U = np.asarray(U, dtype=np.float64)
    if U.shape != V.shape:
        raise ValueError(f"U must have the shape of V {V.shape}, got {U.shape}")
    V, Uc = V - V.mean(axis=0), U - U.mean(axis=0)
    overlap, scale = (V * Uc).sum(), np.linalg.norm(V) * np.linalg.norm(Uc)
    if not np.isfinite(overlap) or np.abs(overlap) <= 1e-12 * scale:
        raise ValueError("V and U, centred over the predicted colour, must overlap (nonzero, "
                         "finite, not orthogonal) to fix the scale and sign of the gauge")
    c = np.linalg.norm(Uc) / np.linalg.norm(V) * np.sign(overlap)
    return (K + K.T) / (2 * c), c * V


def coupling_error(K, V, J, U, beta) -> float:
    """Relative Frobenius error of the gauge-fixed ``K_ij V[a, b]`` against ``beta J_ij U[a, b]``.

    Both tensors are centred over the predicted colour ``a``; ``K`` is symmetrized. The error does
    not depend on the scale gauge. The truth must be nonzero (``beta > 0``, ``U`` not constant
    over ``a``).
    """
    J, U, beta = check_potts(J, U, beta)
    if np.shape(K) != J.shape:
        raise ValueError(f"K must have the shape of J {J.shape}, got {np.shape(K)}")
    if beta == 0.0:
        raise ValueError("beta must be > 0: the error is relative to beta J, which is zero")
    K, V = fix_gauge(K, V, U)
    true = np.einsum("ij,ab->iajb", beta * J, U - U.mean(axis=0))
    return float(np.linalg.norm(np.einsum("ij,ab->iajb", K, V) - true) / np.linalg.norm(true))


def check_full(W, h) -> tuple[np.ndarray, np.ndarray]:
    """Check couplings ``W`` (L, q, L, q) and fields ``h`` (L, q): finite, ``L, q >= 2``."""
    W, h = np.asarray(W, dtype=np.float64), np.asarray(h, dtype=np.float64)
    if h.ndim != 2 or min(h.shape) < 2:
        raise ValueError(f"h must have shape (L, q) with L, q >= 2, got shape {h.shape}")
    if W.shape != (*h.shape, *h.shape):
        raise ValueError(f"W must have shape (L, q, L, q) = {(*h.shape, *h.shape)} to match h, "
                         f"got shape {W.shape}")
    if not (np.all(np.isfinite(W)) and np.all(np.isfinite(h))):
        raise ValueError("W and h must be finite (no NaN or inf entries)")
    return W, h


def full_log_conditionals(W, h, s) -> np.ndarray:
    """Log conditionals ``log softmax_a( h[i, a] + sum_{j != i} W[i, a, j, s_j] )``, (n, L, q).

    The blocks ``W[i, :, i, :]`` are ignored.
    """
    W, h = check_full(W, h)
    (L, q), s = h.shape, check_sequences(s, h.shape[0], h.shape[1])
    X = np.eye(q)[s].reshape(len(s), L * q)                      # one-hot (n, L q)
    z = X @ (W * _off_blocks(L, q)).reshape(L * q, L * q).T
    return log_softmax(z.reshape(len(s), L, q) + h, axis=2)


def full_pl_objective(W, h, s, lam: float = 0.0) -> tuple[float, np.ndarray, np.ndarray]:
    """plmDCA's objective, averaged over sites, with hand-written gradients.

    ``loss = (1/L) sum_i [ -(1/n) sum_n log p(s_ni | s_n,-i) + lam (||W_i||^2 + ||h_i||^2) ]``,
    with ``W_i = W[i, :, j != i, :]``: plmDCA's per-site ridge on couplings and fields (one
    ``lam`` for both), so the ridge term is ``(lam / L) (||W||^2 + ||h||^2)`` next to the mean
    loss per site.

    Returns
    -------
    loss : float
    dW : numpy.ndarray, shape (L, q, L, q), zero blocks ``dW[i, :, i, :]``
    dh : numpy.ndarray, shape (L, q)
    """
    W, h = check_full(W, h)
    lam, (L, q) = check_real("lam", lam, lo=0.0), h.shape
    s = check_sequences(s, L, q)
    off = _off_blocks(L, q)
    W = W * off
    Y = np.eye(q)[s]                                             # (n, L, q)
    X = Y.reshape(len(s), L * q)
    logp = log_softmax((X @ W.reshape(L * q, L * q).T).reshape(Y.shape) + h, axis=2)
    n_terms = Y.shape[0] * L
    loss = -float((logp * Y).sum()) / n_terms + lam / L * float((W**2).sum() + (h**2).sum())
    R = (np.exp(logp) - Y) / n_terms                             # d loss / d logits (n, L, q)
    dW = (R.reshape(len(s), L * q).T @ X).reshape(L, q, L, q) * off + 2 * lam / L * W
    return loss, dW, R.sum(axis=0) + 2 * lam / L * h


def _off_blocks(L: int, q: int) -> np.ndarray:
    """Mask (L, q, L, q): 1 where ``j != i``, 0 on the self-coupling blocks."""
    return np.broadcast_to((1 - np.eye(L))[:, None, :, None], (L, q, L, q))


def fit_full_pseudolikelihood(s, q: int, lam: float = 1e-2, *,
                              max_iter: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """plmDCA: minimise `full_pl_objective` (convex) by L-BFGS from zero couplings and fields.

    Parameters
    ----------
    s : array_like of int, shape (M, L)
        Training sequences.
    q : int
        Number of colours.
    lam : float
        Ridge on couplings and fields, see `full_pl_objective` (plmDCA's default is 0.01).
    max_iter : int
        L-BFGS iterations at most.

    Returns
    -------
    W : numpy.ndarray, shape (L, q, L, q), zero self-coupling blocks, not symmetrized
    h : numpy.ndarray, shape (L, q)
    """
    q = check_int("q", q, 2)
    s = check_sequences(s, None, q)
    L, lam = s.shape[1], check_real("lam", lam, lo=0.0)
    size = (L * q) ** 2

    def objective(theta):
        loss, dW, dh = full_pl_objective(theta[:size].reshape(L, q, L, q),
                                         theta[size:].reshape(L, q), s, lam)
        return loss, np.concatenate([dW.ravel(), dh.ravel()])

    options = {"maxiter": check_int("max_iter", max_iter, 1), "gtol": 1e-9, "ftol": 1e-13}
    res = minimize(objective, np.zeros(size + L * q), jac=True, method="L-BFGS-B",
                   options=options)
    return res.x[:size].reshape(L, q, L, q) * _off_blocks(L, q), res.x[size:].reshape(L, q)

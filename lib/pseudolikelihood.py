"""The inverse Potts problem by pseudo-likelihood on the factorized couplings ``K_ij V[a, b]``.

Given sequences drawn from a generalized Potts model (`lib.potts`), pseudo-likelihood fits the
single-site conditionals ``p(s_i = a | s_{-i}) = softmax_a( sum_{j != i} K_ij V[a, s_j] )``. Here
are the objective with hand-written gradients, an L-BFGS fit, and the gauge fixing that compares
an estimate with the truth ``(beta J, U)``. One layer of factored attention
(`lib.factored_attention`) trained by MLM minimises the same objective. Introduced in chapter 6.
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

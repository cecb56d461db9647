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

from lib.potts import check_potts, check_sequences
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
    K, V = np.asarray(K, dtype=np.float64), np.asarray(V, dtype=np.float64)
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
    s = check_sequences(s, np.shape(s)[-1], q)
    L, Y, lam = s.shape[1], np.eye(q)[s], check_real("lam", lam, lo=0.0)
    rng = np.random.default_rng(check_int("init_seed", init_seed, 0))
    theta0 = 0.1 * rng.standard_normal(L * L + q * q)

    def objective(theta):
        loss, dK, dV = _pl_terms(theta[:L * L].reshape(L, L), theta[L * L:].reshape(q, q), s, Y, lam)
        return loss, np.concatenate([dK.ravel(), dV.ravel()])

    res = minimize(objective, theta0, jac=True, method="L-BFGS-B",
                   options={"maxiter": check_int("max_iter", max_iter, 1), "gtol": 1e-10, "ftol": 1e-14})
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
    K, V, U = (np.asarray(X, dtype=np.float64) for X in (K, V, U))
    V, Uc = V - V.mean(axis=0), U - U.mean(axis=0)
    c = np.linalg.norm(Uc) / np.linalg.norm(V) * np.sign((V * Uc).sum())
    return (K + K.T) / (2 * c), c * V


def coupling_error(K, V, J, U, beta) -> float:
    """Relative Frobenius error of the gauge-fixed coupling tensor ``K_ij V[a, b]`` against ``beta J_ij U[a, b]``.

    Both tensors are centred over the predicted colour ``a``; ``K`` is symmetrized. The error does
    not depend on the scale gauge.
    """
    J, U, beta = check_potts(J, U, beta)
    K, V = fix_gauge(K, V, U)
    true = np.einsum("ij,ab->iajb", beta * J, U - U.mean(axis=0))
    return float(np.linalg.norm(np.einsum("ij,ab->iajb", K, V) - true) / np.linalg.norm(true))

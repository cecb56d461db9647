"""Generalization error of masked language modelling in a solvable Gaussian scenario (this book's derivation).

The Potts colours are replaced by real variables, ``x ~ N(0, (nu I - J)^{-1})`` with ``J``
symmetric, zero diagonal and Gaussian (``J_ij ~ N(0, g^2 / L)``, semicircle of radius ``2g``),
``nu > 2g``. Then ``x_i | x_{-i} ~ N(w* . x_{-i}, 1/nu)`` with ``w* = J_{-i,i} / nu``: factored
attention with a scalar value (q = 1, no softmax), and MLM with the square loss is, site by site,
the ridge regression

    w_hat = argmin_w (1/M) sum_mu (x_i^mu - w . x_{-i}^mu)^2 + lam ||w||^2

on ``M = alpha L`` samples. Its test error ``eps_g = E (x_i - w_hat . x_{-i})^2`` has a closed
form as ``L -> inf`` at fixed ``alpha`` (a replica-symmetric / random-matrix computation, written
out in chapter 6); `simulate` measures it at finite ``L``. Introduced in chapter 6.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

from lib.validate import check_int, check_real


def semicircle_stieltjes(z, g: float = 1.0):
    """``G(z) = 2 / (z + sqrt(z^2 - 4 g^2))`` and ``G'(z)`` for real ``z > 2g`` (semicircle of radius ``2g``).

    ``G`` solves ``g^2 G^2 - z G + 1 = 0``, so ``G' = -G^2 / (1 - g^2 G^2)``: a form without the
    cancellation of ``(1 - z / sqrt(z^2 - 4 g^2)) / (2 g^2)`` at large ``z`` (small ridge).
    """
    g = check_real("g", g, lo=0.0)
    z_arr = np.asarray(z, dtype=np.float64)
    if not np.all(np.isfinite(z_arr)) or np.any(z_arr <= 2 * g):
        raise ValueError(f"z must be finite and > 2g = {2 * g} (outside the semicircle's "
                         f"support), got {z}")
    G = 2 / (z + np.sqrt(np.square(z) - 4 * g**2))
    return G, -G**2 / (1 - g**2 * G**2)


def _check_scenario(alpha, lam, nu, g) -> tuple[float, float, float, float]:
    """Validate ``alpha > 0``, ``lam >= 0``, ``g > 0`` and ``nu > 2 g``."""
    alpha, lam = check_real("alpha", alpha, lo=0.0), check_real("lam", lam, lo=0.0)
    g, nu = check_real("g", g, lo=0.0), check_real("nu", nu, lo=0.0)
    if alpha == 0 or g == 0:
        raise ValueError(f"alpha and g must be > 0, got alpha={alpha}, g={g}")
    if nu <= 2 * g:
        raise ValueError(f"nu must exceed the semicircle edge 2g = {2 * g}, got nu={nu}")
    if lam == 0 and alpha == 1:
        raise ValueError("the ridgeless error diverges at alpha = 1; use lam > 0 or alpha != 1")
    return alpha, lam, nu, g


def generalization_error(alpha: float, lam: float, nu: float = 3.0, g: float = 1.0) -> float:
    """Asymptotic MLM test error ``eps_g(alpha, lam)`` of ridge regression in the Gaussian scenario.

    Solve ``kappa = lam + G(nu + 1/kappa) / alpha`` for ``kappa >= 0``; with ``z = nu + 1/kappa``,
    ``D2 = -G'(z) / (alpha kappa^2)`` (variance), ``T(kappa) = (g^2/nu^2) (G(z)/kappa) /
    (1 - g^2 G(z)/nu)`` and ``B = -kappa^2 T'(kappa)`` (bias); then
    ``eps_g = 1/nu + (B + D2/nu) / (1 - D2)``. Ridgeless with ``alpha > 1``: ``kappa = 0``,
    ``eps_g = alpha / (nu (alpha - 1))``.

    Parameters
    ----------
    alpha : float
        Samples per parameter of a site, ``M / L``.
    lam : float
        Ridge, in the convention of the module docstring (mean square loss + ``lam ||w||^2``).
    nu, g : float
        Diagonal of the precision matrix and coupling strength, ``nu > 2 g``.
    """
    alpha, lam, nu, g = _check_scenario(alpha, lam, nu, g)
    if lam == 0 and alpha > 1:
        return alpha / (nu * (alpha - 1))
    kappa = brentq(lambda k: k - lam - semicircle_stieltjes(nu + 1 / k, g)[0] / alpha,
                   1e-3 * lam if lam > 0 else 1e-12, lam + semicircle_stieltjes(nu, g)[0] / alpha + 1,
                   xtol=1e-15)
    G, dG = semicircle_stieltjes(nu + 1 / kappa, g)
    dG_dkappa = -dG / kappa**2                                    # d G(nu + 1/kappa) / d kappa
    D2 = dG_dkappa / alpha
    # T = c u / w with u = G / kappa, w = 1 - g^2 G / nu; B = -kappa^2 T'
    c, u, w = g**2 / nu**2, G / kappa, 1 - g**2 * G / nu
    du, dw = dG_dkappa / kappa - G / kappa**2, -g**2 * dG_dkappa / nu
    B = -kappa**2 * c * (du * w - u * dw) / w**2
    return float(1 / nu + (B + D2 / nu) / (1 - D2))


def symmetric_gaussian(rng: np.random.Generator, L: int) -> np.ndarray:
    """``(G + G.T) / sqrt(2 L)`` with zero diagonal, ``G`` (L, L) standard normal drawn from ``rng``."""
    L = check_int("L", L, 2)
    G = rng.standard_normal((L, L))
    J = (G + G.T) / np.sqrt(2 * L)
    np.fill_diagonal(J, 0.0)
    return J


def gaussian_couplings(L: int, g: float = 1.0, seed: int = 0) -> np.ndarray:
    """Symmetric Gaussian couplings (L, L), zero diagonal, ``J_ij ~ N(0, g^2 / L)`` for ``i != j``."""
    L, g = check_int("L", L, 2), check_real("g", g, lo=0.0)
    return g * symmetric_gaussian(np.random.default_rng(check_int("seed", seed, 0)), L)


def ridge_errors(x: np.ndarray, C: np.ndarray, J: np.ndarray, nu: float, sites, lams) -> np.ndarray:
    """Exact test error of the ridge estimate of ``w*`` at each site, for several ridges.

    Parameters
    ----------
    x : numpy.ndarray, shape (M, L)
        Training samples.
    C : numpy.ndarray, shape (L, L)
        Their covariance ``(nu I - J)^{-1}``.
    J : numpy.ndarray, shape (L, L)
    nu : float
    sites : sequence of int
        Masked sites ``i``.
    lams : sequence of float
        Ridges ``lam >= 0`` (``0``: minimum-norm least squares).

    Returns
    -------
    eps : numpy.ndarray, shape (len(lams), len(sites))
        ``1/nu + (w_hat - w*)^T C' (w_hat - w*)`` with ``C'`` the ``(-i, -i)`` block of ``C``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"x must be a finite (M, L) array with M >= 1, L >= 2, got {x.shape}")
    M, L = x.shape
    for name, X in (("C", C), ("J", J)):
        if np.shape(X) != (L, L):
            raise ValueError(f"{name} must have shape ({L}, {L}) to match x, got {np.shape(X)}")
    sites = [check_int("sites", i, 0, L - 1) for i in sites]
    lams, nu = [check_real("lams", lam, lo=0.0) for lam in lams], check_real("nu", nu, lo=1e-300)
    eps = np.empty((len(lams), len(sites)))
    for k, i in enumerate(sites):
        rest = np.delete(np.arange(L), i)
        X, w_star, Cp = x[:, rest], J[rest, i] / nu, C[np.ix_(rest, rest)]
        e, Q = np.linalg.eigh(X.T @ X / M)                        # ridge for every lam from one eigh
        b = Q.T @ (X.T @ x[:, i] / M)
        for m, lam in enumerate(lams):
            if lam > 0:
                inv = 1 / (e + lam)
            else:                                                 # minimum-norm least squares
                inv = np.where(e > 1e-10 * e.max(), 1 / np.maximum(e, 1e-300), 0)
            d = Q @ (inv * b) - w_star
            eps[m, k] = 1 / nu + d @ Cp @ d
    return eps


def simulate(L: int, alphas, lams, nu: float = 3.0, g: float = 1.0, *, n_sites: int = 4,
             n_draws: int = 3, seed: int = 0) -> np.ndarray:
    """Measured test error of per-site ridge MLM at finite ``L``.

    For each of ``n_draws`` coupling matrices and each ``alpha``, draw ``M = round(alpha L)``
    samples, fit the first ``n_sites`` sites and compute their exact test error.

    Returns
    -------
    eps : numpy.ndarray, shape (len(alphas), len(lams), n_draws * n_sites)
    """
    L, n_sites, n_draws = check_int("L", L, 2), check_int("n_sites", n_sites, 1, L), check_int("n_draws", n_draws, 1)
    for alpha in alphas:
        for lam in lams:
            _check_scenario(alpha, lam, nu, g)
    rng = np.random.default_rng(check_int("seed", seed, 0))
    out = np.empty((len(alphas), len(lams), n_draws, n_sites))
    for d in range(n_draws):
        J = gaussian_couplings(L, g, seed=int(rng.integers(2**31)))
        if np.linalg.eigvalsh(J)[-1] >= nu:
            raise ValueError(f"nu = {nu} must exceed the largest eigenvalue of J to give a covariance")
        R = np.linalg.cholesky(nu * np.eye(L) - J)                # precision = R R^T
        C = np.linalg.inv(nu * np.eye(L) - J)
        for a, alpha in enumerate(alphas):
            z = rng.standard_normal((max(1, round(alpha * L)), L))
            x = np.linalg.solve(R.T, z.T).T                       # cov (R R^T)^{-1} = C
            out[a, :, d] = ridge_errors(x, C, J, nu, range(n_sites), lams)
    return out.reshape(len(alphas), len(lams), -1)

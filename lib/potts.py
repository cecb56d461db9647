"""The generalized Potts model of Rende, Gerace, Laio & Goldt (arXiv 2304.07235) and its sampler.

A sequence ``s = (s_1, ..., s_L)`` of colours ``s_i in 0..q-1`` has energy

    H(s) = -1/2 sum_{i != j} J_ij U[s_i, s_j],

with ``J`` (L, L) symmetric with zero diagonal (which sites interact) and ``U`` (q, q) symmetric
(how colours interact), and probability ``p(s) ∝ exp(-beta H(s))``. The single-site conditionals
that masked language modelling (MLM) learns are

    p(s_i = a | s_{-i}) = softmax_a( beta sum_{j != i} J_ij U[a, s_j] ).

This module holds the model (checks, couplings, energy, conditionals, exact enumeration) and a
heat-bath sampler. The inverse problem is in `lib.pseudolikelihood`, the attention layer that
solves it in `lib.factored_attention`, and MLM training of any model in `lib.potts_mlm`.

Introduced in chapter 6. Sequences are int64 arrays of shape (n, L).
"""
from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, logsumexp

from lib.replica import symmetric_gaussian
from lib.validate import check_int, check_real

_SYMMETRY_TOL = 1e-10
_MAX_STATES = 2**22


def check_potts(J, U, beta) -> tuple[np.ndarray, np.ndarray, float]:
    """Check the parameters of a generalized Potts model; return them as float64 arrays and a float.

    Parameters
    ----------
    J : array_like, shape (L, L)
        Site couplings: symmetric, zero diagonal, ``L >= 2``.
    U : array_like, shape (q, q)
        Colour couplings: symmetric, ``q >= 2``.
    beta : float
        Inverse temperature, ``beta >= 0``.
    """
    J, U = np.asarray(J, dtype=np.float64), np.asarray(U, dtype=np.float64)
    for name, X, size in (("J", J, "L"), ("U", U, "q")):
        if X.ndim != 2 or X.shape[0] != X.shape[1]:
            raise ValueError(f"{name} must be a square matrix of shape ({size}, {size}), "
                             f"got shape {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError(f"{name} must be finite (no NaN or inf entries)")
        if not np.allclose(X, X.T, rtol=0, atol=_SYMMETRY_TOL):
            raise ValueError(f"{name} must be symmetric, max |{name} - {name}.T| = "
                             f"{np.abs(X - X.T).max():.3g}")
    if J.shape[0] < 2:
        raise ValueError(f"J: the number of sites L must be >= 2, got L = {J.shape[0]}")
    if np.any(np.diag(J) != 0):
        raise ValueError("J must have a zero diagonal (no self-coupling J_ii)")
    if U.shape[0] < 2:
        raise ValueError(f"U: the number of colours q must be >= 2, got q = {U.shape[0]}")
    return J, U, check_real("beta", beta, lo=0.0)


def check_sequences(s, L: int | None, q: int) -> np.ndarray:
    """Check a batch of colour sequences, shape (n, L) with values in ``0..q-1``; return int64.

    ``L=None`` accepts any length; at least one sequence is required (losses average over them).
    """
    s = np.asarray(s)
    shape = f"(n, {'L' if L is None else L})"
    if s.ndim != 2 or (L is not None and s.shape[1] != L):
        raise ValueError(f"s must have shape {shape}, got shape {s.shape}; "
                         "wrap one sequence as s[None]")
    if s.shape[0] < 1 or s.shape[1] < 1:
        raise ValueError(f"s must hold at least one sequence of at least one site, "
                         f"got shape {s.shape}")
    if not np.issubdtype(s.dtype, np.integer):
        raise ValueError(f"s must hold integer colours in 0..{q - 1}, got dtype {s.dtype}")
    if s.min() < 0 or s.max() >= q:
        raise ValueError(f"s: colours must be in 0..{q - 1}, got values in {s.min()}..{s.max()}")
    return s.astype(np.int64, copy=False)


def check_factors(K, V) -> tuple[np.ndarray, np.ndarray]:
    """Check the factors of a coupling ``K_ij V[a, b]``: finite, ``K`` (L, L), ``V`` (q, q).

    Neither needs to be symmetric (a pseudo-likelihood fit is not); ``L, q >= 2``.
    """
    K, V = np.asarray(K, dtype=np.float64), np.asarray(V, dtype=np.float64)
    for name, X, size in (("K", K, "L"), ("V", V, "q")):
        if X.ndim != 2 or X.shape[0] != X.shape[1] or X.shape[0] < 2:
            raise ValueError(f"{name} must be a square matrix of shape ({size}, {size}) with "
                             f"{size} >= 2, got shape {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError(f"{name} must be finite (no NaN or inf entries)")
    return K, V


def random_couplings(L: int, q: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Signed Gaussian couplings (this book's instance).

    ``J = (G + G.T) / sqrt(2L)`` with zero diagonal (off-diagonal variance ``1/L``) and
    ``U = (G' + G'.T) / sqrt(2)``, with ``G, G'`` standard normal.

    Returns
    -------
    J : numpy.ndarray, shape (L, L)
    U : numpy.ndarray, shape (q, q)
    """
    L, q = check_int("L", L, 2), check_int("q", q, 2)
    rng = np.random.default_rng(check_int("seed", seed, 0))
    J = symmetric_gaussian(rng, L)
    G = rng.standard_normal((q, q))
    return J, (G + G.T) / np.sqrt(2)


def ring_couplings(L: int, q: int, r: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative couplings with equal row sums, the only ``J`` one softmax head can represent.

    ``J_ij = 1 / (2r)`` when sites ``i`` and ``j`` are at most ``r`` apart on a ring of ``L``
    sites, else 0 (every row sums to 1); ``U`` is drawn as in `random_couplings`.

    Returns
    -------
    J : numpy.ndarray, shape (L, L)
    U : numpy.ndarray, shape (q, q)
    """
    L, q = check_int("L", L, 3), check_int("q", q, 2)
    r = check_int("r", r, 1, (L - 1) // 2)
    distance = np.abs(np.subtract.outer(np.arange(L), np.arange(L)))
    J = ((np.minimum(distance, L - distance) <= r) & (distance > 0)) / (2 * r)
    G = np.random.default_rng(check_int("seed", seed, 0)).standard_normal((q, q))
    return J, (G + G.T) / np.sqrt(2)


def energy(J, U, s) -> np.ndarray:
    """Energy ``H(s) = -1/2 sum_{i != j} J_ij U[s_i, s_j]`` of each sequence, shape (n,)."""
    J, U, _ = check_potts(J, U, 0.0)
    s = check_sequences(s, J.shape[0], U.shape[0])
    return -0.5 * np.einsum("ij,nij->n", J, U[s[:, :, None], s[:, None, :]])


def log_conditionals(K, V, s) -> np.ndarray:
    """Log single-site conditionals of the factorized coupling ``K_ij V[a, b]``, shape (n, L, q).

    ``out[n, i, a] = log softmax_a( sum_{j != i} K_ij V[a, s_j] )``. ``K`` (L, L) need not be
    symmetric (a PL fit is not); its diagonal is ignored. For a Potts model pass ``K = beta J``,
    ``V = U``.
    """
    K, V = check_factors(K, V)
    s = check_sequences(s, K.shape[0], V.shape[0])
    K = K - np.diag(np.diag(K))
    return log_softmax(K @ V.T[s], axis=2)                      # V.T[s][n, j, a] = V[a, s_j]


def neg_log_pseudolikelihood(J, U, beta, s) -> float:
    """Minus the log pseudo-likelihood per site, ``-(1/(nL)) sum_{n,i} log p(s_i | s_{-i})``."""
    J, U, beta = check_potts(J, U, beta)
    logp = log_conditionals(beta * J, U, s)
    return -float(np.take_along_axis(logp, np.asarray(s)[:, :, None], axis=2).mean())


def conditional_entropy(J, U, beta, s) -> float:
    """Mean entropy (nats) of the true conditionals ``p(. | s_{-i})`` over the sequences and sites of ``s``.

    With ``s`` drawn from the model this estimates ``(1/L) sum_i H(s_i | s_{-i})``, the lowest
    MLM test loss any model can reach.
    """
    J, U, beta = check_potts(J, U, beta)
    logp = log_conditionals(beta * J, U, s)
    return -float((np.exp(logp) * logp).sum(axis=2).mean())


def enumerate_states(J, U, beta) -> tuple[np.ndarray, np.ndarray]:
    """All ``q**L`` sequences and their exact probabilities (small models only).

    Returns
    -------
    states : numpy.ndarray, shape (q**L, L), int64
        In lexicographic order (site 0 slowest).
    p : numpy.ndarray, shape (q**L,)
    """
    J, U, beta = check_potts(J, U, beta)
    L, q = J.shape[0], U.shape[0]
    if q**L > _MAX_STATES:
        raise ValueError(f"enumeration needs q**L <= {_MAX_STATES} states, got {q}**{L}")
    states = np.indices((q,) * L).reshape(L, -1).T
    logw = -beta * energy(J, U, states)
    return states, np.exp(logw - logsumexp(logw))


def sample(J, U, beta, n: int, *, n_chains: int | None = None, burn_in: int = 150, thin: int = 20,
           seed: int = 0) -> np.ndarray:
    """Draw sequences by heat-bath (Gibbs) sweeps over many independent chains.

    Every chain starts from uniform random colours, makes ``burn_in`` sweeps (sites ``0..L-1`` in
    order, each resampled from its exact conditional), then yields one sequence every ``thin``
    sweeps until ``n`` sequences are collected.

    Parameters
    ----------
    J, U, beta
        Model parameters, see `check_potts`.
    n : int
        Number of sequences.
    n_chains : int, optional
        Chains run in parallel (default ``n``: one sequence per chain, all independent).
    burn_in, thin : int
        Sweeps before the first sequence and between sequences of one chain.
    seed : int
        Seed of the chains' initial colours and updates.

    Returns
    -------
    s : numpy.ndarray, shape (n, L), int64
        Row ``t * n_chains + c`` is chain ``c``'s ``t``-th sequence.
    """
    J, U, beta = check_potts(J, U, beta)
    n = check_int("n", n, 1)
    C = n if n_chains is None else check_int("n_chains", n_chains, 1)
    burn_in, thin = check_int("burn_in", burn_in, 0), check_int("thin", thin, 1)
    rng = np.random.default_rng(check_int("seed", seed, 0))
    s = rng.integers(U.shape[0], size=(C, J.shape[0]))
    out, n_per_chain = [], -(-n // C)
    for t in range(burn_in + thin * (n_per_chain - 1) + 1):      # t = sweeps done so far
        if t >= burn_in and (t - burn_in) % thin == 0:
            out.append(s.copy())
        if len(out) < n_per_chain:
            _gibbs_sweep(s, J, U, beta, rng)
    return np.concatenate(out)[:n]


def _gibbs_sweep(s: np.ndarray, J: np.ndarray, U: np.ndarray, beta: float, rng) -> None:
    """Resample sites ``0..L-1`` of every chain ``s`` (C, L) in place from their conditionals."""
    (C, L), q = s.shape, U.shape[0]
    offsets = np.arange(C)[:, None] * q                          # flat index c * q + colour
    for i in range(L):
        # counts[c, b] = sum_j J_ij [s_cj = b], so the local field is beta * counts @ U   (C, q)
        counts = np.bincount((offsets + s).ravel(), weights=np.broadcast_to(J[i], (C, L)).ravel(),
                             minlength=C * q).reshape(C, q)
        cdf = np.cumsum(np.exp(log_softmax(beta * counts @ U, axis=1)), axis=1)
        s[:, i] = np.minimum((cdf < rng.random(C)[:, None]).sum(axis=1), q - 1)

"""Exact Belief Propagation on the filtered tree grammar, batched over sequences.

The tree is a factor graph with one three-body factor ``M[a, b, c]`` per internal node, a uniform
root prior and one evidence vector per leaf (one-hot, or all ones if the leaf is masked). One
inside (upward) sweep gives the root posterior; an outside (downward) sweep adds every leaf's
leave-one-out conditional. Under filtering level ``k`` the top ``k`` levels are a star joining the
root to each level-``k`` node ``j`` through ``T[j] = tree.path_marginals(M, k)[j]``.

Messages are normalised after every step; a sequence whose normaliser vanishes has probability
zero and is rejected. Everything is vectorised over the batch; Python only loops over tree levels
and over fixed-size chunks of the batch. Introduced in chapter 3.
"""
from __future__ import annotations

import numpy as np

from lib.tree import path_marginals
from lib.validate import check_grammar, check_int, check_leaves

_CHUNK = 1 << 13      # sequences per vectorised block (keeps temporaries in cache)

# Layout: every message array is (q, nodes, n), symbol first and batch last, so that each
# numpy operation runs over long contiguous rows and each contraction is one BLAS product.


def _normalize(x: np.ndarray, dead: np.ndarray) -> np.ndarray:
    """Divide ``x`` (q, ..., n) by its sum over the symbol axis; flag zero sums per sequence in ``dead``."""
    z = x.sum(axis=0)
    zero = z == 0
    if zero.any():
        dead |= zero.reshape(-1, len(dead)).any(axis=0)
        z[zero] = 1.0
    x /= z
    return x


def _pair_product(W: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``out[t] = sum_{r, s} W[t, r * q + s] u[r] v[s]`` for (q, m, n) arrays ``u``, ``v``.

    The outer product is formed over the symbol axes and contracted with one matrix product.
    """
    q, m, n = u.shape
    pair = u[:, None] * v[None, :]                                 # (q, q, m, n)
    return (W @ pair.reshape(q * q, m * n)).reshape(-1, m, n)


def _evidence(leaves: np.ndarray, q: int) -> np.ndarray:
    """Leaf evidence (q, 2**depth, n): one-hot for a symbol, all ones for the mask ``q``."""
    return np.take(np.vstack([np.eye(q), np.ones(q)]).T, leaves.T, axis=1)


def _inside(M: np.ndarray, leaves: np.ndarray, k: int, dead: np.ndarray) -> list[np.ndarray]:
    """Inside messages ``nu[i]`` (q, 2**i, n) for levels ``i = k..depth`` (lower entries ``None``).

    ``nu[i][a, j]`` is proportional to P(leaves below node (i, j) | node (i, j) = a).
    The first step reads ``sum_{b,c} M[a, b, c] e_left(b) e_right(c)`` from a table indexed by
    the two leaf symbols (a masked leaf's evidence is all ones).
    """
    q, depth = M.shape[0], leaves.shape[1].bit_length() - 1
    nu = [None] * (depth + 1)
    if depth == k:
        nu[depth] = _evidence(leaves, q)
        return nu
    E = np.vstack([np.eye(q), np.ones(q)])                     # (q+1, q): evidence per symbol
    table = np.einsum("abc,Bb,Cc->aBC", M, E, E).reshape(q, -1)   # (q, (q+1)^2)
    x = leaves.T
    nu[depth - 1] = _normalize(np.take(table, x[0::2] * (q + 1) + x[1::2], axis=1), dead)
    W = M.reshape(q, q * q)                                    # rows a, columns (b, c)
    for i in range(depth - 2, k - 1, -1):
        nu[i] = _normalize(_pair_product(W, nu[i + 1][:, 0::2], nu[i + 1][:, 1::2]), dead)
    return nu


def _star_up(T: np.ndarray, nu_k: np.ndarray, dead: np.ndarray) -> list[np.ndarray]:
    """Star factors ``f[j](a) = sum_x T[j, a, x] nu_k[j](x)`` and their pairwise products.

    Returns the levels of a binary product tree: ``prod[0]`` is (q, 2**k, n) and ``prod[-1]``
    (q, 1, n) is ``prod_j f[j]``, each level normalised.
    """
    f = np.matmul(T, nu_k.transpose(1, 0, 2)).transpose(1, 0, 2)
    prod = [_normalize(f, dead)]
    while prod[-1].shape[1] > 1:
        prod.append(_normalize(prod[-1][:, 0::2] * prod[-1][:, 1::2], dead))
    return prod


def _star_down(T: np.ndarray, prod: list[np.ndarray], dead: np.ndarray) -> np.ndarray:
    """Outside messages into the level-k nodes: ``psi[j](x) ∝ sum_a T[j,a,x] prior(a) prod_{j'!=j} f[j'](a)``.

    The leave-one-out products come from a downward pass over the product tree of
    :func:`_star_up`, so their cost is linear in ``2**k``.
    """
    q, _, n = prod[0].shape
    out = np.full((q, 1, n), 1.0 / q)                          # uniform root prior
    for level in reversed(prod[:-1]):
        sibling = level.reshape(q, -1, 2, n)[:, :, ::-1].reshape(q, -1, n)
        out = _normalize(np.repeat(out, 2, axis=1) * sibling, dead)
    psi = np.matmul(T.transpose(0, 2, 1), out.transpose(1, 0, 2)).transpose(1, 0, 2)
    return _normalize(psi, dead)


def _outside(M: np.ndarray, psi: np.ndarray, nu: list[np.ndarray], k: int, dead: np.ndarray) -> np.ndarray:
    """Sweep outside messages from level ``k`` down to the leaves; returns (q, 2**depth, n).

    ``psi[a, j]`` is proportional to P(leaves outside the subtree of node (i, j), node = a).
    """
    q, _, n = psi.shape
    W_left = M.transpose(1, 0, 2).reshape(q, q * q)            # rows b, columns (a, c)
    W_right = M.transpose(2, 0, 1).reshape(q, q * q)           # rows c, columns (a, b)
    for i in range(k, len(nu) - 1):
        left, right = nu[i + 1][:, 0::2], nu[i + 1][:, 1::2]
        psi = np.stack([_pair_product(W_left, psi, right), _pair_product(W_right, psi, left)], axis=2)
        psi = _normalize(psi.reshape(q, 2 ** (i + 1), n), dead)
    return psi


def _prepare(M, leaves, k) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Validate the public arguments; return ``(M, leaves, k, T)``."""
    M = check_grammar(M)
    leaves, depth = check_leaves(leaves, M.shape[0])
    k = check_int("k", k, 0, depth)
    return M, leaves, k, path_marginals(M, k)


def _run(fn, leaves: np.ndarray, k: int, out: np.ndarray) -> np.ndarray:
    """Fill ``out`` with ``fn(chunk, dead)`` over fixed-size chunks of ``leaves``; reject zero-probability rows."""
    dead = np.zeros(len(leaves), dtype=bool)
    for lo in range(0, len(leaves), _CHUNK):
        out[lo:lo + _CHUNK] = fn(leaves[lo:lo + _CHUNK], dead[lo:lo + _CHUNK])
    if dead.any():
        rows = np.flatnonzero(dead)
        raise ValueError(f"leaves: {rows.size} sequence(s) have probability zero under the grammar "
                         f"with k={k} (first at row {rows[0]})")
    return out


def root_posterior(M, leaves, k: int = 0) -> np.ndarray:
    """Exact P(root | observed leaves) under the ``k``-filtered model.

    Parameters
    ----------
    M : array_like, shape (q, q, q)
        Row-stochastic production tensor.
    leaves : array_like of int, shape (n, 2**depth)
        Symbols in ``0..q-1``; the symbol ``q`` marks a masked (unobserved) leaf.
    k : int
        Filtering level assumed by the inference, in ``0..depth``.

    Returns
    -------
    numpy.ndarray, shape (n, q)
        Posterior over the root symbol; the uniform prior for a fully masked sequence.
    """
    M, leaves, k, T = _prepare(M, leaves, k)

    def chunk(x, dead):
        nu = _inside(M, x, k, dead)
        top = _star_up(T, nu[k], dead)[-1] if k > 0 else nu[0]
        return _normalize(top[:, 0].copy(), dead).T

    return _run(chunk, leaves, k, np.empty((len(leaves), M.shape[0])))


def leaf_posterior(M, leaves, k: int = 0) -> np.ndarray:
    """Exact leave-one-out conditionals P(x_i | all observed leaves other than i), for every i.

    For a masked position this is its posterior; for an observed one it is the conditional the
    masked-language-modelling optimum predicts if that position alone were masked.

    Parameters
    ----------
    M : array_like, shape (q, q, q)
        Row-stochastic production tensor.
    leaves : array_like of int, shape (n, 2**depth)
        Symbols in ``0..q-1``; the symbol ``q`` marks a masked leaf.
    k : int
        Filtering level assumed by the inference, in ``0..depth``.

    Returns
    -------
    numpy.ndarray, shape (n, 2**depth, q)
    """
    M, leaves, k, T = _prepare(M, leaves, k)
    q = M.shape[0]

    def chunk(x, dead):
        nu = _inside(M, x, k, dead)
        if k > 0:
            psi = _star_down(T, _star_up(T, nu[k], dead), dead)
        else:
            psi = np.full((q, 1, len(x)), 1.0 / q)
        if nu[-1] is None:
            nu[-1] = _evidence(x, q)
        return _outside(M, psi, nu, k, dead).transpose(2, 1, 0)

    return _run(chunk, leaves, k, np.empty((len(leaves), leaves.shape[1], q)))

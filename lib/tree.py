"""The filtered hierarchical grammar of Garnier-Brun, Mézard, Moscato & Saglietti (arXiv 2408.15138).

A sequence is the 2**depth leaves of a binary tree. The root is uniform over ``q`` symbols and
every internal node with symbol ``a`` emits its (left, right) children with probability
``M[a, b, c]``. The filtering level ``k`` cuts the top ``k`` levels out: the ``2**k`` nodes of
level ``k`` are drawn independently given the root, each from its exact root-to-node marginal,
so correlations that the top of the tree carried are replaced by root-mediated ones.

Introduced in chapters 1 (the grammar) and 2 (filtering).
"""
from __future__ import annotations

import numpy as np

from lib.validate import check_grammar, check_int, check_real

#: The book's main setting (chapters 1-5): q symbols, 2**depth leaves, logit scale sigma, and the
#: grammar seed whose tensor matches the authors' reference generator (arXiv 2408.15138, seed 0).
BOOK_SETTING = {"q": 4, "depth": 4, "sigma": 1.0, "seed": 0}


def random_grammar(q: int, sigma: float = 1.0, seed: int = 0) -> np.ndarray:
    """Draw the paper's sparse production tensor.

    The ``q**2`` ordered child pairs ``(b, c)`` are shuffled and cut into ``q`` disjoint blocks
    of ``q``; parent ``a`` emits only the pairs of block ``a``, with weights
    ``softmax(sigma * N(0, 1))``. Every pair has exactly one parent, so the grammar is
    unambiguous. The random stream (legacy ``RandomState(seed)``: shuffle, then one normal per
    pair) reproduces the authors' reference generator bit for bit.

    Parameters
    ----------
    q : int
        Alphabet size, ``q >= 2``.
    sigma : float
        Standard deviation of the logits; ``0`` gives uniform weights within each block.
    seed : int
        Grammar seed.

    Returns
    -------
    M : numpy.ndarray, shape (q, q, q), float64
        ``M[a, b, c] = P(left = b, right = c | parent = a)``.
    """
    q = check_int("q", q, 2)
    sigma = check_real("sigma", sigma, lo=0.0)
    seed = check_int("seed", seed, 0)
    rng = np.random.RandomState(seed)
    pairs = [(b, c) for b in range(q) for c in range(q)]
    rng.shuffle(pairs)
    logits = sigma * rng.standard_normal(q * q)
    M = np.zeros((q, q, q))
    for a in range(q):
        block = slice(a * q, (a + 1) * q)
        weights = np.exp(logits[block] - logits[block].max())
        b, c = np.array(pairs[block]).T
        M[a, b, c] = weights / weights.sum()
    return M


def child_marginals(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(M_L, M_R)``, the one-child transition matrices, each of shape (q, q).

    ``M_L[a, b] = sum_c M[a, b, c]`` and ``M_R[a, c] = sum_b M[a, b, c]``.
    """
    M = check_grammar(M)
    return M.sum(axis=2), M.sum(axis=1)


def path_marginals(M: np.ndarray, k: int) -> np.ndarray:
    """Root-to-node transition matrices of the ``2**k`` nodes of level ``k``.

    Node ``j`` is reached by the binary digits of ``j`` (most significant first, 0 = left),
    so ``T[j] = prod over digits of (M_L or M_R)``, multiplied from the root down.

    Returns
    -------
    T : numpy.ndarray, shape (2**k, q, q)
        ``T[j, a, x] = P(node j of level k = x | root = a)`` under the full model.
    """
    M_L, M_R = child_marginals(M)
    k = check_int("k", k, 0)
    T = np.eye(M.shape[0])[None]
    for _ in range(k):
        T = np.stack([T @ M_L, T @ M_R], axis=1).reshape(-1, *M_L.shape)
    return T


def _subpath(M_L: np.ndarray, M_R: np.ndarray, bits: int, length: int) -> np.ndarray:
    """Transition matrix along ``length`` steps whose directions are the bits of ``bits`` (MSB first)."""
    P = np.eye(len(M_L))
    for t in range(length - 1, -1, -1):
        P = P @ (M_R if (bits >> t) & 1 else M_L)
    return P


def pair_marginals(M: np.ndarray, depth: int, k: int = 0) -> np.ndarray:
    """Exact joint laws of every pair of leaves under the ``k``-filtered model.

    Leaves ``i`` and ``j`` meet at their lowest common ancestor, ``h = bit_length(i ^ j)`` levels
    above the leaves. If that ancestor lies below level ``k`` the pair is generated as in the full
    model (root -> ancestor -> one rule -> two paths); otherwise the two leaves are independent
    given the root.

    Returns
    -------
    numpy.ndarray, shape (2**depth, 2**depth, q, q)
        ``P[i, j, x, y] = P(leaf i = x, leaf j = y)``; the diagonal blocks are ``diag(P(leaf i))``.
    """
    M = check_grammar(M)
    depth = check_int("depth", depth, 0)
    k = check_int("k", k, 0, depth)
    q, L = M.shape[0], 2**depth
    M_L, M_R = child_marginals(M)
    prior = np.full(q, 1.0 / q)
    T = path_marginals(M, depth)                                   # root -> leaf, (L, q, q)
    P = np.zeros((L, L, q, q))
    for i in range(L):
        P[i, i] = np.diag(prior @ T[i])
        for j in range(i + 1, L):
            h = (i ^ j).bit_length()
            if depth - h < k:
                P[i, j] = np.einsum("a,ax,ay->xy", prior, T[i], T[j])
            else:
                top = prior @ _subpath(M_L, M_R, i >> h, depth - h)                 # ancestor law
                D_i = _subpath(M_L, M_R, i, h - 1)                                   # left child -> i
                D_j = _subpath(M_L, M_R, j, h - 1)                                   # right child -> j
                P[i, j] = np.einsum("z,zbc,bx,cy->xy", top, M, D_i, D_j)
            P[j, i] = P[i, j].T
    return P


_BINS = 1024          # resolution of the inverse-CDF lookup tables
_CHUNK = 1 << 14      # trees drawn per vectorised block (keeps temporaries in cache)


class _InverseCDF:
    """Exact inverse-CDF sampler for the rows of a stochastic matrix ``P`` of shape (R, C).

    A lookup table gives, for each of ``_BINS`` equal slices of [0, 1), the first column whose
    cumulative probability exceeds the slice start; a few vectorised correction steps then move
    each draw to the first column whose cumulative probability exceeds its uniform ``u``. The
    result is exactly that of ``searchsorted`` (zero-probability columns are never drawn), at a
    fraction of the cost.
    """

    def __init__(self, P: np.ndarray):
        cdf = np.cumsum(P, axis=1)
        cdf[:, -1] = 1.0
        grid = np.arange(_BINS) / _BINS
        self.n_cols = P.shape[1]
        self.cdf = cdf.ravel()
        self.start = (cdf[:, None, :] <= grid[None, :, None]).sum(-1).ravel()   # (R * _BINS,)

    def draw(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One column index per entry of the integer array ``rows``; same shape as ``rows``."""
        rows = rows.ravel()
        u = rng.random(rows.shape)
        col = self.start[rows * _BINS + (u * _BINS).astype(np.int64)]
        base = rows * self.n_cols
        todo = np.flatnonzero(u >= self.cdf[base + col])
        while todo.size:
            col[todo] += 1
            todo = todo[u[todo] >= self.cdf[base[todo] + col[todo]]]
        return col


def sample_tree(M: np.ndarray, depth: int, n: int, k: int = 0, seed: int = 0) -> list[np.ndarray]:
    """Exact draws of whole trees from the ``k``-filtered model.

    Parameters
    ----------
    M : array_like, shape (q, q, q)
        Row-stochastic production tensor.
    depth : int
        Number of levels below the root; sequences have ``2**depth`` leaves.
    n : int
        Number of trees.
    k : int
        Filtering level in ``0..depth``; ``0`` is the full model.
    seed : int
        Data seed of the ``numpy.random.Generator`` behind every draw.

    Returns
    -------
    levels : list of numpy.ndarray
        ``levels[i]`` has shape (n, 2**i) and dtype int64. Levels strictly between the root and
        level ``k`` do not exist in the filtered model and are filled with ``-1``.
    """
    M = check_grammar(M)
    depth = check_int("depth", depth, 0)
    n = check_int("n", n, 0)
    k = check_int("k", k, 0, depth)
    seed = check_int("seed", seed, 0)
    q = M.shape[0]
    rng = np.random.default_rng(seed)
    star = _InverseCDF(path_marginals(M, k).reshape(-1, q))     # rows (j, root) of level k
    rule = _InverseCDF(M.reshape(q, q * q))                      # rows: parent; cols: b * q + c
    children = np.array([[b, c] for b in range(q) for c in range(q)])
    levels = [np.full((n, 2**i), -1, dtype=np.int64) for i in range(depth + 1)]
    for lo in range(0, n, _CHUNK):
        part = slice(lo, min(lo + _CHUNK, n))
        root = rng.integers(q, size=(part.stop - lo, 1))
        levels[0][part] = root
        if k > 0:
            levels[k][part] = star.draw(np.arange(2**k) * q + root, rng).reshape(root.shape[0], -1)
        for i in range(k, depth):
            pair = rule.draw(levels[i][part], rng)
            levels[i + 1][part] = children[pair].reshape(root.shape[0], -1)
    return levels


def sample(M: np.ndarray, depth: int, n: int, k: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Exact draws of ``(root, leaves)`` from the ``k``-filtered model.

    Same arguments and random stream as :func:`sample_tree`.

    Returns
    -------
    roots : numpy.ndarray, shape (n,), int64
    leaves : numpy.ndarray, shape (n, 2**depth), int64
    """
    levels = sample_tree(M, depth, n, k=k, seed=seed)
    return levels[0][:, 0], levels[-1]

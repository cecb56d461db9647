"""Brute-force reference for the tests: enumerate every node assignment of a tiny filtered tree.

Deliberately independent of `lib.bp`: the joint law is built by multiplying factors over all
``q**(number of nodes)`` assignments, and the path marginals of the filtered star come from
marginalising that enumeration of the full model, not from `lib.tree.path_marginals`.
"""
import itertools

import numpy as np


def _full_joint(M, depth):
    """All assignments of the full tree's nodes (levels 0..depth) and their probabilities."""
    q = M.shape[0]
    n_nodes = 2 ** (depth + 1) - 1                      # heap order: node h has children 2h+1, 2h+2
    X = np.array(list(itertools.product(range(q), repeat=n_nodes)))
    p = np.full(len(X), 1.0 / q)
    for h in range(2**depth - 1):
        p *= M[X[:, h], X[:, 2 * h + 1], X[:, 2 * h + 2]]
    return X, p


def _level(X, depth, i):
    """Columns of the level-i nodes in heap order."""
    return X[:, 2**i - 1: 2 ** (i + 1) - 1]


def path_matrices(M, depth, k):
    """T[j, a, x] = P(level-k node j = x | root = a), by enumeration of the full model."""
    q = M.shape[0]
    X, p = _full_joint(M, depth)
    nodes = _level(X, depth, k)
    T = np.zeros((2**k, q, q))
    for j in range(2**k):
        np.add.at(T[j], (X[:, 0], nodes[:, j]), p)
    return T / T.sum(axis=2, keepdims=True)


def joint_root_leaves(M, depth, k):
    """P(root, leaves) under the k-filtered model as an array of shape (q, q, ..., q): root first."""
    q = M.shape[0]
    T = path_matrices(M, depth, k)
    # The filtered model: root, level-k nodes, then the full rule below level k.
    n_below = 2 ** (depth + 1) - 2**k                  # nodes on levels k..depth
    X = np.array(list(itertools.product(range(q), repeat=1 + n_below)))
    root, below = X[:, 0], X[:, 1:]                    # below: heap order restricted to levels >= k
    offsets = np.cumsum([0] + [2**i for i in range(k, depth + 1)])
    level = {i: below[:, offsets[i - k]: offsets[i - k + 1]] for i in range(k, depth + 1)}
    p = np.full(len(X), 1.0 / q)
    for j in range(2**k):
        p *= T[j][root, level[k][:, j]]
    for i in range(k, depth):
        for j in range(2**i):
            p *= M[level[i][:, j], level[i + 1][:, 2 * j], level[i + 1][:, 2 * j + 1]]
    P = np.zeros((q,) * (1 + 2**depth))
    np.add.at(P, (root, *level[depth].T), p)
    return P


def root_posterior(P, leaves):
    """P(root | observed leaves); leaves with value q are summed over."""
    q = P.shape[0]
    out = []
    for x in leaves:
        idx = tuple(slice(None) if v == q else v for v in x)
        joint = P[(slice(None),) + idx].reshape(q, -1).sum(axis=1)
        out.append(joint / joint.sum())
    return np.array(out)


def leaf_posterior(P, leaves):
    """P(x_i | observed leaves other than i) for every position i."""
    q = P.shape[0]
    leaf_joint = P.sum(axis=0)
    out = np.zeros(leaves.shape + (q,))
    for s, x in enumerate(leaves):
        for i in range(len(x)):
            idx = [slice(None) if (v == q or t == i) else v for t, v in enumerate(x)]
            sub = leaf_joint[tuple(idx)]
            kept = [t for t in range(len(x)) if t == i or x[t] == q]
            sub = np.moveaxis(sub, kept.index(i), 0).reshape(q, -1).sum(axis=1)
            out[s, i] = sub / sub.sum()
    return out

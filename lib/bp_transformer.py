"""Belief Propagation built into an encoder by hand: exact root posteriors, no training.

The book's construction (chapter 5, "BP built into an encoder by hand"). It needs an unambiguous
grammar: every child pair ``(b, c)`` has one parent ``par(b, c)`` (as ``tree.random_grammar``'s).
Clean leaves then fix every node, so a clean block's inside message is a one-hot *parse*. With one
masked leaf the blocks on its path hold ``q`` hypotheses: were the leaf ``s``, the block's top
would be ``path_s``, with log-weight ``w_s`` = the sum of ``log M[par(b, c), b, c]`` over the
rules on the path, and BP's message is ``nu(a) ∝ sum_s [path_s = a] exp(w_s)``. Residual stream
of every token (width ``d = depth + 3q + q**2``; the paper's is ``q(q + 2) + depth``, 28 against
our 32 for q = depth = 4: our q log-weights have channels of their own):

- ``sigma`` (depth): the position's bits as +-1 (replaces the sinusoidal encoding);
- ``A`` (q): the parse of the token's current block, 0 if the block holds the mask;
- ``B`` (q): the sibling block's parse, written by attention and cleared by the feed-forward;
- ``H`` (q x q): ``H[s, a] = [path_s = a]`` in the masked block, 0 elsewhere;
- ``w`` (q): the hypotheses' log-weights, 0 outside the masked block.

Layer ``t`` joins sibling blocks of size ``2**(t-1)``. Its one head averages the sibling block:
the logit (``BETA`` times the agreement of the position bits above the block's bit, minus that at
the bit) is ``2 BETA`` lower on every other key, and ``exp(-2 BETA)`` is 0 in float64 (hard
attention as the limit of large logits). A block's tokens share one state, so the average copies
it: ``A -> B``, ``H -> H``, ``w -> w`` (only one sibling can hold the mask). Each ReLU unit is an
AND of 0/1 inputs, ``relu(x + y + g - 2)`` for a child pair (b, c) and the token's side g; it
writes the parent's parse, or moves hypothesis s to ``par(b, c)`` and adds the rule's log-weight
to ``w_s``. Units are exactly 0 or 1; only the log-weight additions round.

For ``k >= 1``, after ``depth - k`` layers one more feed-forward (attention off) ANDs the parse
``x`` (or ``path_s``) with the k position bits of the token's level-k node ``j`` and writes
``log T[j, a, x]`` into ``H``. The readout sums the tokens (flatten-then-linear, the same weights
at every position) into joint logits ``Z[s, a]`` of (masked leaf, root): ``log p(root)`` is the
marginal over ``s`` of ``softmax(Z)``, the masked leaf's posterior the marginal over ``a``.
Departures from `lib.transformer`: no LayerNorm or dropout, +-1 position bits, hard attention,
``q**2`` joint classes marginalised after the softmax, zero probabilities as logits ``-gap``
(``exp`` underflows to 0). Layers: ``depth`` for ``k = 0``, ``depth - k + 1`` for ``k >= 1``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lib.transformer import SelfAttention
from lib.tree import path_marginals
from lib.validate import check_grammar, check_int

BETA = 400.0      # attention logit per agreeing position bit; exp(-2 * BETA) is 0 in float64
MARGIN = 750.0    # log-probability gap beyond which exp() underflows to 0 in float64
MAX_DEPTH = 10    # 2**depth tokens; the filtering feed-forward has 2**k * (q + q**2) units


class Layout:
    """Channel indices of the residual stream, width ``d = depth + 3 q + q**2``."""

    def __init__(self, q: int, depth: int):
        self.q, self.depth = q, depth
        self.sigma = np.arange(depth)                           # position bits, +-1
        self.A = depth + np.arange(q)                           # own block's parse
        self.B = depth + q + np.arange(q)                       # sibling block's parse
        self.H = depth + 2 * q + np.arange(q * q).reshape(q, q)   # H[s, a]
        self.w = depth + 2 * q + q * q + np.arange(q)           # log-weights w[s]
        self.d = depth + 3 * q + q * q


class _Units:
    """ReLU units added one at a time: ``relu(sum(c * x[i]) + bias)`` times a column of outputs."""

    def __init__(self, d: int):
        self.d, self.w1, self.b1, self.w2 = d, [], [], []

    def add(self, inputs, bias, outputs):
        for rows, pairs in ((self.w1, inputs), (self.w2, outputs)):   # (channel, coefficient)
            rows.append(np.zeros(self.d))
            for i, c in pairs:
                rows[-1][i] += c
        self.b1.append(bias)

    def load(self, layer: "BPEncoderLayer"):
        with torch.no_grad():
            layer.linear1.weight.copy_(torch.tensor(np.array(self.w1)))
            layer.linear1.bias.copy_(torch.tensor(np.array(self.b1)))
            layer.linear2.weight.copy_(torch.tensor(np.array(self.w2).T))
            layer.linear2.bias.zero_()


class BPEncoderLayer(nn.Module):
    """``x = x + attn(x)``, ``x = x + W2 relu(W1 x + b1)``: `lib.transformer`'s layer without
    LayerNorm or dropout, one head (`lib.transformer.SelfAttention`)."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.self_attn = SelfAttention(d_model, 1, 0.0)
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map (B, L, d) to (B, L, d); also return the attention pattern (B, 1, L, L)."""
        a, pattern = self.self_attn(x)
        x = x + a
        return x + self.linear2(F.relu(self.linear1(x))), pattern


class BPTransformer(nn.Module):
    """The hand-set encoder; build it with :func:`build`. Float64 throughout."""

    def __init__(self, q: int, depth: int, k: int, d_ffs: list[int], gap: float):
        super().__init__()
        self.q, self.depth, self.k, self.gap = q, depth, k, gap
        self.layout = Layout(q, depth)
        d = self.layout.d
        self.embed = nn.Embedding(q + 1, d)
        self.register_buffer("pe", torch.zeros(2**depth, d), persistent=False)
        self.layers = nn.ModuleList(BPEncoderLayer(d, f) for f in d_ffs)
        self.readout = nn.Linear(d, q * q)
        self.n_layers, self.d_model = len(d_ffs), d

    def check(self, x, n_masked: tuple[int, int] = (0, 1)) -> torch.Tensor:
        """``x`` as a LongTensor (n, 2**depth) of ids in ``0..q`` (``q`` = mask), with
        ``n_masked[0]..n_masked[1]`` masked leaves per row; raises ValueError otherwise."""
        x = torch.as_tensor(np.asarray(x), dtype=torch.long)
        if x.ndim != 2 or len(x) == 0 or x.shape[1] != 2**self.depth:
            raise ValueError(f"x must have shape (n >= 1, {2**self.depth}), got {tuple(x.shape)}")
        if x.min() < 0 or x.max() > self.q:
            raise ValueError(f"x must hold ids in 0..{self.q} ({self.q} = masked leaf)")
        masks = (x == self.q).sum(1)
        if masks.min() < n_masked[0] or masks.max() > n_masked[1]:
            raise ValueError(f"x must have {n_masked[0]}..{n_masked[1]} masked leaves per "
                             f"sequence (exact for at most one), got up to {int(masks.max())}")
        return x

    def error_bound(self) -> float:
        """Bound on max |p - p_BP| from float64 rounding (derived in tests/test_bp_transformer.py).

        Unit inputs are exact; a logit sums at most ``2 L + d`` real terms no larger than ``gap``,
        the log-softmax and marginal triple its error, ``|dp| <= 2 |d log p|``; slack 8, plus
        ``1e-14`` for BP's own rounding.
        """
        eps = np.finfo(np.float64).eps
        return 48 * (2 * 2**self.depth + self.d_model) * eps * self.gap + 1e-14

    def joint_logits(self, x: torch.Tensor, return_attention: bool = False):
        """Joint logits ``Z[s, a]`` (n, q, q) of (masked leaf = s, root = a), unchecked.

        With no masked leaf ``Z`` does not depend on ``s``. Also returns every layer's pattern
        (n, 1, L, L), queries on axis 2, if ``return_attention``.
        """
        h = self.embed(x) + self.pe                                   # (n, L, d)
        patterns = []
        for layer in self.layers:
            h, pattern = layer(h)
            patterns.append(pattern)
        Z = self.readout(h.sum(1)).view(-1, self.q, self.q)           # (n, q, q)
        return (Z, patterns) if return_attention else Z

    def forward(self, x, max_masked: int = 1) -> torch.Tensor:
        """Root log-probabilities (n, q) for leaves ``x`` (n, 2**depth); exact for at most one
        mask per row, refused beyond ``max_masked``."""
        Z = self.joint_logits(self.check(x, (0, max_masked)))
        return Z.flatten(1).log_softmax(-1).view_as(Z).logsumexp(1)

    def leaf_log_posterior(self, x) -> torch.Tensor:
        """Log-posterior (n, q) of the masked leaf, for ``x`` with exactly one mask per row."""
        Z = self.joint_logits(self.check(x, (1, 1)))
        return Z.flatten(1).log_softmax(-1).view_as(Z).logsumexp(2)


def parents(M: np.ndarray) -> np.ndarray:
    """``par[b, c]`` (q, q), the unique ``a`` with ``M[a, b, c] > 0``; ValueError otherwise."""
    M = check_grammar(M)
    count = (M > 0).sum(0)
    bad = count[count != 1]
    if bad.size:
        raise ValueError("M must give every child pair (b, c) exactly one parent a with "
                         f"M[a, b, c] > 0 (an unambiguous grammar); {bad.size} of {count.size} "
                         f"pairs have {sorted(set(bad.tolist()))} parents")
    return (M > 0).argmax(0)


def _sibling_attention(layer: BPEncoderLayer, lay: Layout, bit: int):
    """One head that averages the sibling block (same bits above ``bit``, the other at ``bit``)
    and copies its state: ``A -> B``, ``H -> H``, ``w -> w``."""
    d = lay.d
    Wq, Wk, Wv = np.zeros((d, d)), np.zeros((d, d)), np.zeros((d, d))
    scale = BETA * math.sqrt(d)                                    # undoes the 1/sqrt(d_head)
    for r in range(bit, lay.depth):
        Wq[r, r] = -scale if r == bit else scale
        Wk[r, r] = 1.0
    Wv[lay.B, lay.A] = 1.0
    for ch in (lay.H.ravel(), lay.w):
        Wv[ch, ch] = 1.0
    with torch.no_grad():
        layer.self_attn.in_proj_weight.copy_(torch.tensor(np.vstack([Wq, Wk, Wv])))
        layer.self_attn.in_proj_bias.zero_()
        layer.self_attn.out_proj.weight.copy_(torch.eye(d))
        layer.self_attn.out_proj.bias.zero_()


def _join_units(lay: Layout, par: np.ndarray, log_rule: np.ndarray, bit: int) -> _Units:
    """Feed-forward units joining the two children of every block into their parent.

    For each side of the token's own block (left: position bit ``bit`` unset) the clean parses
    of the (left, right) children sit in ``(L, R) = (A, B)`` or ``(B, A)``, and ``g`` is 1 on
    that side. Per child pair (b, c) one unit fires when both are clean, one when the left child
    is masked (hypothesis s at b), one when the right child is (hypothesis s at c).
    """
    q, H, u = lay.q, lay.H, _Units(lay.d)
    for side, (L, R) in ((-0.5, (lay.A, lay.B)), (0.5, (lay.B, lay.A))):
        g = [(lay.sigma[bit], side)]                  # relu(x + y + g - 2), g = (1 -+ sigma) / 2
        for b in range(q):
            for c in range(q):
                a = par[b, c]
                u.add([(L[b], 1), (R[c], 1)] + g, -1.5, [(lay.A[a], 1)])    # both clean
                for s in range(q):
                    move = [(lay.w[s], log_rule[b, c]), (H[s, a], 1)]
                    u.add([(H[s, b], 1), (R[c], 1)] + g, -1.5, move + [(H[s, b], -1)])
                    u.add([(L[b], 1), (H[s, c], 1)] + g, -1.5, move + [(H[s, c], -1)])
    for x in range(q):                                # clear the children's parses
        u.add([(lay.A[x], 1)], 0.0, [(lay.A[x], -1)])
        u.add([(lay.B[x], 1)], 0.0, [(lay.B[x], -1)])
    return u


def _star_units(lay: Layout, log_T: np.ndarray, k: int) -> _Units:
    """Units writing ``log T[j, a, x]`` into ``H[s, a]`` for the level-k node j of each token.

    A unit is the AND of a parse ``A[x]`` (every ``s``) or a hypothesis ``H[s, x]`` (that ``s``)
    with the k position bits of ``j``: ``relu(x + sum_r match_r - k)``.
    """
    q, H, u = lay.q, lay.H, _Units(lay.d)
    for j in range(2**k):
        bits = [(lay.sigma[lay.depth - k + r], 0.5 if (j >> r) & 1 else -0.5) for r in range(k)]
        for x in range(q):
            out = [(H[s, a], log_T[j, a, x]) for s in range(q) for a in range(q)]
            u.add([(lay.A[x], 1)] + bits, -0.5 * k, out)
            for s in range(q):
                out = [(H[s, a], log_T[j, a, x]) for a in range(q)] + [(H[s, x], -1)]
                u.add([(H[s, x], 1)] + bits, -0.5 * k, out)
    return u


def build(M, depth: int, k: int = 0) -> BPTransformer:
    """An encoder whose forward pass is exact BP's root log-posterior under filtering level k.

    Parameters
    ----------
    M : array_like, shape (q, q, q)
        Unambiguous production tensor: each child pair has exactly one parent.
    depth : int
        Tree depth in ``1..MAX_DEPTH``; sequences have ``2**depth`` leaves.
    k : int
        Filtering level in ``0..depth``.

    Returns
    -------
    BPTransformer
        ``model(x)`` maps leaves (n, 2**depth) with at most one mask (id q) to (n, q) root
        log-probabilities; ``model.leaf_log_posterior(x)`` gives the masked leaf's (n, q).
    """
    par = parents(M)
    M = check_grammar(M)
    depth = check_int("depth", depth, 1, MAX_DEPTH)
    k = check_int("k", k, 0, depth)
    q, n_join = M.shape[0], depth - k
    log_rule = np.log(M[par, np.arange(q)[:, None], np.arange(q)[None, :]])   # (b, c)
    T = path_marginals(M, k)
    finite = np.log(T[T > 0])
    W = depth * np.abs(log_rule).max()                  # bound on |w_s|
    gap = float(np.ceil(MARGIN + W + 2**k * np.abs(finite).max()))
    log_T = np.where(T > 0, np.log(np.where(T > 0, T, 1.0)), -gap)
    lay = Layout(q, depth)
    units = [_join_units(lay, par, log_rule, t) for t in range(n_join)]
    if k > 0:
        units.append(_star_units(lay, log_T, k))
    with torch.random.fork_rng(devices=[]):          # leave the caller's random stream alone
        model = BPTransformer(q, depth, k, [len(u.b1) for u in units], gap).double()
    for t, (layer, u) in enumerate(zip(model.layers, units)):
        u.load(layer)
        if t < n_join:
            _sibling_attention(layer, lay, t)
        else:                                           # filtering layer: attention switched off
            for p in layer.self_attn.parameters():
                p.data.zero_()
    _load_inputs_and_readout(model, lay, gap)
    return model.eval().requires_grad_(False)


def _load_inputs_and_readout(model: BPTransformer, lay: Layout, gap: float):
    """Token embedding, +-1 position bits, and the joint readout ``Z[s, a]``."""
    q, depth, k = lay.q, lay.depth, model.k
    E = np.zeros((q + 1, lay.d))
    E[np.arange(q), lay.A] = 1.0                        # a clean leaf is its own parse
    E[q, lay.H[np.arange(q), np.arange(q)]] = 1.0       # the mask: hypothesis s has path s
    pos = np.arange(2**depth)
    pe = np.zeros((2**depth, lay.d))
    pe[:, lay.sigma] = 2.0 * ((pos[:, None] >> lay.sigma) & 1) - 1.0
    R = np.zeros((q * q, lay.d))                        # row s * q + a
    row, (s, a) = np.arange(q * q), np.divmod(np.arange(q * q), q)
    R[row, lay.w[s]] = 1.0
    R[row, lay.H[s, a]] = gap if k == 0 else 1.0        # root's path_s, or summed log T
    if k == 0:
        R[row, lay.A[a]] = gap                          # the root's parse
    with torch.no_grad():
        model.embed.weight.copy_(torch.tensor(E))
        model.pe.copy_(torch.tensor(pe))
        model.readout.weight.copy_(torch.tensor(R / 2 ** (depth - k)))   # a node's tokens: mean
        model.readout.bias.zero_()


def leave_one_out(model: BPTransformer, leaves) -> np.ndarray:
    """P(x_i | x_{-i}) for every position of clean sequences (n, L): one masked copy per i.

    Returns
    -------
    numpy.ndarray, shape (n, L, q)
        The masked-token optimum, as `lib.bp.leaf_posterior` on the clean sequences.
    """
    x = model.check(leaves, (0, 0))
    n, L = x.shape
    copies = x.repeat_interleave(L, 0)
    copies[torch.arange(n * L), torch.arange(L).repeat(n)] = model.q
    return model.leaf_log_posterior(copies).exp().view(n, L, -1).numpy()

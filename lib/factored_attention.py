"""One layer of factored self-attention: positions decide where to look, tokens what to send.

Its logits ``z_i(a) = sum_{j != i} A_ij V[a, s_j]`` have the form of the generalized Potts
conditionals (`lib.potts`) with ``A = beta J`` and ``V = U``, so its single-token MLM loss is
minus the log pseudo-likelihood per site (`lib.pseudolikelihood.pl_objective`). Introduced in
chapter 6.
"""
from __future__ import annotations

import torch
from torch import nn

from lib.potts import check_sequences
from lib.validate import check_int, check_real


class FactoredAttention(nn.Module):
    """One layer of factored self-attention: positions decide where to look, tokens what to send.

    ``logits[b, i, a] = sum_{j != i} A_ij V[a, s_bj]``, where ``A`` (L, L) comes from free
    position scores (no input dependence), with its diagonal removed, and ``V`` (q, q) maps a
    token's one-hot vector to its value (the output matrix absorbed). No residual, LayerNorm or MLP.

    Parameters
    ----------
    L, q : int
        Sequence length and number of colours; the token id ``q`` is the mask, whose value is zero.
    softmax : bool
        ``False``: ``A`` is the score matrix itself (signed, as ``beta J``); ``True``: each row is a
        softmax over ``j != i`` (non-negative, rows summing to one).
    init_seed : int
        Seed of the initial scores and values, ``N(0, 0.1^2)``.
    """

    def __init__(self, L: int, q: int, *, softmax: bool = False, init_seed: int = 0):
        super().__init__()
        self.L, self.q, self.softmax = check_int("L", L, 2), check_int("q", q, 2), bool(softmax)
        g = torch.Generator().manual_seed(check_int("init_seed", init_seed, 0))
        self.scores = nn.Parameter(0.1 * torch.randn(L, L, generator=g))
        self.V = nn.Parameter(0.1 * torch.randn(q, q, generator=g))

    def attention(self) -> torch.Tensor:
        """The attention matrix ``A`` (L, L), queries on rows, keys on columns, ``A_ii = 0``."""
        diag = torch.eye(self.L, dtype=torch.bool)
        if self.softmax:
            return torch.softmax(self.scores.masked_fill(diag, -torch.inf), dim=1)
        return self.scores.masked_fill(diag, 0.0)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """Logits (B, L, q) for every site of ``s`` (B, L) (ids ``0..q``, ``q`` = mask)."""
        if s.dim() != 2 or s.shape[1] != self.L:
            raise ValueError(f"s must have shape (B, {self.L}), got {tuple(s.shape)}")
        if s.numel() and (s.min() < 0 or s.max() > self.q):
            raise ValueError(f"s: ids must be in 0..{self.q} (colours, then the mask {self.q}), "
                             f"got values in {int(s.min())}..{int(s.max())}")
        values = nn.functional.pad(self.V.T, (0, 0, 0, 1))[s]    # (B, L, q): V[a, s_j]; mask: 0
        return torch.einsum("ij,bja->bia", self.attention(), values)


def fit_factored(layer: FactoredAttention, s, lam: float = 1e-4, max_iter: int = 500) -> float:
    """Train a factored layer by full-batch L-BFGS on its MLM loss plus ``lam (||A||^2 + ||V||^2)``.

    With ``A_ii = 0`` the layer never sees site ``i`` when predicting it, so one pass over ``s``
    gives the single-token MLM loss of every site at once (`lib.potts_mlm.masked_logits` equals
    ``layer(s)``): the objective is exactly `lib.pseudolikelihood.pl_objective` with ``K = A``.
    Returns the final objective.
    """
    lam = check_real("lam", lam, lo=0.0)
    s = torch.as_tensor(check_sequences(s, layer.L, layer.q))
    opt = torch.optim.LBFGS(layer.parameters(), max_iter=check_int("max_iter", max_iter, 1),
                            history_size=50, tolerance_grad=1e-10, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(layer(s).reshape(-1, layer.q), s.reshape(-1))
        loss = loss + lam * (layer.attention().square().sum() + layer.V.square().sum())
        loss.backward()
        return loss

    opt.step(closure)
    return closure().item()

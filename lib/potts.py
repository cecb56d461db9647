"""The generalized Potts model of Rende, Gerace, Laio & Goldt (arXiv 2304.07235) and factored attention.

A sequence ``s = (s_1, ..., s_L)`` of colours ``s_i in 0..q-1`` has energy

    H(s) = -1/2 sum_{i != j} J_ij U[s_i, s_j],

with ``J`` (L, L) symmetric with zero diagonal (which sites interact) and ``U`` (q, q) symmetric
(how colours interact), and probability ``p(s) ∝ exp(-beta H(s))``. The single-site conditionals
that masked language modelling (MLM) learns are

    p(s_i = a | s_{-i}) = softmax_a( beta sum_{j != i} J_ij U[a, s_j] ).

One layer of *factored* attention, whose attention ``A`` depends on positions only and whose values
``V`` depend on tokens only, has logits ``z_i(a) = sum_{j != i} A_ij V[a, s_j]``: the same family
with ``A = beta J`` and ``V = U``. Its MLM loss is minus the log pseudo-likelihood (PL) per site.

Introduced in chapter 6. Sequences are int64 arrays of shape (n, L); the value ``q`` marks a
masked site where a model accepts masks.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import log_softmax, logsumexp
from torch import nn

from lib.replica import symmetric_gaussian
from lib.transformer import ModelConfig, Transformer
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
            raise ValueError(f"{name} must be a square matrix of shape ({size}, {size}), got shape {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError(f"{name} must be finite (no NaN or inf entries)")
        if not np.allclose(X, X.T, rtol=0, atol=_SYMMETRY_TOL):
            raise ValueError(f"{name} must be symmetric, max |{name} - {name}.T| = {np.abs(X - X.T).max():.3g}")
    if J.shape[0] < 2:
        raise ValueError(f"J: the number of sites L must be >= 2, got L = {J.shape[0]}")
    if np.any(np.diag(J) != 0):
        raise ValueError("J must have a zero diagonal (no self-coupling J_ii)")
    if U.shape[0] < 2:
        raise ValueError(f"U: the number of colours q must be >= 2, got q = {U.shape[0]}")
    return J, U, check_real("beta", beta, lo=0.0)


def check_sequences(s, L: int, q: int) -> np.ndarray:
    """Check a batch of colour sequences, shape (n, L) with values in ``0..q-1``; return int64."""
    s = np.asarray(s)
    if s.ndim != 2 or s.shape[1] != L:
        raise ValueError(f"s must have shape (n, {L}), got shape {s.shape}; wrap one sequence as s[None]")
    if s.size and not np.issubdtype(s.dtype, np.integer):
        raise ValueError(f"s must hold integer colours in 0..{q - 1}, got dtype {s.dtype}")
    if s.size and (s.min() < 0 or s.max() >= q):
        raise ValueError(f"s: colours must be in 0..{q - 1}, got values in {s.min()}..{s.max()}")
    return s.astype(np.int64, copy=False)


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
    K, V = np.asarray(K, dtype=np.float64), np.asarray(V, dtype=np.float64)
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


# --- the inverse problem: pseudo-likelihood on the factorized couplings K_ij V[a, b] -------------

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


# --- the attention layer and masked language modelling -------------------------------------------

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
        values = nn.functional.pad(self.V.T, (0, 0, 0, 1))[s]    # (B, L, q): V[a, s_j], 0 for the mask
        return torch.einsum("ij,bja->bia", self.attention(), values)


def vanilla_transformer(L: int, q: int, n_layers: int, *, d_model: int = 32, n_heads: int = 4,
                        d_ff: int = 128, init_seed: int = 0) -> Transformer:
    """The baseline: chapter 4's encoder (`lib.transformer`) set up for MLM on Potts sequences.

    Token embedding of ``q + 1`` ids (``q`` = mask), sinusoidal positions, ``n_layers`` post-LN
    layers with softmax attention and an MLP, a per-site readout to ``q`` logits; no dropout.
    The weights are drawn from ``init_seed`` without touching torch's global random state.
    """
    cfg = ModelConfig(vocab=q + 1, seq_len=L, n_classes=q, task="mlm", d_model=d_model,
                      n_layers=n_layers, n_heads=n_heads, d_ff=d_ff, dropout=0.0)
    with torch.random.fork_rng():
        torch.manual_seed(check_int("init_seed", init_seed, 0))
        return Transformer(cfg)


def masked_logits(model: nn.Module, s: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Logits (B, L, q) for each site ``i`` of ``s`` (B, L), predicted with site ``i`` alone masked.

    Runs the model on the ``B * L`` copies of the batch that have one site masked each.
    """
    B, L = s.shape
    site = torch.arange(L)
    x = s[:, None, :].repeat(1, L, 1)                             # (B, L copies, L)
    x[:, site, site] = mask_id
    return model(x.reshape(B * L, L)).reshape(B, L, L, -1)[:, site, site]


def mlm_loss(model: nn.Module, s: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Single-token MLM cross-entropy averaged over all sites: ``-(1/(BL)) sum log p(s_i | s_{-i})``."""
    logits = masked_logits(model, s, mask_id)
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), s.reshape(-1))


@torch.no_grad()
def test_loss(model: nn.Module, s, mask_id: int, batch_size: int = 256) -> float:
    """MLM cross-entropy (nats) over every site of ``s`` (n, L), in eval mode, in batches."""
    batch_size = check_int("batch_size", batch_size, 1)
    was_training = model.training
    model.eval()
    s = torch.as_tensor(np.asarray(s))
    total = sum(float(mlm_loss(model, chunk, mask_id)) * len(chunk) for chunk in s.split(batch_size))
    model.train(was_training)
    return total / len(s)


def fit_factored(layer: FactoredAttention, s, lam: float = 1e-4, max_iter: int = 500) -> float:
    """Train a factored layer by full-batch L-BFGS on its MLM loss plus ``lam (||A||^2 + ||V||^2)``.

    With ``A_ii = 0`` the layer never sees site ``i`` when predicting it, so one pass over ``s``
    gives the single-token MLM loss of every site at once (`masked_logits` equals ``layer(s)``):
    the objective is exactly `pl_objective` with ``K = A``. Returns the final objective.
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


def train_mlm(model: nn.Module, s, s_val, mask_id: int, *, steps: int, batch_size: int = 128,
              lr: float = 1e-3, eval_every: int = 250, batch_seed: int = 0, mask_seed: int = 0) -> list:
    """Train any MLM model with Adam, one masked site per sequence, early-stopped on ``s_val``.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ids (B, L) in ``0..mask_id`` to logits (B, L, q).
    s, s_val : array_like of int, shape (M, L) and (M_val, L)
        Training and validation sequences.
    mask_id : int
        Id of the mask token.
    steps, batch_size, lr, eval_every : int, int, float, int
        Adam steps, sequences per step, learning rate, steps between validations.
    batch_seed, mask_seed : int
        Seeds of the mini-batches and of the masked sites.

    Returns
    -------
    history : list of (step, validation loss)
        The model is left with the parameters of the best validation loss.
    """
    s, s_val = torch.as_tensor(np.asarray(s)), np.asarray(s_val)
    steps, eval_every = check_int("steps", steps, 1), check_int("eval_every", eval_every, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    g_batch = torch.Generator().manual_seed(check_int("batch_seed", batch_seed, 0))
    g_mask = torch.Generator().manual_seed(check_int("mask_seed", mask_seed, 0))
    opt = torch.optim.Adam(model.parameters(), lr=check_real("lr", lr, lo=0.0))
    history, best, rows = [], (np.inf, None), torch.arange(batch_size)
    for step in range(1, steps + 1):
        x = s[torch.randint(len(s), (batch_size,), generator=g_batch)]      # (B, L), a copy
        site = torch.randint(x.shape[1], (batch_size,), generator=g_mask)   # one masked site each
        target = x[rows, site]
        x[rows, site] = mask_id
        loss = nn.functional.cross_entropy(model(x)[rows, site], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            history.append((step, test_loss(model, s_val, mask_id)))
            if history[-1][1] < best[0]:
                best = (history[-1][1], {k: v.clone() for k, v in model.state_dict().items()})
    model.load_state_dict(best[1])
    return history

"""Topic structure in a one-layer transformer: Li, Li & Risteski (ICML 2023, arXiv 2303.04245).

The corpus is synthetic LDA data: ``T`` topics over disjoint blocks of ``v`` words, topic ``t``
owning words ``t*v .. t*v + v - 1`` with uniform probability; each document draws its topic
mixture ``theta ~ Dirichlet(alpha 1_T)`` and then every word independently. Token ids follow the
authors' code: PAD 0, MASK 1, START 2, END 3, word ``w`` -> id ``w + 4``.

The model is the paper's simplified one-layer, one-head transformer without positions, residual
or feed-forward block; the decoder is the identity, so ``logits_i = sum_j A_ij W^V h_j``. Its
switches (frozen uniform attention, value matrix frozen to the identity or to the topic blocks,
one-hot or trained embeddings, small initialisation) give the paper's experiments. Masked
positions are removed as keys, as in the authors' code, so no query ever sees a masked token.

Introduced in chapter 7.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import digamma
from torch import nn
from tqdm.auto import tqdm

from lib.validate import check_int, check_real

PAD, MASK, START, END = 0, 1, 2, 3
N_SPECIAL = 4          # ids 0..3 are special; word w has id w + N_SPECIAL
IGNORE = -100          # label of positions that carry no loss (torch's ignore_index)


# ----------------------------------------------------------------------------- corpus
def check_topics(T, v, alpha) -> tuple[int, int, float]:
    """Validate the LDA setting: ``T >= 2`` topics, ``v >= 1`` words per topic, ``alpha > 0``."""
    T, v = check_int("T", T, 2), check_int("v", v, 1)
    alpha = check_real("alpha", alpha, 0.0)
    if alpha == 0.0:
        raise ValueError("alpha must be > 0 (Dirichlet concentration), got 0.0")
    return T, v, alpha


def topic_of_id(T: int, v: int) -> np.ndarray:
    """Topic of every token id, shape (T*v + 4,): ``(id - 4) // v`` for words, ``-1`` for specials."""
    T, v, _ = check_topics(T, v, 1.0)
    return np.concatenate([np.full(N_SPECIAL, -1), np.arange(T * v) // v])


def sample_corpus(n_docs: int, T: int = 10, v: int = 10, alpha: float = 0.1, min_len: int = 100,
                  max_len: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draw LDA documents: ``theta ~ Dir(alpha)``, then each word's topic and word independently.

    Parameters
    ----------
    n_docs : int
        Number of documents.
    T, v, alpha : int, int, float
        Topics, words per topic, Dirichlet concentration (the paper: 10, 10, 0.1).
    min_len, max_len : int
        Document length ``N`` is uniform on ``min_len..max_len`` (the paper: 100..150).
    seed : int
        Data seed.

    Returns
    -------
    tokens : numpy.ndarray, shape (n_docs, max_len + 2), int64
        ``START, words..., END`` then ``PAD``.
    theta : numpy.ndarray, shape (n_docs, T)
        Each document's topic mixture.
    """
    n_docs = check_int("n_docs", n_docs, 1)
    T, v, alpha = check_topics(T, v, alpha)
    min_len = check_int("min_len", min_len, 1)
    max_len = check_int("max_len", max_len, min_len)
    rng = np.random.default_rng(check_int("seed", seed, 0))
    theta = rng.dirichlet(np.full(T, alpha), size=n_docs)                      # (n, T)
    N = rng.integers(min_len, max_len + 1, size=n_docs)                         # (n,)
    u = rng.random((n_docs, max_len))
    z = (u[:, :, None] >= np.cumsum(theta, axis=1)[:, None, :-1]).sum(-1)       # (n, max_len) topics
    words = z * v + rng.integers(v, size=(n_docs, max_len))
    pos = np.arange(max_len + 2)[None, :]
    tokens = np.full((n_docs, max_len + 2), PAD, dtype=np.int64)
    body = (pos >= 1) & (pos <= N[:, None])
    tokens[body] = (words + N_SPECIAL)[body[:, 1:-1]]
    tokens[:, 0] = START
    tokens[np.arange(n_docs), N + 1] = END
    return tokens, theta


# ----------------------------------------------------------------------------- masking
def mask_tokens(tokens, maskable, *, mask_id: int, n_ids: int, p_select: float = 0.15,
                p_random: float = 0.1, p_keep: float = 0.1, seed: int = 0):
    """BERT's masking: select positions, then 80/10/10 replace with MASK / a random id / unchanged.

    Each ``maskable`` position is selected independently with probability ``p_select``; a row
    with none selected is redrawn until it has one (the paper's "at least one per document").
    A selected token becomes ``mask_id`` with probability ``1 - p_random - p_keep``, a uniform
    id in ``0..n_ids-1`` with probability ``p_random``, and stays unchanged otherwise.

    Parameters
    ----------
    tokens : array_like of int, shape (n, L)
    maskable : array_like of bool, shape (n, L)
        Positions that may be selected (words; never PAD, START, END).
    mask_id, n_ids : int
        The mask token and the number of ids random replacements are drawn from.
    p_select, p_random, p_keep : float
    seed : int
        Mask seed.

    Returns
    -------
    inputs : numpy.ndarray, shape (n, L), int64
        Tokens after replacement.
    labels : numpy.ndarray, shape (n, L), int64
        The original token at selected positions, ``IGNORE`` elsewhere.
    selected : numpy.ndarray, shape (n, L), bool
    """
    tokens, maskable = np.asarray(tokens, dtype=np.int64), np.asarray(maskable, dtype=bool)
    if tokens.ndim != 2 or maskable.shape != tokens.shape:
        raise ValueError(f"tokens must be (n, L) and maskable the same shape, got {tokens.shape} "
                         f"and {maskable.shape}")
    check_int("mask_id", mask_id, 0)
    n_ids = check_int("n_ids", n_ids, 1)
    if check_real("p_select", p_select, 0.0) == 0.0 or p_select > 1.0:
        raise ValueError(f"p_select must be in (0, 1], got {p_select}")
    p_mask = _p_mask(p_random, p_keep)
    rng = np.random.default_rng(check_int("seed", seed, 0))
    selected = maskable & (rng.random(tokens.shape) < p_select)
    redo = maskable.any(1) & ~selected.any(1)
    while redo.any():                      # rejection: condition each row on >= 1 selection
        selected[redo] = maskable[redo] & (rng.random((redo.sum(), tokens.shape[1])) < p_select)
        redo = maskable.any(1) & ~selected.any(1)
    u = rng.random(tokens.shape)
    inputs = tokens.copy()
    inputs[selected & (u < p_mask)] = mask_id
    rand = selected & (u >= p_mask) & (u < p_mask + p_random)
    inputs[rand] = rng.integers(n_ids, size=int(rand.sum()))
    return inputs, np.where(selected, tokens, IGNORE), selected


@dataclass(frozen=True)
class MaskedCorpus:
    """A statically masked corpus, ready for the one-layer model (all tensors on CPU).

    Attributes
    ----------
    inputs : torch.LongTensor, shape (n, L)
        Tokens after replacement.
    key_visible : torch.BoolTensor, shape (n, L)
        Keys a query may attend to: not PAD and not selected for masking.
    query_pos : torch.LongTensor, shape (n, m)
        Selected positions of each document, padded with 0 to the longest row.
    query_labels : torch.LongTensor, shape (n, m)
        True token at each query, ``IGNORE`` on padding.
    """

    inputs: torch.Tensor
    key_visible: torch.Tensor
    query_pos: torch.Tensor
    query_labels: torch.Tensor

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def batch(self, index) -> "MaskedCorpus":
        """The documents ``index`` (array of row numbers) as a smaller corpus."""
        return MaskedCorpus(*(x[index] for x in (self.inputs, self.key_visible, self.query_pos,
                                                 self.query_labels)))


def mask_corpus(tokens, T: int, v: int, p_select: float = 0.15, p_random: float = 0.1,
                p_keep: float = 0.1, seed: int = 0) -> MaskedCorpus:
    """Mask LDA documents as the authors do: words only, random ids over the whole vocabulary.

    Parameters
    ----------
    tokens : array_like of int, shape (n, L)
        Output of `sample_corpus`.
    T, v : int
        Topics and words per topic; random replacements are uniform over all ``T*v + 4`` ids,
        specials included, as in the authors' code.
    p_select, p_random, p_keep : float
        Selection probability and the random / unchanged shares (the paper: 0.15, 0.1, 0.1).
    seed : int
        Mask seed.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    T, v, _ = check_topics(T, v, 1.0)
    word = tokens >= N_SPECIAL
    inputs, labels, selected = mask_tokens(tokens, word, mask_id=MASK, n_ids=T * v + N_SPECIAL,
                                           p_select=p_select, p_random=p_random, p_keep=p_keep,
                                           seed=seed)
    return masked_corpus(inputs, labels, (tokens != PAD) & ~selected)


def masked_corpus(inputs, labels, key_visible) -> MaskedCorpus:
    """Pack the output of `mask_tokens` (and the visible keys) as a `MaskedCorpus`.

    The query positions of each row are its labelled positions in order, padded with position 0
    and label ``IGNORE`` to the longest row.
    """
    inputs, labels = np.asarray(inputs, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    selected = labels != IGNORE
    n_sel = selected.sum(1)
    m = max(int(n_sel.max()), 1)
    query_pos = np.argsort(~selected, axis=1, kind="stable")[:, :m]             # selected first
    valid = np.arange(m)[None, :] < n_sel[:, None]
    return MaskedCorpus(torch.from_numpy(inputs), torch.as_tensor(np.asarray(key_visible, dtype=bool)),
                        torch.from_numpy(np.where(valid, query_pos, 0)),
                        torch.from_numpy(np.where(valid, np.take_along_axis(labels, query_pos, 1),
                                                  IGNORE)))


def unmasked(tokens, ref_len: int = 100) -> MaskedCorpus:
    """Documents cut to their first ``ref_len`` tokens, nothing masked, every token a query.

    The authors' evaluation input for attention statistics (START + 99 words, no END for the
    paper's lengths). Returns a `MaskedCorpus` whose query labels are all ``IGNORE``.
    """
    tokens = torch.as_tensor(np.asarray(tokens, dtype=np.int64)[:, :check_int("ref_len", ref_len, 1)])
    n, L = tokens.shape
    return MaskedCorpus(tokens, tokens != PAD, torch.arange(L).expand(n, L).contiguous(),
                        torch.full((n, L), IGNORE))


# ----------------------------------------------------------------------------- Bayes-optimal loss
def bayes_loss_limit(T: int = 10, v: int = 10, alpha: float = 0.1) -> float:
    """Bayes-optimal masked-token cross-entropy for infinitely long documents, in nats.

    A long context reveals ``theta``; the masked word is then drawn from ``sum_t theta_t
    Unif(topic t)``, whose entropy is ``H(theta) + ln v`` because the topics' words are disjoint.
    Averaging over ``theta ~ Dir(alpha 1_T)`` with ``E[-theta_t ln theta_t] =
    (1/T) [psi(T alpha + 1) - psi(alpha + 1)]`` gives ``psi(T alpha + 1) - psi(alpha + 1) + ln v``.
    """
    T, v, alpha = check_topics(T, v, alpha)
    return float(digamma(T * alpha + 1) - digamma(alpha + 1) + np.log(v))


def context_predictive(counts, alpha: float) -> np.ndarray:
    """Posterior predictive topic of a new word given the topics of ``n`` observed words.

    With disjoint topics each observed word reveals its topic, so ``theta | context ~
    Dir(alpha + counts)`` and the next word's topic is ``t`` with probability
    ``(alpha + counts_t) / (T alpha + n)``.

    Parameters
    ----------
    counts : array_like, shape (..., T)
        Observed words per topic.
    alpha : float

    Returns
    -------
    numpy.ndarray, shape (..., T)
    """
    counts = np.asarray(counts, dtype=np.float64)
    _, _, alpha = check_topics(counts.shape[-1], 1, alpha)
    return (alpha + counts) / (counts.shape[-1] * alpha + counts.sum(-1, keepdims=True))


def _p_mask(p_random: float, p_keep: float) -> float:
    """Probability that a selected position shows MASK, ``1 - p_random - p_keep``, after checking both."""
    p_mask = 1.0 - check_real("p_random", p_random, 0.0) - check_real("p_keep", p_keep, 0.0)
    if p_mask < 0.0:
        raise ValueError(f"p_random + p_keep must be <= 1, got {p_random} + {p_keep}")
    return p_mask


def bayes_loss(data: MaskedCorpus, T: int, v: int, alpha: float, p_random: float = 0.1,
               p_keep: float = 0.1, use_query: bool = True) -> float:
    """Exact Bayes-optimal cross-entropy on a masked corpus, given what the model can see.

    A masked position sees the visible words (their topic counts, by `context_predictive`) and
    its own query token ``q``, which is MASK, a uniform random id, or the true word ``y``:
    ``P(q | y) = p_mask [q = MASK] + p_random / n_ids + p_keep [q = y]``. Bayes' rule then gives
    ``P(y | context, q)``; the loss is its mean ``-log`` over all masked positions.

    Parameters
    ----------
    data : MaskedCorpus
        From `mask_corpus` with the same ``T, v, p_random, p_keep``.
    T, v, alpha : int, int, float
    p_random, p_keep : float
    use_query : bool
        False ignores the query token: the best loss from the context alone.
    """
    T, v, alpha = check_topics(T, v, alpha)
    p_mask = _p_mask(p_random, p_keep)
    n_ids = T * v + N_SPECIAL
    topic = torch.as_tensor(topic_of_id(T, v))
    ctx_topic = torch.where(data.key_visible, topic[data.inputs], -1)
    counts = F.one_hot(ctx_topic + 1, T + 1)[..., 1:].sum(1).numpy()            # (n, T)
    p_topic = context_predictive(counts, alpha)                                  # (n, T)
    valid = (data.query_labels != IGNORE).numpy()
    doc = np.nonzero(valid)[0]
    y = data.query_labels.numpy()[valid]
    p_y = p_topic[doc, topic.numpy()[y]] / v                                     # P(y | context)
    if not use_query:
        return float(-np.log(p_y).mean())
    q = data.inputs.gather(1, data.query_pos).numpy()[valid]
    p_q = np.where(q >= N_SPECIAL, p_topic[doc, topic.numpy()[q]] / v, 0.0)     # P(q | context)
    c0 = p_mask * (q == MASK) + p_random / n_ids
    posterior = p_y * (c0 + p_keep * (q == y)) / (c0 + p_keep * p_q)
    return float(-np.log(posterior).mean())


# ----------------------------------------------------------------------------- model
EMBEDDINGS, ATTENTIONS, VALUES = ("one_hot", "trained"), ("trained", "uniform"), \
    ("trained", "identity", "block")


@dataclass(frozen=True)
class TopicModelConfig:
    """The simplified one-layer model and its switches.

    Attributes
    ----------
    T, v : int
        Topics and words per topic; the width is ``d = T*v + 4`` (one-hot inputs need it).
    embedding : str
        ``"one_hot"`` (E = I, frozen) or ``"trained"`` (E ~ N(0, 1), trained).
    attention : str
        ``"trained"`` (W^Q, W^K, biases) or ``"uniform"`` (all zero and frozen: uniform over keys).
    value : str
        ``"trained"`` (W^V, b^V), ``"identity"`` (W^V = I) or ``"block"`` (W^V frozen to the 0/1
        topic-block matrix on words, zero on specials).
    init_scale : float or None
        None: PyTorch's default ``U(+-1/sqrt(d))`` for trained W and b; a number ``s``: weights
        ``s * U[0, 1)`` and zero biases (the authors' small initialisation).
    """

    T: int = 10
    v: int = 10
    embedding: str = "one_hot"
    attention: str = "trained"
    value: str = "trained"
    init_scale: float | None = None

    def __post_init__(self):
        check_topics(self.T, self.v, 1.0)
        for name, allowed in (("embedding", EMBEDDINGS), ("attention", ATTENTIONS),
                              ("value", VALUES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.init_scale is not None and check_real("init_scale", self.init_scale, 0.0) == 0.0:
            raise ValueError("init_scale must be > 0 (zero W^Q = W^K is a saddle) or None")

    @property
    def d(self) -> int:
        """Vocabulary size and width, ``T*v + 4``."""
        return self.T * self.v + N_SPECIAL


class OneLayerModel(nn.Module):
    """One attention layer, no positions: ``logits_i = sum_j A_ij (E W^V + b^V)[x_j]``.

    Scores are ``(E W^Q + b^Q)[x_i] . (E W^K + b^K)[x_j] / sqrt(d)`` over visible keys (masked and
    padding keys excluded). Weights act on row vectors (``h W``), so ``W[a]`` is the image of
    token ``a``. Without positions a key's score depends only on its token, so attention over the
    ``L`` keys equals attention over the ``d`` token types weighted by their visible counts
    ``c_a``: the layer is computed that way, with no (L, L) matrix.

    Parameters
    ----------
    cfg : TopicModelConfig
    seed : int
        Initialisation seed.
    """

    def __init__(self, cfg: TopicModelConfig, seed: int = 0):
        super().__init__()
        self.cfg, d = cfg, cfg.d
        gen = torch.Generator().manual_seed(check_int("seed", seed, 0))
        if cfg.embedding == "trained":
            self.E = nn.Parameter(torch.randn(d, d, generator=gen))
        else:
            self.register_buffer("E", torch.eye(d))
        for name in ("Q", "K", "V"):
            trained = (cfg.attention if name != "V" else cfg.value) == "trained"
            if trained:
                self._init_trainable(name, gen)
            else:
                self.register_buffer(f"W_{name}", self._frozen_weight(name))
                self.register_buffer(f"b_{name}", torch.zeros(d))

    def _init_trainable(self, name: str, gen: torch.Generator) -> None:
        d, s = self.cfg.d, self.cfg.init_scale
        if s is None:
            W = (2 * torch.rand(d, d, generator=gen) - 1) / math.sqrt(d)
            b = (2 * torch.rand(d, generator=gen) - 1) / math.sqrt(d)
        else:
            W, b = s * torch.rand(d, d, generator=gen), torch.zeros(d)
        setattr(self, f"W_{name}", nn.Parameter(W))
        setattr(self, f"b_{name}", nn.Parameter(b))

    def _frozen_weight(self, name: str) -> torch.Tensor:
        d = self.cfg.d
        if name != "V":
            return torch.zeros(d, d)                                  # uniform attention
        if self.cfg.value == "identity":
            return torch.eye(d)
        topic = torch.as_tensor(topic_of_id(self.cfg.T, self.cfg.v))
        return ((topic[:, None] == topic[None, :]) & (topic[:, None] >= 0)).float()

    def tables(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Query, key and value of every token id, each (d, d): ``E W + b``."""
        return tuple(self.E @ getattr(self, f"W_{n}") + getattr(self, f"b_{n}") for n in "QKV")

    def forward(self, data: MaskedCorpus, return_attention: bool = False):
        """Logits (B, m, d) at ``data.query_pos``; with ``return_attention`` also A (B, m, L).

        ``A_i(a) = c_a exp(s_ia) / sum_b c_b exp(s_ib)`` is the attention mass on token type ``a``;
        a position ``j`` holding ``a`` receives ``A_i(a) / c_a``.
        """
        Qt, Kt, Vt = self.tables()
        B, d = data.inputs.shape[0], self.cfg.d
        counts = torch.zeros(B, d).scatter_add_(1, data.inputs, data.key_visible.float())  # (B, d)
        q = Qt[data.inputs.gather(1, data.query_pos)]                             # (B, m, d)
        scores = q @ Kt.T / math.sqrt(d) + counts.log()[:, None, :]               # (B, m, d)
        A_type = torch.softmax(scores, dim=-1)
        logits = A_type @ Vt                                                      # (B, m, d)
        if not return_attention:
            return logits
        per_key = (A_type / counts.clamp_min(1)[:, None, :]).gather(
            2, data.inputs[:, None, :].expand(-1, q.shape[1], -1))               # (B, m, L)
        return logits, per_key * data.key_visible[:, None, :]


def loss(model: nn.Module, data: MaskedCorpus) -> torch.Tensor:
    """Mean cross-entropy over the masked positions of ``data``."""
    logits = model(data)
    return F.cross_entropy(logits.flatten(0, 1), data.query_labels.flatten(), ignore_index=IGNORE)


@torch.no_grad()
def evaluate(model: nn.Module, data: MaskedCorpus, batch_size: int = 500) -> float:
    """Cross-entropy over all masked positions of ``data``, in batches, in eval mode (no gradient)."""
    batch_size = check_int("batch_size", batch_size, 1)
    if not (data.query_labels != IGNORE).any():
        raise ValueError("data has no masked positions to score")
    total, count, was_training = 0.0, 0, model.training
    model.eval()
    for start in range(0, len(data), batch_size):
        part = data.batch(slice(start, start + batch_size))
        n = int((part.query_labels != IGNORE).sum())
        total, count = total + float(loss(model, part)) * n, count + n
    model.train(was_training)
    return total / count


OPTIMIZERS = ("adam", "sgd")


def train(model: nn.Module, data: MaskedCorpus, steps: int, *, lr: float, optimizer: str = "adam",
          batch_size: int = 40, order_seed: int = 0, record=None, record_every: int = 0,
          progress: bool = True):
    """Minimise `loss` over batches of documents reshuffled every epoch (static masks).

    Parameters
    ----------
    model : nn.Module
        Called as ``model(batch)`` with a `MaskedCorpus` batch.
    data : MaskedCorpus
    steps : int
        Optimiser steps.
    lr : float
    optimizer : str
        ``"adam"`` (Adam, betas 0.9/0.999, no weight decay: the authors' AdamW with wd 0) or
        ``"sgd"`` (plain SGD).
    batch_size : int
    order_seed : int
        Seed of the document order.
    record : callable or None
        ``record(model) -> dict`` of measurements, taken at step 0, every ``record_every`` steps
        and at the end.
    record_every : int
        0 records only at step 0 and at the end.

    Returns
    -------
    pandas.DataFrame
        One row per record: ``step``, ``train_loss`` (mean batch loss since the last record,
        NaN at step 0) and the keys of ``record``.
    """
    import pandas as pd

    steps = check_int("steps", steps, 1)
    lr = check_real("lr", lr, 0.0)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    batch_size = check_int("batch_size", batch_size, 1, len(data))
    record_every = check_int("record_every", record_every, 0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr) if optimizer == "adam" else torch.optim.SGD(params, lr=lr)
    rng = np.random.default_rng(check_int("order_seed", order_seed, 0))
    order, cursor, running, rows = rng.permutation(len(data)), 0, [], []

    def log(step):
        row = {"step": step, "train_loss": float(np.mean(running)) if running else np.nan}
        rows.append({**row, **(record(model) if record else {})})
        running.clear()

    log(0)
    for step in tqdm(range(1, steps + 1), disable=not progress, desc="train", leave=False,
                     mininterval=10.0):
        if cursor + batch_size > len(data):
            order, cursor = rng.permutation(len(data)), 0
        batch = data.batch(torch.from_numpy(order[cursor:cursor + batch_size]))
        cursor += batch_size
        opt.zero_grad()
        value = loss(model, batch)
        value.backward()
        opt.step()
        running.append(value.item())
        if step == steps or (record_every and step % record_every == 0):
            log(step)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- measurements
def pair_means(G, topic) -> dict:
    """Mean entry of a token-by-token matrix by topic relation, words only.

    Parameters
    ----------
    G : array_like, shape (n_ids, n_ids)
        E.g. ``E E^T``, cosines of embeddings, ``W^V``, or a score table.
    topic : array_like of int, shape (n_ids,)
        Topic of each id, ``-1`` for ids to leave out (specials, words without a topic).

    Returns
    -------
    dict
        ``same_token`` (diagonal), ``same_topic`` (different ids, same topic), ``different_topic``
        and ``gap = same_topic - different_topic``.
    """
    G, topic = torch.as_tensor(G, dtype=torch.float64), torch.as_tensor(np.asarray(topic))
    if G.ndim != 2 or G.shape != (len(topic), len(topic)):
        raise ValueError(f"G must be (n_ids, n_ids) with n_ids = len(topic) = {len(topic)}, "
                         f"got shape {tuple(G.shape)}")
    word = topic >= 0
    G, t = G[word][:, word], topic[word]
    same, eye = t[:, None] == t[None, :], torch.eye(len(t), dtype=torch.bool)
    out = {"same_token": G.diagonal().mean(), "same_topic": G[same & ~eye].mean(),
           "different_topic": G[~same].mean()}
    out = {k: float(x) for k, x in out.items()}
    return {**out, "gap": out["same_topic"] - out["different_topic"]}


def cosine_gram(X) -> torch.Tensor:
    """Cosine similarity of the rows of ``X`` (n, d), shape (n, n); zero rows give 0."""
    X = torch.as_tensor(X, dtype=torch.float64)
    X = X / X.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return X @ X.T


def attention_by_topic(A, ids, topic, ref_len: int = 100) -> dict:
    """Mean attention between token pairs by topic relation (the authors' buckets).

    Parameters
    ----------
    A : array_like, shape (B, L, L)
        Attention of queries (axis 1) on keys (axis 2) over unpadded sequences of length ``L``.
    ids : array_like of int, shape (B, L)
        Token at each position.
    topic : array_like of int, shape (n_ids,)
        Topic of each id, ``-1`` for tokens left out (specials, words without a topic).
    ref_len : int
        Attention is reported as ``A * L / ref_len``, so uniform attention reads ``1/ref_len``.

    Returns
    -------
    dict
        ``same_token`` (same id, including i = j), ``same_topic`` (different ids),
        ``different_topic``, their pair counts ``n_*`` and ``ratio = same_topic / different_topic``.
    """
    A, ids, topic = torch.as_tensor(A, dtype=torch.float64), torch.as_tensor(ids), torch.as_tensor(np.asarray(topic))
    if ids.ndim != 2 or ids.min() < 0 or ids.max() >= len(topic):
        raise ValueError(f"ids must be (B, L) with values in 0..{len(topic) - 1}")
    t = topic[ids]                                                                 # (B, L)
    if A.ndim != 3 or A.shape[1:] != (t.shape[1],) * 2 or A.shape[0] != t.shape[0]:
        raise ValueError(f"A must be (B, L, L) matching ids {tuple(t.shape)}, got {tuple(A.shape)}")
    A = A * A.shape[-1] / check_int("ref_len", ref_len, 1)
    both = (t[:, :, None] >= 0) & (t[:, None, :] >= 0)
    same_id = ids[:, :, None] == ids[:, None, :]
    same_topic = t[:, :, None] == t[:, None, :]
    buckets = {"same_token": both & same_id, "same_topic": both & same_topic & ~same_id,
               "different_topic": both & ~same_topic}
    out = {k: float(A[m].mean()) for k, m in buckets.items()}
    out |= {f"n_{k}": int(m.sum()) for k, m in buckets.items()}
    return out | {"ratio": out["same_topic"] / out["different_topic"]}


@torch.no_grad()
def attention_stats(model: OneLayerModel, data: MaskedCorpus) -> dict:
    """`attention_by_topic` of the model on an `unmasked` corpus (every position a query)."""
    _, A = model(data, return_attention=True)
    return attention_by_topic(A, data.inputs, topic_of_id(model.cfg.T, model.cfg.v))


@torch.no_grad()
def value_gap(model: OneLayerModel) -> float:
    """Same- minus different-topic mean entry of the value table ``E W^V + b^V`` (words only).

    The bias adds the same amount to both means, so this measures only ``E W^V``.
    """
    return pair_means(model.tables()[2], topic_of_id(model.cfg.T, model.cfg.v))["gap"]


def permuted_gaps(G, topic, n_perm: int = 20, seed: int = 0, strata=None) -> np.ndarray:
    """`pair_means` gaps after shuffling the topic labels among the labelled ids: a null.

    Parameters
    ----------
    G : array_like, shape (n_ids, n_ids)
    topic : array_like of int, shape (n_ids,)
        ``-1`` marks ids left out; they are never relabelled.
    n_perm, seed : int
        Number of relabellings and the permutation seed.
    strata : array_like of int, shape (n_ids,), optional
        Shuffle only within groups of equal ``strata`` (e.g. word-frequency bins), so the null
        keeps whatever the groups share.

    Returns
    -------
    numpy.ndarray, shape (n_perm,)
        The same-minus-different gap under each relabelling; a real gap far outside this spread
        is not an accident of the labels.
    """
    topic = np.asarray(topic)
    strata = np.zeros(len(topic), dtype=np.int64) if strata is None else np.asarray(strata)
    if strata.shape != topic.shape:
        raise ValueError(f"strata must have the shape of topic {topic.shape}, got {strata.shape}")
    rng = np.random.default_rng(check_int("seed", seed, 0))
    groups = [np.nonzero((topic >= 0) & (strata == s))[0] for s in np.unique(strata)]
    gaps = []
    for _ in range(check_int("n_perm", n_perm, 1)):
        shuffled = topic.copy()
        for idx in groups:
            shuffled[idx] = rng.permutation(topic[idx])
        gaps.append(pair_means(G, shuffled)["gap"])
    return np.asarray(gaps)


def stage_time(steps, values, fraction: float = 0.5) -> int:
    """First step at which ``values`` has covered ``fraction`` of its rise from start to end.

    Parameters
    ----------
    steps, values : array_like, shape (n,)
        A recorded curve (e.g. the value gap or the attention ratio against the step).
    fraction : float
        In (0, 1].

    Returns
    -------
    int
        The first ``steps[i]`` with ``values[i] - values[0] >= fraction * (values[-1] - values[0])``.
    """
    steps, values = np.asarray(steps), np.asarray(values, dtype=np.float64)
    if steps.shape != values.shape or steps.ndim != 1 or len(steps) < 2:
        raise ValueError(f"steps and values must be 1-D of the same length >= 2, got "
                         f"{steps.shape} and {values.shape}")
    if not 0.0 < check_real("fraction", fraction, 0.0) <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    rise = values - values[0]
    return int(steps[np.argmax(rise >= fraction * rise[-1])])

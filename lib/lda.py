"""The synthetic LDA corpus of Li, Li & Risteski (ICML 2023, arXiv 2303.04245) and its Bayes loss.

``T`` topics own disjoint blocks of ``v`` words, topic ``t`` owning words ``t*v .. t*v + v - 1``
with uniform probability; each document draws its topic mixture ``theta ~ Dirichlet(alpha 1_T)``
and then every word independently. Token ids follow the authors' code: PAD 0, MASK 1, START 2,
END 3, word ``w`` -> id ``w + 4``. Documents are masked as the authors do (`mask_corpus`, with
`lib.masking`), and `bayes_loss` gives the best masked-token loss any model can reach on them.

Introduced in chapter 7.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import digamma

from lib.masking import IGNORE, MaskedCorpus, mask_probability, mask_tokens, masked_corpus
from lib.validate import check_int, check_real

PAD, MASK, START, END = 0, 1, 2, 3
N_SPECIAL = 4          # ids 0..3 are special; word w has id w + N_SPECIAL


def check_topics(T, v, alpha) -> tuple[int, int, float]:
    """Validate the LDA setting: ``T >= 2`` topics, ``v >= 1`` words per topic, ``alpha > 0``."""
    T, v = check_int("T", T, 2), check_int("v", v, 1)
    alpha = check_real("alpha", alpha, 0.0)
    if alpha == 0.0:
        raise ValueError("alpha must be > 0 (Dirichlet concentration), got 0.0")
    return T, v, alpha


def corpus_sizes(cfg) -> dict:
    """The `sample_corpus` keywords ``T, v, alpha, min_len, max_len`` read from a configuration.

    Parameters
    ----------
    cfg : object
        Any configuration with those five attributes (chapter 7's ``Config``,
        `lib.two_stage.StageConfig`, `lib.authors_demo.DemoConfig`).

    Returns
    -------
    dict
        ``sample_corpus(n_docs, **corpus_sizes(cfg), seed=...)`` draws its corpus.
    """
    names = ("T", "v", "alpha", "min_len", "max_len")
    missing = [name for name in names if not hasattr(cfg, name)]
    if missing:
        raise ValueError(f"cfg lacks the corpus fields {missing}")
    return {name: getattr(cfg, name) for name in names}


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


def unmasked(tokens, ref_len: int = 100) -> MaskedCorpus:
    """Documents cut to their first ``ref_len`` tokens, nothing masked, every token a query.

    The authors' evaluation input for attention statistics (START + 99 words, no END for the
    paper's lengths). Returns a `MaskedCorpus` whose query labels are all ``IGNORE``.
    """
    tokens = torch.as_tensor(np.asarray(tokens, dtype=np.int64)[:, :check_int("ref_len", ref_len, 1)])
    n, L = tokens.shape
    return MaskedCorpus(tokens, tokens != PAD, torch.arange(L).expand(n, L).contiguous(),
                        torch.full((n, L), IGNORE))


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
    if counts.ndim < 1 or not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("counts must be an array (..., T) of finite, non-negative word counts")
    _, _, alpha = check_topics(counts.shape[-1], 1, alpha)
    return (alpha + counts) / (counts.shape[-1] * alpha + counts.sum(-1, keepdims=True))


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

    Raises
    ------
    ValueError
        If ``data`` has no masked position, holds ids outside ``0..T*v+3`` or labels that are
        not words, or contradicts ``p_random, p_keep`` (a query the rule cannot produce).
    """
    T, v, alpha = check_topics(T, v, alpha)
    p_mask = mask_probability(p_random, p_keep)
    n_ids = T * v + N_SPECIAL
    _check_lda_corpus(data, n_ids)
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
    with np.errstate(divide="ignore", invalid="ignore"):
        posterior = p_y * (c0 + p_keep * (q == y)) / (c0 + p_keep * p_q)
    if not np.all(posterior > 0):                                  # zero, or 0/0 = NaN
        raise ValueError(f"data contradicts p_random={p_random}, p_keep={p_keep}: some query "
                         "token has probability zero under that rule; pass the rule that "
                         "masked data")
    return float(-np.log(posterior).mean())


def _check_lda_corpus(data: MaskedCorpus, n_ids: int) -> None:
    """Ids of ``data`` in ``0..n_ids-1``, at least one masked position, and word labels only."""
    if data.inputs.numel() and (data.inputs.min() < 0 or data.inputs.max() >= n_ids):
        raise ValueError(f"data: token ids must be in 0..{n_ids - 1} (T*v + 4 ids); was it "
                         "masked with the same T and v?")
    labels = data.query_labels[data.query_labels != IGNORE]
    if labels.numel() == 0:
        raise ValueError("data has no masked positions to score")
    if labels.min() < N_SPECIAL or labels.max() >= n_ids:
        raise ValueError(f"data: masked labels must be words, ids {N_SPECIAL}..{n_ids - 1}")

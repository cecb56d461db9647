"""Topic structure in learned matrices and attention: the measurements of chapter 7.

Mean entries of token-by-token matrices by topic relation (same token, same topic, different
topic), their permutation null, attention by topic relation (pooled, or compared at equal
query-key distance for models with positions), and the time at which a recorded curve has made
a given share of its rise (to time the two training stages).
"""
from __future__ import annotations

import numpy as np
import torch

from lib.lda import topic_of_id
from lib.masking import MaskedCorpus
from lib.one_layer import OneLayerModel
from lib.validate import check_int, check_real


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
    G, topic = torch.as_tensor(G, dtype=torch.float64), _check_topic(topic)
    if G.ndim != 2 or G.shape != (len(topic), len(topic)):
        raise ValueError(f"G must be (n_ids, n_ids) with n_ids = len(topic) = {len(topic)}, "
                         f"got shape {tuple(G.shape)}")
    if not torch.isfinite(G).all():
        raise ValueError("G must be finite (no NaN or inf entries)")
    word = topic >= 0
    G, t = G[word][:, word], topic[word]
    same, eye = t[:, None] == t[None, :], torch.eye(len(t), dtype=torch.bool)
    _check_buckets({"same_topic": same & ~eye, "different_topic": ~same}, "topic")
    out = {"same_token": G.diagonal().mean(), "same_topic": G[same & ~eye].mean(),
           "different_topic": G[~same].mean()}
    out = {k: float(x) for k, x in out.items()}
    return {**out, "gap": out["same_topic"] - out["different_topic"]}


def _check_topic(topic) -> torch.Tensor:
    """Topic labels as a 1-D integer tensor (``-1`` = left out)."""
    topic = np.asarray(topic)
    if topic.ndim != 1 or (topic.size and not np.issubdtype(topic.dtype, np.integer)):
        raise ValueError(f"topic must be a 1-D array of integer labels (-1 = left out), got "
                         f"shape {topic.shape} and dtype {topic.dtype}")
    return torch.as_tensor(topic)


def _check_buckets(buckets: dict, where: str) -> None:
    """Every pair bucket must hold a pair, or its mean would be NaN."""
    for name, members in buckets.items():
        if not members.any():
            raise ValueError(f"no {name.replace('_', '-')} pair: {where} must label at least "
                             "two different ids with one topic and ids with two topics")


def cosine_gram(X) -> torch.Tensor:
    """Cosine similarity of the rows of ``X`` (n, d), shape (n, n); zero rows give 0."""
    X = torch.as_tensor(X, dtype=torch.float64)
    if X.ndim != 2 or not torch.isfinite(X).all():
        raise ValueError(f"X must be a finite matrix (n, d), got shape {tuple(X.shape)}")
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
    A, buckets = _attention_buckets(A, ids, topic)
    A = A * A.shape[-1] / check_int("ref_len", ref_len, 1)
    out = {k: float(A[m].mean()) for k, m in buckets.items()}
    out |= {f"n_{k}": int(m.sum()) for k, m in buckets.items()}
    return out | {"ratio": out["same_topic"] / out["different_topic"]}


def _attention_buckets(A, ids, topic) -> tuple[torch.Tensor, dict]:
    """Checked attention (B, L, L) and the masks of its three pair buckets, each (B, L, L)."""
    A, ids = torch.as_tensor(A, dtype=torch.float64), torch.as_tensor(ids)
    topic = _check_topic(topic)
    if ids.ndim != 2 or ids.min() < 0 or ids.max() >= len(topic):
        raise ValueError(f"ids must be (B, L) with values in 0..{len(topic) - 1}")
    t = topic[ids]                                                                 # (B, L)
    if A.ndim != 3 or A.shape[1:] != (t.shape[1],) * 2 or A.shape[0] != t.shape[0]:
        raise ValueError(f"A must be (B, L, L) matching ids {tuple(t.shape)}, "
                         f"got {tuple(A.shape)}")
    if not torch.isfinite(A).all() or (A < 0).any():
        raise ValueError("A must hold attention weights: finite and non-negative")
    both = (t[:, :, None] >= 0) & (t[:, None, :] >= 0)
    same_id = ids[:, :, None] == ids[:, None, :]
    same_topic = t[:, :, None] == t[:, None, :]
    buckets = {"same_token": both & same_id, "same_topic": both & same_topic & ~same_id,
               "different_topic": both & ~same_topic}
    _check_buckets(buckets, "topic[ids]")
    return A, buckets


def attention_at_equal_distance(A, ids, topic) -> dict:
    """Same- against different-topic attention, compared at equal query-key distance.

    In real text nearby words share a topic more often than distant ones, and a model with
    positions may favour nearby keys, so the pooled `attention_by_topic` ratio mixes topic with
    locality. Here, for every distance ``delta = |i - j| >= 1``, the mean attention ``s_delta``
    of same-topic pairs (different tokens) and ``d_delta`` of different-topic pairs are taken
    separately and averaged over distances with the same weights, the same-topic pair counts
    ``n_delta`` (distances lacking either kind of pair are skipped).

    Parameters
    ----------
    A : array_like, shape (B, L, L)
    ids : array_like of int, shape (B, L)
    topic : array_like of int, shape (n_ids,)
        As in `attention_by_topic`.

    Returns
    -------
    dict
        ``same_topic`` and ``different_topic`` (weighted means of ``A * L``, so uniform
        attention reads 1) and ``ratio``.
    """
    A, buckets = _attention_buckets(A, ids, topic)
    L = A.shape[-1]
    dist = (torch.arange(L)[:, None] - torch.arange(L)[None, :]).abs().expand_as(A)
    means, counts = {}, {}
    for name in ("same_topic", "different_topic"):
        m = buckets[name]
        counts[name] = torch.bincount(dist[m], minlength=L).double()
        means[name] = torch.bincount(dist[m], weights=A[m] * L, minlength=L) / counts[name]
    w = torch.where((counts["same_topic"] > 0) & (counts["different_topic"] > 0),
                    counts["same_topic"], torch.zeros(L, dtype=torch.float64))
    out = {k: float((w * torch.nan_to_num(x)).sum() / w.sum()) for k, x in means.items()}
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
    rng = np.random.default_rng(check_int("seed", seed, 0))
    return np.asarray([pair_means(G, shuffle_labels(topic, rng, strata))["gap"]
                       for _ in range(check_int("n_perm", n_perm, 1))])


def shuffle_labels(topic, rng: np.random.Generator, strata=None) -> np.ndarray:
    """A copy of ``topic`` with its labels permuted among labelled ids (``>= 0``).

    Parameters
    ----------
    topic : array_like of int, shape (n_ids,)
        ``-1`` marks ids left out; they are never relabelled.
    rng : numpy.random.Generator
    strata : array_like of int, shape (n_ids,), optional
        Permute only within groups of equal ``strata``.
    """
    topic = np.asarray(topic)
    strata = np.zeros(len(topic), dtype=np.int64) if strata is None else np.asarray(strata)
    if strata.shape != topic.shape:
        raise ValueError(f"strata must have the shape of topic {topic.shape}, got {strata.shape}")
    shuffled = topic.copy()
    for s in np.unique(strata):
        idx = np.nonzero((topic >= 0) & (strata == s))[0]
        shuffled[idx] = rng.permutation(topic[idx])
    return shuffled


def stage_time(steps, values, fraction: float = 0.5) -> int:
    """First step at which ``values`` has covered ``fraction`` of its rise from start to end.

    Parameters
    ----------
    steps, values : array_like, shape (n,)
        A recorded curve (e.g. the value gap or the attention ratio against the step); it must
        be finite and end above its start.
    fraction : float
        In (0, 1].

    Returns
    -------
    int
        The first ``steps[i]`` with ``values[i] - values[0] >= fraction * (values[-1] - values[0])``.

    Raises
    ------
    ValueError
        If the curve holds NaN or inf, or does not rise (``values[-1] <= values[0]``): a flat or
        falling curve has no stage to time, and step 0 would pass for one.
    """
    steps, values = np.asarray(steps), np.asarray(values, dtype=np.float64)
    if steps.shape != values.shape or steps.ndim != 1 or len(steps) < 2:
        raise ValueError(f"steps and values must be 1-D of the same length >= 2, got "
                         f"{steps.shape} and {values.shape}")
    if not 0.0 < check_real("fraction", fraction, 0.0) <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if not np.all(np.isfinite(values)):
        raise ValueError("values must be finite (no NaN or inf): the curve has no defined rise")
    rise = values - values[0]
    if not rise[-1] > 0:
        raise ValueError(f"values must rise from start to end, got {values[0]:.4g} -> "
                         f"{values[-1]:.4g}: a flat or falling curve has no stage time")
    return int(steps[np.argmax(rise >= fraction * rise[-1])])


def late_rise_share(steps, values, tail: float = 0.2) -> float:
    """Share of a curve's rise (start to end) made in the last ``tail`` of its steps.

    A curve that has levelled off gives about 0 (or less, if it overshoots and falls back); a
    curve still climbing at its last step gives a large share, and its `stage_time` is then a
    lower bound: half of a rise that is not finished.

    Parameters
    ----------
    steps, values : array_like, shape (n,)
        A recorded curve that rises from start to end (as `stage_time` requires).
    tail : float
        In (0, 1): the last ``tail * steps[-1]`` steps count as late.

    Returns
    -------
    float
        ``(values[-1] - v(cut)) / (values[-1] - values[0])``, where ``v(cut)`` is the curve
        linearly interpolated at step ``cut = (1 - tail) * steps[-1]``.

    Raises
    ------
    ValueError
        As `stage_time` for a curve without a rise, or if ``tail`` is not in (0, 1).
    """
    stage_time(steps, values)                             # validates shape, finiteness, rise
    if not 0.0 < check_real("tail", tail, 0.0) < 1.0:
        raise ValueError(f"tail must be in (0, 1), got {tail}")
    steps, values = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    at_cut = np.interp((1.0 - tail) * steps[-1], steps, values)
    return float((values[-1] - at_cut) / (values[-1] - values[0]))

"""BERT-style masking and the statically masked corpus a masked language model trains on.

`mask_tokens` selects positions and replaces them 80/10/10 (mask / random id / unchanged);
`MaskedCorpus` packs the result as the tensors a model reads: inputs, the keys a query may see,
the query positions and their labels. The LDA corpus (`lib.lda`) and the Wikipedia text
(`lib.text`) are both masked this way; `lib.masked_lm` trains on the result. Introduced in
chapter 7.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lib.validate import check_int, check_real

IGNORE = -100          # label of positions that carry no loss (torch's ignore_index)


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
    p_mask = mask_probability(p_random, p_keep)
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


def mask_probability(p_random: float, p_keep: float) -> float:
    """Probability that a selected position shows MASK, ``1 - p_random - p_keep``, after checking both."""
    p_mask = 1.0 - check_real("p_random", p_random, 0.0) - check_real("p_keep", p_keep, 0.0)
    if p_mask < 0.0:
        raise ValueError(f"p_random + p_keep must be <= 1, got {p_random} + {p_keep}")
    return p_mask


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

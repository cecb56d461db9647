"""Masked language modelling on a `lib.masking.MaskedCorpus`: loss, evaluation, training loop.

Any model that maps a `MaskedCorpus` batch to logits (B, m, n_classes) at its query positions
trains here: the one-layer model of `lib.one_layer` on LDA documents and, through
`lib.text.MaskedLM`, an encoder on Wikipedia text. Introduced in chapter 7.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lib.masking import IGNORE, MaskedCorpus
from lib.validate import check_int, check_real


def loss(model: nn.Module, data: MaskedCorpus) -> torch.Tensor:
    """Mean cross-entropy over the masked positions of ``data``."""
    logits = model(data)
    return F.cross_entropy(logits.flatten(0, 1), data.query_labels.flatten(), ignore_index=IGNORE)


AVERAGES = ("token", "batch")


@torch.no_grad()
def evaluate(model: nn.Module, data: MaskedCorpus, batch_size: int = 500,
             average: str = "token") -> float:
    """Cross-entropy over the masked positions of ``data``, in batches, in eval mode, no gradient.

    Parameters
    ----------
    model : nn.Module
    data : MaskedCorpus
    batch_size : int
        Documents per batch, in order.
    average : str
        ``"token"``: the mean over all masked positions. ``"batch"``: the mean over batches of
        each batch's mean, as the authors' code reports its dev loss (batches of 40).
    """
    batch_size = check_int("batch_size", batch_size, 1)
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
    if not (data.query_labels != IGNORE).any():
        raise ValueError("data has no masked positions to score")
    values, weights, was_training = [], [], model.training
    model.eval()
    for start in range(0, len(data), batch_size):
        part = data.batch(slice(start, start + batch_size))
        n = int((part.query_labels != IGNORE).sum())
        if n:
            values.append(float(loss(model, part)))
            weights.append(n if average == "token" else 1)
    model.train(was_training)
    return float(np.average(values, weights=weights))


OPTIMIZERS = ("adam", "sgd")


def train(model: nn.Module, data: MaskedCorpus, steps: int, *, lr: float, optimizer: str = "adam",
          batch_size: int = 40, order_seed: int = 0, record=None, record_every: int = 0,
          stop=None, progress: bool = True):
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
    stop : callable or None
        ``stop(rows) -> bool``, asked after every record with the list of records so far (dicts
        as in the returned table); True ends training there (early stopping).
    progress : bool
        Show a progress bar (unless ``TQDM_DISABLE=1`` is set, as in the book build).

    Returns
    -------
    pandas.DataFrame
        One row per record: ``step``, ``train_loss`` (mean batch loss since the last record,
        NaN at step 0) and the keys of ``record``.

    Raises
    ------
    ValueError
        For bad settings, or if a document of ``data`` has no masked position.
    """
    import pandas as pd

    steps = check_int("steps", steps, 1)
    lr = check_real("lr", lr, 0.0)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    batch_size = check_int("batch_size", batch_size, 1, len(data))
    record_every = check_int("record_every", record_every, 0)
    empty = ~(data.query_labels != IGNORE).any(1)
    if empty.any():                        # a batch of such documents would have a NaN loss
        raise ValueError(f"data: every document needs a masked position; "
                         f"{int(empty.sum())} of {len(data)} have none")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(params, lr=lr)
    rng = np.random.default_rng(check_int("order_seed", order_seed, 0))
    order, cursor, running, rows = rng.permutation(len(data)), 0, [], []

    def log(step):
        row = {"step": step, "train_loss": float(np.mean(running)) if running else np.nan}
        rows.append({**row, **(record(model) if record else {})})
        running.clear()

    log(0)
    step_range = range(1, steps + 1)
    if progress:          # no explicit disable=False: TQDM_DISABLE=1 must still silence the bar
        step_range = tqdm(step_range, desc="train", leave=False, mininterval=10.0)
    for step in step_range:
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
            if stop is not None and stop(rows):
                break
    return pd.DataFrame(rows)

"""Single-site masked language modelling (MLM) on Potts sequences, for any model.

A model maps ids (B, L) in ``0..q`` (colours ``0..q-1``, the id ``q`` a masked site) to logits
(B, L, q). Here are the exact single-token MLM loss (every site masked in turn), its evaluation,
an Adam loop with one random masked site per sequence trained to a validation plateau, and the
baseline that chapter 6 compares with factored attention (`lib.factored_attention`): chapter 4's
vanilla encoder, whose costly runs `scripts/potts_baselines.py` stores in ``data/potts/``.
Introduced in chapter 6.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lib.potts import check_sequences
from lib.schedule import Plateau
from lib.transformer import ModelConfig, Transformer
from lib.validate import check_int, check_real


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


def check_inputs(model: nn.Module, s, mask_id: int) -> tuple[torch.Tensor, int]:
    """Check MLM inputs; return ``s`` as an int64 tensor and ``mask_id``.

    ``s`` (n, L) holds colours ``0..q-1`` and ``mask_id`` must be ``q``, the id after them (the
    convention of `lib.factored_attention` and `vanilla_transformer`). When the model declares
    its sizes (``model.L, model.q`` or ``model.cfg.seq_len, model.cfg.n_classes``), ``L`` and
    ``q`` must match them.
    """
    L, q = _declared_sizes(model)
    mask_id = check_int("mask_id", mask_id, 2)
    if q is not None and mask_id != q:
        raise ValueError(f"mask_id must be q = {q}, the id after the model's colours "
                         f"0..{q - 1}, got {mask_id}")
    return torch.as_tensor(check_sequences(s, L, mask_id)), mask_id


def _declared_sizes(model: nn.Module) -> tuple[int | None, int | None]:
    """``(L, q)`` of a factored layer or a `lib.transformer.Transformer`; ``(None, None)`` otherwise."""
    if hasattr(model, "L") and hasattr(model, "q"):
        return model.L, model.q
    cfg = getattr(model, "cfg", None)
    if hasattr(cfg, "seq_len") and hasattr(cfg, "n_classes"):
        return cfg.seq_len, cfg.n_classes
    return None, None


def _check_width(logits: torch.Tensor, mask_id: int) -> None:
    """The model must predict ``q = mask_id`` colours."""
    if logits.shape[-1] != mask_id:
        raise ValueError(f"mask_id must be q = {logits.shape[-1]}, the number of colours the "
                         f"model predicts, got {mask_id}")


def masked_logits(model: nn.Module, s, mask_id: int) -> torch.Tensor:
    """Logits (B, L, q) for each site ``i`` of ``s`` (B, L), predicted with site ``i`` alone masked.

    Runs the model on the ``B * L`` copies of the batch that have one site masked each. ``s``
    holds colours ``0..q-1`` and ``mask_id`` is ``q`` (see `check_inputs`).
    """
    s, mask_id = check_inputs(model, s, mask_id)
    B, L = s.shape
    site = torch.arange(L)
    x = s[:, None, :].repeat(1, L, 1)                             # (B, L copies, L)
    x[:, site, site] = mask_id
    logits = model(x.reshape(B * L, L))
    _check_width(logits, mask_id)
    return logits.reshape(B, L, L, -1)[:, site, site]


def mlm_loss(model: nn.Module, s, mask_id: int) -> torch.Tensor:
    """Single-token MLM cross-entropy over all sites: ``-(1/(BL)) sum log p(s_i | s_{-i})``."""
    s, mask_id = check_inputs(model, s, mask_id)
    logits = masked_logits(model, s, mask_id)
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), s.reshape(-1))


@torch.no_grad()
def test_loss(model: nn.Module, s, mask_id: int, batch_size: int = 256) -> float:
    """MLM cross-entropy (nats) over every site of ``s`` (n, L), in eval mode, in batches."""
    batch_size = check_int("batch_size", batch_size, 1)
    s, mask_id = check_inputs(model, s, mask_id)
    was_training = model.training
    model.eval()
    chunks = s.split(batch_size)
    total = sum(float(mlm_loss(model, chunk, mask_id)) * len(chunk) for chunk in chunks)
    model.train(was_training)
    return total / len(s)


def train_mlm(model: nn.Module, s, s_val, mask_id: int, *, steps: int, batch_size: int = 128,
              lr: float = 1e-3, eval_every: int = 250, batch_seed: int = 0, mask_seed: int = 0,
              patience: int = 4, lr_decay: float = 0.5, n_decays: int = 1,
              min_delta: float = 1e-3) -> tuple[list, bool]:
    """Train any MLM model with Adam, one masked site per sequence, until the validation loss
    on ``s_val`` stops improving (the plateau schedule of chapter 4, `lib.schedule.Plateau`).

    Every ``eval_every`` steps the loss on ``s_val`` (every site masked in turn) is recorded;
    ``patience`` evaluations in a row without a relative improvement of ``min_delta`` multiply the
    learning rate by ``lr_decay``, and the plateau after ``n_decays`` decays stops the run
    (converged); ``steps`` is the cap.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ids (B, L) in ``0..q`` to logits (B, L, q).
    s, s_val : array_like of int, shape (M, L) and (M_val, L)
        Training and validation sequences, colours ``0..q-1``.
    mask_id : int
        Id of the mask token: ``q``, see `check_inputs`.
    steps, batch_size, lr, eval_every : int, int, float, int
        Cap on Adam steps, sequences per step, initial learning rate, steps between validations.
    batch_seed, mask_seed : int
        Seeds of the mini-batches and of the masked sites.
    patience, lr_decay, n_decays, min_delta : int, float, int, float
        The plateau criterion: ``patience >= 1``, ``0 < lr_decay < 1``, ``n_decays >= 0``,
        ``min_delta >= 0``.

    Returns
    -------
    history : list of (step, validation loss, learning rate)
    converged : bool
        True if the plateau criterion stopped the run, False if it reached the cap ``steps``.
        The model is left with the parameters of the best validation loss.
    """
    s, mask_id = check_inputs(model, s, mask_id)
    s_val = check_sequences(s_val, s.shape[1], mask_id)
    steps, eval_every = check_int("steps", steps, 1), check_int("eval_every", eval_every, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    if not 0.0 < check_real("lr_decay", lr_decay, lo=0.0) < 1.0:
        raise ValueError(f"lr_decay must be in (0, 1), got {lr_decay}")
    plateau = Plateau(check_int("patience", patience, 1), check_real("min_delta", min_delta, 0.0),
                      check_int("n_decays", n_decays, 0))
    g_batch = torch.Generator().manual_seed(check_int("batch_seed", batch_seed, 0))
    g_mask = torch.Generator().manual_seed(check_int("mask_seed", mask_seed, 0))
    lr = check_real("lr", lr, lo=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history, best, converged = [], (np.inf, None), False
    for step in range(1, steps + 1):
        _mlm_step(model, opt, s, mask_id, batch_size, g_batch, g_mask, check=step == 1)
        if step % eval_every == 0 or step == steps:
            rate = opt.param_groups[0]["lr"]
            history.append((step, test_loss(model, s_val, mask_id), rate))
            if history[-1][1] < best[0]:
                best = (history[-1][1], {k: v.clone() for k, v in model.state_dict().items()})
            converged = plateau.update(history[-1][1])
            if converged:
                break
            for group in opt.param_groups:
                group["lr"] = lr * lr_decay ** plateau.decays
    model.load_state_dict(best[1])
    return history, converged


def _mlm_step(model, opt, s, mask_id, batch_size, g_batch, g_mask, check: bool) -> None:
    """One Adam step on a mini-batch of ``s`` (M, L) with one random masked site per sequence."""
    x = s[torch.randint(len(s), (batch_size,), generator=g_batch)]          # (B, L), a copy
    site = torch.randint(x.shape[1], (batch_size,), generator=g_mask)       # one masked site each
    rows = torch.arange(batch_size)
    target = x[rows, site]
    x[rows, site] = mask_id
    logits = model(x)[rows, site]                                           # (B, q)
    if check:
        _check_width(logits, mask_id)
    loss = nn.functional.cross_entropy(logits, target)
    opt.zero_grad()
    loss.backward()
    opt.step()

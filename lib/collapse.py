"""Collapse of a masked-token run: chapter 4's recipe traced step by step, and the trace read.

On data filtered at ``k = depth`` the leaves are independent given the root, and two
context-blind predictors bracket what a masked-token network knows early on: the *symbol law*
(the leaves' symbol frequencies, the same at every position) and the *position law* (each
position's marginal). Their KL divergences from BP_k (:func:`reference_kl`) are the levels
against which a trace of KL(BP_k || network) is read: a run has *collapsed* when, after getting
below the midpoint of the two, it ends above it (it has forgotten even where it is). Introduced
in chapter 4.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib import bp, calibration, run_data, train, tree
from lib.config import TrainConfig
from lib.validate import check_int, check_real

AGG = 10          # training steps per row of a trace
N_PROBE = 128     # validation sequences of a probe (each position masked in turn)


def _mean_kl(p: np.ndarray, q: np.ndarray) -> float:
    """Mean over predictions of KL(p || q) in nats; p (..., q), q broadcastable to it."""
    return float(calibration.kl_per_prediction(p, np.broadcast_to(q, p.shape)).mean())


def probe(model, M: np.ndarray, leaves: np.ndarray, k: int) -> dict:
    """Predictions and attention of a masked-token ``model`` on ``leaves`` (n, L) at level ``k``:
    ``val_loss`` (nats), ``val_accuracy``, ``kl_bp`` (nats, to BP_k), ``entropy`` of the
    predictions (nats) and ``attn_entropy_{l}`` of layer ``l`` (nats, mean over heads and
    queries, each sequence with one position masked; log L is uniform attention)."""
    logp = train.log_probs(model, leaves).numpy()                       # (n, L, q)
    loss, acc = train.score(logp, leaves)
    row = {"val_loss": loss, "val_accuracy": acc,
           "kl_bp": _mean_kl(bp.leaf_posterior(M, leaves, k), np.exp(logp)),
           "entropy": float(-(np.exp(logp) * logp).sum(-1).mean())}
    x = torch.from_numpy(leaves).clone()
    x[torch.arange(len(x)), torch.arange(len(x)) % x.shape[1]] = model.cfg.mask_id
    with torch.no_grad():
        _, patterns = model(x.to(next(model.parameters()).device), return_attention=True)
    for layer, a in enumerate(patterns, 1):
        row[f"attn_entropy_{layer}"] = float(-(a * a.clamp_min(1e-30).log()).sum(-1).mean())
    return row


def trace(cfg: TrainConfig, probe_every: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train ``cfg`` (masked tokens) with `lib.train.train`, unchanged, and trace it.

    Returns
    -------
    trace : pandas.DataFrame
        One row per ``AGG`` training steps (a last incomplete group is left out): ``step`` (the
        steps taken), ``lr``, the mean ``train_loss`` (nats) and the largest global
        ``grad_norm_max`` and ``update_norm_max`` of those steps; every ``probe_every`` steps
        also the :func:`probe` columns on the first ``N_PROBE`` validation sequences.
    history : pandas.DataFrame
        The run's history (`lib.train.train`); its ``wall_s`` includes the tracing.
    """
    if cfg.task != "mlm" or cfg.schedule != "plateau":
        raise ValueError(f"cfg must be a masked-token run with schedule='plateau', got "
                         f"task={cfg.task!r}, schedule={cfg.schedule!r}")
    if check_int("probe_every", probe_every, AGG, cfg.n_steps) % AGG:
        raise ValueError(f"probe_every must be a multiple of {AGG}, got {probe_every}")
    M, _, val, _ = run_data.held_out(cfg)
    rows, window, inner = [], [], train._step

    def traced(cfg, model, opt, batch, masks, lr, amp):
        before = [p.detach().clone() for p in model.parameters()]
        loss = inner(cfg, model, opt, batch, masks, lr, amp)
        window.append((loss, _norm(p.grad for p in model.parameters()),
                       _norm(p.detach() - b for p, b in zip(model.parameters(), before))))
        step = len(rows) * AGG + len(window)
        if len(window) == AGG:
            w = np.array(window)
            row = {"step": step, "lr": lr, "train_loss": w[:, 0].mean(),
                   "grad_norm_max": w[:, 1].max(), "update_norm_max": w[:, 2].max()}
            if step % probe_every == 0:
                row |= probe(model, M, val[1][:N_PROBE], cfg.k_train)
            rows.append(row)
            window.clear()
        return loss

    train._step = traced
    try:
        history = train.train(cfg, progress=False)[1]
    finally:
        train._step = inner
    return pd.DataFrame(rows), history


def _norm(tensors) -> float:
    """Global Euclidean norm of a sequence of tensors."""
    return math.sqrt(sum(float(t.pow(2).sum()) for t in tensors))


def reference_kl(cfg: TrainConfig, leaves: np.ndarray | None = None) -> dict[str, float]:
    """KL(BP_k || law) in nats, averaged over ``leaves`` (n, L) (default: the probe sequences of
    ``cfg``) and positions, for the two context-blind laws (uniform root): ``"symbol law"``
    (mean over positions of the leaf marginals) and ``"position law"`` (each position's
    marginal)."""
    M = run_data.grammar(cfg)
    if leaves is None:
        leaves = run_data.validation_set(cfg, M)[1][:N_PROBE]
    p = bp.leaf_posterior(M, leaves, cfg.k_train)
    position = tree.path_marginals(M, cfg.depth).mean(axis=1)          # (L, q)
    symbol = np.broadcast_to(position.mean(axis=0), position.shape)
    return {"symbol law": _mean_kl(p, symbol), "position law": _mean_kl(p, position)}


def collapsed(kl: np.ndarray, refs: dict[str, float], last: int = 5) -> bool:
    """Whether a run with KL(BP_k || network) ``kl`` (n_evaluations,), in training order, got
    below the midpoint of the two laws of ``refs`` (:func:`reference_kl`) and ended, on average
    over its ``last`` evaluations, above it."""
    midpoint = (check_real("refs['symbol law']", refs["symbol law"], 0.0)
                + check_real("refs['position law']", refs["position law"], 0.0)) / 2
    kl = np.asarray(kl, dtype=float)
    if kl.ndim != 1 or kl.size == 0 or not np.isfinite(kl).all():
        raise ValueError(f"kl must be a non-empty 1-d array of finite values, got {kl!r}")
    final = kl[-check_int("last", last, 1):].mean()
    return bool(kl.min() < midpoint < final)


def read(folder) -> tuple[pd.DataFrame, dict]:
    """Every trace in ``folder`` (written by ``scripts/mlm_collapse.py``) as one frame, the
    :func:`trace` columns plus ``k``, ``lr``, ``seed``; and ``runs.json``, the record of each
    trace file by name: ``code`` (`lib.provenance.code_state`), ``probe_every``, ``config``."""
    folder = Path(folder)
    runs = json.loads((folder / "runs.json").read_text())
    frames = []
    for name, record in sorted(runs.items()):
        cfg = record["config"]
        frames.append(pd.read_csv(folder / name).assign(
            k=cfg["k_train"], lr=cfg["lr"], seed=cfg["init_seed"]))
    return pd.concat(frames, ignore_index=True), runs


def verdicts(traces: pd.DataFrame, refs: dict[str, float], last: int = 5) -> pd.DataFrame:
    """One row per (k, lr, seed) of :func:`read`'s traces, all of one level ``k`` whose laws are
    ``refs``: the lowest KL(BP_k || network) (nats) and its step, the mean KL over the ``last``
    probes, whether the run :func:`collapsed`, the lowest attention entropy of any layer (nats),
    and the largest update norm and its step."""
    rows = []
    if traces.k.nunique() != 1:
        raise ValueError(f"traces must hold one level k (refs are per level), got "
                         f"{sorted(traces.k.unique())}")
    for (k, lr, seed), t in traces.groupby(["k", "lr", "seed"]):
        probes = t.dropna(subset=["kl_bp"])
        kl = probes.kl_bp.to_numpy()
        rows.append({"k": k, "lr": lr, "seed": seed, "lowest KL": kl.min(),
                     "lowest at step": int(probes.step.iloc[kl.argmin()]),
                     "final KL": kl[-last:].mean(), "collapsed": collapsed(kl, refs, last),
                     "lowest attention entropy": probes.filter(like="attn_entropy_").min().min(),
                     "largest update norm": t.update_norm_max.max(),
                     "largest update at step": int(t.step[t.update_norm_max.idxmax()])})
    return pd.DataFrame(rows)

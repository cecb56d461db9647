"""Where and how a masked-token run collapses: chapter 4's recipe traced step by step.

Trains the first ``--steps`` steps of chapter 4's converged masked-token run at filtering level
``--k`` (`lib.config.converged_config`, exactly the stored runs' trajectory: same data, masks,
initialisation, validation and plateau schedule) for every seed in ``--seeds`` and every
learning rate in ``--lr``, and records:

- every ``AGG`` steps: the mean training loss, the largest gradient norm and the largest update
  norm (both global, over all weights) of those steps;
- every ``--probe-every`` steps, on the first ``N_PROBE`` validation sequences with every
  position masked in turn: cross-entropy (nats), accuracy, KL(BP_k || network) (nats), the share
  of positions where the network's top symbol is the leaves' most frequent symbol (``mode_share``;
  1 is the collapse to the marginal), the mean entropy of its predictions (nats), and the mean
  entropy of each layer's attention (nats, over heads and queries; log 16 = 2.77 is uniform).

One CSV per (lr, seed) under ``--out`` (a rerun skips finished ones) and ``runs.json`` with the
code state (`lib.provenance.code_state`) and settings. Run it from a clean worktree:

    git worktree add /tmp/wt-collapse HEAD
    PYTHONPATH=/tmp/wt-collapse python /tmp/wt-collapse/scripts/mlm_collapse.py \\
        --k 4 --seeds 2 --lr 4e-3 2e-3 --out data/mlm_collapse
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib import bp, config, provenance, run_data, train

AGG = 10          # training steps per aggregated row
N_PROBE = 128     # validation sequences of a probe (x 16 masked positions)


def _probe(model, M, val, k) -> dict:
    """The network's predictions and attention on the probe sequences (see module docstring)."""
    leaves = val[1][:N_PROBE]
    logp = train.log_probs(model, leaves).numpy()                       # (n, L, q)
    loss, acc = train.score(logp, leaves)
    p = bp.leaf_posterior(M, leaves, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(p > 0, p * (np.log(p) - logp), 0.0).sum(-1).mean()
    mode = np.bincount(val[1].ravel(), minlength=M.shape[0]).argmax()
    row = {"val_loss": loss, "val_accuracy": acc, "kl_bp": float(kl),
           "mode_share": float((logp.argmax(-1) == mode).mean()),
           "entropy": float(-(np.exp(logp) * logp).sum(-1).mean())}
    x = torch.from_numpy(leaves).clone()
    x[torch.arange(len(x)), torch.arange(len(x)) % x.shape[1]] = model.cfg.mask_id
    with torch.no_grad():
        _, patterns = model(x, return_attention=True)
    for layer, a in enumerate(patterns, 1):
        row[f"attn_entropy_{layer}"] = float(-(a * a.clamp_min(1e-30).log()).sum(-1).mean())
    return row


def trace(cfg, probe_every: int) -> pd.DataFrame:
    """Train ``cfg`` with `lib.train.train` while recording the diagnostics; one row per
    ``AGG`` steps (probe columns filled every ``probe_every`` steps)."""
    M, _, val, _ = run_data.held_out(cfg)
    rows, window, step = [], [], [0]
    inner = train._step

    def traced(cfg, model, opt, batch, masks, lr, amp):
        before = [p.detach().clone() for p in model.parameters()]
        loss = inner(cfg, model, opt, batch, masks, lr, amp)
        grad = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))
        update = math.sqrt(sum(float((p.detach() - b).pow(2).sum())
                               for p, b in zip(model.parameters(), before)))
        window.append((loss, grad, update))
        step[0] += 1
        if step[0] % AGG == 0:
            w = np.array(window)
            row = {"step": step[0], "lr": lr, "train_loss": w[:, 0].mean(),
                   "grad_norm_max": w[:, 1].max(), "update_norm_max": w[:, 2].max()}
            if step[0] % probe_every == 0:
                row |= _probe(model, M, val, cfg.k_train)
            rows.append(row)
            window.clear()
        return loss

    train._step = traced
    try:
        train.train(cfg, progress=False)
    finally:
        train._step = inner
    return pd.DataFrame(rows)


def _job(args) -> str:
    cfg, probe_every, path = args
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    trace(cfg, probe_every).to_csv(path, index=False, float_format="%.6g")
    return f"{path.name}: {time.perf_counter() - t0:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=4, help="filtering level of the training data")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lr", type=float, nargs="+", default=[4e-3])
    parser.add_argument("--steps", type=int, default=3000, help="training steps traced")
    parser.add_argument("--probe-every", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=2, help="processes at once")
    parser.add_argument("--out", type=Path, default=Path("data/mlm_collapse"))
    a = parser.parse_args()
    if a.steps < a.probe_every or a.probe_every % AGG:
        raise ValueError(f"--probe-every must be a multiple of {AGG} and at most --steps, got "
                         f"{a.probe_every} with --steps {a.steps}")
    a.out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for lr in a.lr:
        for seed in a.seeds:
            cfg = replace(config.converged_config("mlm", "laptop", a.k, seed), lr=lr,
                          n_steps=a.steps, n_evals=1, eval_every=a.steps)
            path = a.out / f"k{a.k}_lr{lr:g}_s{seed}.csv"
            if not path.exists():
                jobs.append((cfg, a.probe_every, path))
    meta = a.out / "runs.json"
    runs = json.loads(meta.read_text()) if meta.exists() else {}
    with multiprocessing.Pool(a.jobs) as pool:
        for (cfg, _, path), line in zip(jobs, pool.imap(_job, jobs)):
            print(line, flush=True)
            runs[path.name] = {"code": provenance.code_state(), "probe_every": a.probe_every,
                               "config": json.loads(json.dumps(asdict(cfg), default=str))}
            meta.write_text(json.dumps(runs, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()

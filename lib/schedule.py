"""When a run changes its learning rate, evaluates, and stops: the schedules of `lib.train`.

Two schedules (``TrainConfig.schedule``): ``"cosine"``, a fixed budget (warm-up, then a cosine
decay over exactly ``n_steps``), and ``"plateau"``, a run that converges (warm-up, then a constant
rate halved on every plateau of the validation loss, until :class:`Plateau` says it has
converged). Introduced in chapter 4.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lib.config import TrainConfig


def lr_factor(cfg: TrainConfig, step: int, decays: int = 0) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up to 1, then a cosine decay to
    ``lr_final`` at ``n_steps`` (``schedule="cosine"``) or ``lr_decay ** decays`` after
    ``decays`` plateaus (``schedule="plateau"``)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "plateau":
        return cfg.lr_decay ** decays
    t = (step - cfg.warmup_steps) / max(1, cfg.n_steps - cfg.warmup_steps)
    return cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


@dataclass
class Plateau:
    """The convergence criterion of ``schedule="plateau"``: counts validations without a relative
    improvement of ``min_delta`` on the best loss; ``patience`` of them in a row make one decay,
    and the run has converged at the plateau after ``n_decays`` decays."""

    patience: int
    min_delta: float
    n_decays: int
    best: float = math.inf
    stale: int = 0
    decays: int = 0

    def update(self, loss: float) -> bool:
        """Record one validation loss (NaN never improves); return True once converged."""
        if loss < self.best * (1 - self.min_delta):
            self.best, self.stale = loss, 0
        else:
            self.stale += 1
        if self.stale >= self.patience:
            self.decays, self.stale = self.decays + 1, 0
        return self.decays > self.n_decays


def eval_steps(cfg: TrainConfig) -> np.ndarray:
    """Steps at which the model is evaluated: 0, ``n_evals`` log-spaced steps, every ``eval_every``,
    the checkpoints, and the last."""
    log = np.round(np.geomspace(1, cfg.n_steps, cfg.n_evals)).astype(int)
    lin = np.arange(0, cfg.n_steps + 1, cfg.eval_every)
    return np.union1d(np.union1d(log, lin), [0, cfg.n_steps, *cfg.checkpoints])



"""Partial runs: the state a training run needs to continue bit for bit after an interruption.

`lib.train.train` (``partial=``) saves a snapshot every :data:`SAVE_EVERY_S` seconds: weights,
Adam's moments, the mask and dropout random streams, the convergence criterion and the history
so far. The training data need no saving: the stream is a pure function of the step. Files are
written atomically (:func:`atomic_write`), so an interrupted save never leaves a broken file.
Introduced in chapter 4.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from lib.config import TrainConfig

#: Wall seconds between two saves of a partial run.
SAVE_EVERY_S = 60.0


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` for a temporary file next to ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def cpu_state(model: nn.Module) -> dict:
    """A float32 copy on the CPU of the model's state dict (detached from further training)."""
    return {n: t.detach().float().cpu().clone() for n, t in model.state_dict().items()}


def snapshot(cfg: TrainConfig, state: dict, model, opt, masks, plateau) -> dict:
    """Everything a resumed run needs: ``state`` (step, rows, states, train_s, eval_s), the
    weights, Adam, the mask generator, torch's global RNG and the ``plateau`` criterion."""
    return {"config": dataclasses.asdict(cfg), **state, "model": cpu_state(model),
            "opt": opt.state_dict(), "masks": masks.get_state(), "torch_rng": torch.get_rng_state(),
            "plateau": dataclasses.asdict(plateau)}


def save(path: Path, snap: dict) -> None:
    """Write a :func:`snapshot` to ``path`` atomically."""
    atomic_write(path, lambda tmp: torch.save(snap, tmp))


def resume(cfg: TrainConfig, path: Path, model, opt, masks, plateau) -> dict:
    """Load the partial run at ``path`` into the objects given; return its ``state``.

    Raises
    ------
    ValueError
        If the partial run was saved for another config.
    """
    snap = torch.load(path, weights_only=False)
    if snap["config"] != dataclasses.asdict(cfg):
        raise ValueError(f"partial run {path} belongs to another config; delete it to restart")
    model.load_state_dict(snap["model"])
    opt.load_state_dict(snap["opt"])
    masks.set_state(snap["masks"])
    torch.set_rng_state(snap["torch_rng"])
    for name, value in snap["plateau"].items():
        setattr(plateau, name, value)
    return {k: snap[k] for k in ("step", "rows", "states", "train_s", "eval_s")}

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
import tempfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from lib.config import TrainConfig
from lib.provenance import code_state

#: Wall seconds between two saves of a partial run.
SAVE_EVERY_S = 60.0


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` for a fresh temporary file next to ``path``, then rename it to
    ``path`` (two writers never share a temporary file; a failed write leaves none)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cpu_state(model: nn.Module) -> dict:
    """A float32 copy on the CPU of the model's state dict (detached from further training)."""
    return {n: t.detach().float().cpu().clone() for n, t in model.state_dict().items()}


def snapshot(cfg: TrainConfig, state: dict, model, opt, masks, plateau) -> dict:
    """Everything a resumed run needs: ``state`` (step, rows, states, train_s, eval_s, and the
    best validated weights under ``restore_best``), the weights, Adam, the mask generator,
    torch's global RNG (and CUDA's), the ``plateau`` criterion, and the hash of the library
    code that trained so far."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"config": dataclasses.asdict(cfg), **state, "model": cpu_state(model),
            "opt": opt.state_dict(), "masks": masks.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": cuda, "plateau": dataclasses.asdict(plateau),
            "lib_sha256": code_state()["lib_sha256"]}


def save(path: Path, snap: dict) -> None:
    """Write a :func:`snapshot` to ``path`` atomically."""
    atomic_write(path, lambda tmp: torch.save(snap, tmp))


def resume(cfg: TrainConfig, path: Path, model, opt, masks, plateau) -> dict:
    """Load the partial run at ``path`` into the objects given; return its ``state``.

    A partial run written by other library code (another ``lib_sha256``) is resumed, and that
    hash is listed in the state's ``resumed_from_lib`` so that the result's provenance says so
    (the golden-history test guards against behaviour changes between the two).

    Raises
    ------
    ValueError
        If the partial run was saved for another config.
    """
    snap = torch.load(path, weights_only=False, map_location="cpu")
    if snap["config"] != dataclasses.asdict(cfg):
        raise ValueError(f"partial run {path} belongs to another config; delete it to restart")
    model.load_state_dict(snap["model"])
    opt.load_state_dict(snap["opt"])
    masks.set_state(snap["masks"])
    torch.set_rng_state(snap["torch_rng"])
    if snap.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(snap["cuda_rng"])
    for name, value in snap["plateau"].items():
        setattr(plateau, name, value)
    state = {k: snap[k] for k in ("step", "rows", "states", "train_s", "eval_s", "best")
             if k in snap}
    other = [snap.get("lib_sha256")] if snap.get("lib_sha256") != code_state()["lib_sha256"] else []
    state["resumed_from_lib"] = [*snap.get("resumed_from_lib", []), *other]
    return state

"""Chapter 5's paper-shaped encoders: one attention head per layer and as many layers as the
tree is deep, the shape of the paper's models and of its BP construction.

On the ``laptop`` profile chapter 4's encoders have 4 heads (and 5 layers for masked tokens),
which learn faster on a CPU; these runs keep the laptop width and the converged recipe
(`lib.config.converged_config`) and change only the heads and the layer count, so that
per-head attention can be read against the constructed network of `lib.bp_transformer`. On the
``paper`` profile chapter 4's runs already have this shape and are returned as they are.
Introduced in chapter 5.
"""
from __future__ import annotations

from dataclasses import replace

from lib.config import TrainConfig, chapter4_runs, converged_config
from lib.provenance import PROFILES
from lib.tree import BOOK_SETTING


def runs(profile: str) -> dict[str, TrainConfig]:
    """``{task}_k{k}_1head`` for both tasks and ``k = 0..depth`` (seed 0): one head per layer,
    ``depth`` layers, otherwise chapter 4's converged run of the same name."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    depth, out = BOOK_SETTING["depth"], {}
    for task in ("root", "mlm"):
        for k in range(depth + 1):
            cfg = converged_config(task, profile, k)
            if profile == "paper":
                cfg = chapter4_runs(profile)[f"{task}_k{k}"]
            out[f"{task}_k{k}_1head"] = replace(
                cfg, model=replace(cfg.model, n_heads=1, n_layers=depth))
    return out

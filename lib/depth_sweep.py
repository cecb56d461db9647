"""How deep: chapter 4's converged ``k = 0`` runs with 1 to ``depth + 1`` encoder layers.

Every run of :func:`runs` is chapter 4's converged run of its task at ``k = 0``
(`lib.config.converged_config`: fresh training data every step, the plateau schedule, three
seeds) with the number of encoder layers changed and the step cap raised to :func:`step_cap`:
at chapter 4's cap of 12,000 steps for the root, the one- and two-layer root runs were still
improving (their validation loss fell to the last validation). At the layer count chapter 4
uses, the run *is* chapter 4's (`lib.config.chapter4_runs`: the same configuration, hence the
same entry of the model store), so the depth curve and chapter 4's gap table share those points.
:func:`table` gathers the stored runs into one row each (``data/depth.csv``), the model and exact
BP scored on the same held-out sequences (`lib.sample_complexity.scored`). The tree has
``depth`` levels, and the paper's construction of BP inside an encoder, like the book's
(`lib.bp_transformer`), uses that many layers: enough, not shown to be needed. The sweep asks
how the learned encoders fare with fewer and one more.
Introduced with the sample-complexity sweep.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from lib import store
from lib.config import REPLICAS, TrainConfig, chapter4_runs, converged_config
from lib.provenance import PROFILES
from lib.sample_complexity import scored, timing
from lib.tree import BOOK_SETTING

#: The committed table of the laptop sweep; the book reads it.
TABLE = Path(__file__).resolve().parents[1] / "data" / "depth.csv"


def step_cap(profile: str) -> int:
    """The step cap of the depth runs off chapter 4's depth: the larger of the two tasks'
    converged caps (``laptop``: the masked-token task's 40,000)."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    return max(converged_config(task, profile).n_steps for task in ("root", "mlm"))


def runs(profile: str) -> dict[str, TrainConfig]:
    """``{task}_k0_layers{n}`` and its replicas ``..._s{s}`` (:data:`lib.config.REPLICAS`) for
    both tasks and ``n = 1..depth + 1`` layers, fewest layers first (the cheapest runs)."""
    cap = step_cap(profile)                              # validates the profile
    chapter4, out = chapter4_runs(profile), {}
    for n in range(1, BOOK_SETTING["depth"] + 2):
        for seed in (0, *REPLICAS):
            suffix = f"_s{seed}" if seed else ""
            for task in ("root", "mlm"):
                cfg = chapter4[f"{task}_k0{suffix}"]
                if cfg.model.n_layers != n:
                    cfg = converged_config(task, profile, 0, seed)
                    cfg = replace(cfg, model=replace(cfg.model, n_layers=n), n_steps=cap)
                out[f"{task}_k0_layers{n}{suffix}"] = cfg
    return out


def table(sweep: dict[str, TrainConfig], root: Path = store.STORE) -> pd.DataFrame:
    """One row per stored run of ``sweep``: task, n_layers, seed, n_test, accuracy, bp_accuracy
    (fractions, on the same test sequences), stop_step, converged (stopped by the criterion,
    not the step cap), train_s, eval_s, threads, key, commit. Runs not stored yet are left
    out."""
    rows, references = [], {}
    for cfg in sweep.values():
        if store.status(cfg, root) != "ok":
            continue
        final, meta = scored(cfg, root, references)
        rows.append({"task": cfg.task, "n_layers": cfg.model.n_layers, "seed": cfg.init_seed,
                     **final, "stop_step": meta["stop_step"], "converged": meta["converged"],
                     **timing(meta), "key": store.key(cfg), "commit": meta["commit"]})
    return pd.DataFrame(rows)

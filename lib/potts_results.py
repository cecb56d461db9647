"""Chapter 6's stored fits (``data/potts/baselines_<profile>.csv``): read, check, summarise.

`scripts/potts_baselines.py` writes one row per fit (factored attention with and without softmax,
unconstrained pseudo-likelihood for several ridges, vanilla encoders for several seeds) and a JSON
record of its configuration and code. The chapter never fits these itself: `read` refuses a table
whose data settings differ from the chapter's, `best_ridge` keeps the ridge a validation set
chooses for plmDCA, and `summarise` gives the mean and standard error over seeds or training sets.
Introduced in chapter 6.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

COMMAND = ("OMP_NUM_THREADS=1 python scripts/potts_baselines.py --out data/potts  "
           "(from a clean worktree, see the script's docstring)")


def read(folder, profile: str, expected: dict) -> tuple[pd.DataFrame, dict]:
    """The stored fits and their record, checked against the settings they must share.

    Parameters
    ----------
    folder : str or pathlib.Path
        Folder of ``baselines_<profile>.csv`` and ``baselines_<profile>.json``.
    profile : str
        ``"laptop"`` or ``"paper"``.
    expected : dict
        Configuration fields (name: value) the record must hold with these values, e.g. the
        chapter's sample sizes and seeds.

    Returns
    -------
    fits : pandas.DataFrame
        One row per fit (columns: see the script's ``FIELDS``).
    record : dict
        ``config``, ``code``, ``environment`` and ``runs`` (commit and CPU seconds of each run).
    """
    folder = Path(folder)
    paths = [folder / f"baselines_{profile}.{ext}" for ext in ("csv", "json")]
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; compute it with {COMMAND}")
    record = json.loads(paths[1].read_text())
    stored = json.loads(json.dumps(record["config"]))
    for name, value in json.loads(json.dumps(expected)).items():
        if stored.get(name) != value:
            raise ValueError(f"expected: {name} = {value!r}, but {paths[1].name} was computed "
                             f"with {stored.get(name)!r}; recompute it with {COMMAND}")
    dirty = [run.get("commit") for run in [record.get("code", {}), *record.get("runs", [])]
             if run.get("dirty")]
    if dirty:
        raise ValueError(f"{paths[1].name} holds fits from uncommitted code (commits {dirty}); "
                         f"recompute them with {COMMAND}")
    return pd.read_csv(paths[0]), record


def best_ridge(fits: pd.DataFrame, model: str = "plm_full") -> pd.DataFrame:
    """Keep, of the fits of ``model`` at several ridges ``lam``, the one of lowest validation loss.

    The rows of other models are kept as they are (a factored layer's ridges are a sweep, not a
    selection).
    """
    if not {"model", "lam", "val_loss"} <= set(fits.columns):
        raise ValueError("fits must have the columns 'model', 'lam' and 'val_loss'")
    if model not in set(fits["model"]):
        raise ValueError(f"model must be one of {sorted(set(fits['model']))}, got {model!r}")
    swept = fits[fits["model"] == model]
    best = swept.loc[swept.groupby(["instance", "M", "rep"])["val_loss"].idxmin()]
    return pd.concat([fits[fits["model"] != model], best]).sort_index()


def summarise(fits: pd.DataFrame, by, value: str = "excess") -> pd.DataFrame:
    """Mean, standard error (``std / sqrt(n)``, NaN for one row) and count of ``value`` by group."""
    by = [by] if isinstance(by, str) else list(by)
    missing = set(by + [value]) - set(fits.columns)
    if missing:
        raise ValueError(f"fits has no column(s) {sorted(missing)}")
    g = fits.groupby(by, dropna=False)[value]
    out = g.agg(mean="mean", n="count", std="std")
    out["se"] = out["std"] / np.sqrt(out["n"])
    return out.drop(columns="std").reset_index()

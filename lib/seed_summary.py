"""Chapter 4's converged runs read across seeds: gaps to BP, filtered-on-full, KL stages.

Every function takes the histories of `lib.train.train` (one per filtering level ``k`` and seed)
and `lib.reference.bp_reference`'s table for the same test sequences, and returns tidy tables
whose headline numbers are seed means with standard errors (`lib.stats.mean_se`), every seed's
own value kept beside them. Introduced in chapter 4.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from lib.reference import bp_accuracy
from lib.stats import mean_se
from lib.validate import check_int, check_real


def final(history: pd.DataFrame) -> pd.DataFrame:
    """The last evaluation of a run (its whole test sets), indexed by ``k_test``."""
    return history[history.step == history.step.max()].set_index("k_test")


def _summarise(per_seed: pd.DataFrame, by: str, columns: list[str]) -> pd.DataFrame:
    """Mean and standard error over seeds of ``columns``, per value of ``by``."""
    groups = per_seed.groupby(by)
    out = {}
    for col in columns:
        stats = groups[col].agg(lambda v: mean_se(v))
        out[f"{col} mean"] = stats.str[0]
        out[f"{col} SE"] = stats.str[1]
    return pd.DataFrame(out).assign(seeds=groups.size())


def _check(histories: dict) -> None:
    """Raise unless ``histories`` maps (k, seed) to non-empty histories with the columns used."""
    need = {"step", "k_test", "accuracy"}
    if not histories or any(len(h) == 0 or need - set(h.columns) for h in histories.values()):
        raise ValueError(f"histories must map (k, seed) to non-empty training histories with "
                         f"columns {sorted(need)}")


def gaps(histories: dict[tuple[int, int], pd.DataFrame], reference: pd.DataFrame):
    """Gap to BP(k, k) on level-``k`` test data, in points, for runs trained at level ``k``.

    Parameters
    ----------
    histories : dict
        ``{(k, seed): history}``; at least two seeds per ``k``.
    reference : pandas.DataFrame
        `lib.reference.bp_reference` for the runs' test sets (columns k_model, k_test, accuracy).

    Returns
    -------
    per_seed : pandas.DataFrame
        One row per run: k, seed, accuracy, BP, gap (points, BP minus the network), steps.
    summary : pandas.DataFrame
        Index k: BP, gap mean, gap SE, largest seed gap, seeds.
    """
    _check(histories)
    rows = [{"k": k, "seed": s, "accuracy": final(h).accuracy[k],
             "BP": bp_accuracy(reference, k, k), "steps": int(h.step.max())}
            for (k, s), h in sorted(histories.items())]
    per_seed = pd.DataFrame(rows)
    per_seed["gap"] = 100 * (per_seed.BP - per_seed.accuracy)
    summary = _summarise(per_seed, "k", ["gap"])
    summary.insert(0, "BP", per_seed.groupby("k").BP.first())
    summary.insert(3, "largest seed gap", per_seed.groupby("k").gap.max())
    return per_seed, summary


def within(summary: pd.DataFrame, goal: float = 1.0, worst: float = 2.5) -> list[int]:
    """Levels whose seed-mean gap plus two standard errors is below ``goal`` points and whose
    largest seed gap is at most ``worst`` points (the chapter's reading of "within 1 point")."""
    check_real("goal", goal, 0.0)
    check_real("worst", worst, 0.0)
    ok = (summary["gap mean"] + 2 * summary["gap SE"] < goal) & (
        summary["largest seed gap"] <= worst)
    return [int(k) for k in summary.index[ok]]


def on_full_data(histories: dict[tuple[int, int], pd.DataFrame],
                 reference: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs trained at level ``k`` tested on full (``k = 0``) data, against BP(k, 0).

    Returns ``(per_seed, summary)``: per run, k, seed, the accuracy difference to BP(k, 0) in
    points (network minus BP), and the mean KL (nats) to BP_k and to BP_0 on ``k = 0`` data;
    the summary gives their seed means and standard errors per ``k`` and BP(k, 0).
    """
    _check(histories)
    rows = []
    for (k, s), h in sorted(histories.items()):
        last = final(h)
        rows.append({"k": k, "seed": s,
                     "minus BP(k, 0)": 100 * (last.accuracy[0] - bp_accuracy(reference, k, 0)),
                     "KL to BP_k": last[f"kl_bp{k}"][0], "KL to BP_0": last["kl_bp0"][0]})
    per_seed = pd.DataFrame(rows)
    summary = _summarise(per_seed, "k", ["minus BP(k, 0)", "KL to BP_k", "KL to BP_0"])
    summary.insert(0, "BP(k, 0)", [bp_accuracy(reference, k, 0) for k in summary.index])
    return per_seed, summary


def kl_fall(histories: dict[tuple[int, int], pd.DataFrame], n_monitor: int,
            window: int) -> pd.DataFrame:
    """How fast each run still approached BP_k when it stopped.

    Parameters
    ----------
    histories : dict
        ``{(k, seed): history}`` with the columns ``kl_bp<k>`` and ``n_test``.
    n_monitor : int
        Size of the monitored test subsets (the rows compared; the final full-set row is not).
    window : int
        Steps, at least 1: the last monitored evaluation is compared with the one ``window``
        steps before it (or the nearest earlier one).

    Returns
    -------
    pandas.DataFrame
        One row per run: k, seed, steps (the stop), step and KL (nats) of the two monitored
        evaluations on level-``k`` data, and "fall %", the relative decrease of the KL.
    """
    _check(histories)
    check_int("n_monitor", n_monitor, 1)
    check_int("window", window, 1)
    rows = []
    for (k, s), h in sorted(histories.items()):
        mon = h[(h.n_test == n_monitor) & (h.k_test == k)].set_index("step")[f"kl_bp{k}"]
        if len(mon) < 2:
            raise ValueError(f"run (k={k}, seed={s}) has fewer than two monitored evaluations "
                             f"of n_test = {n_monitor}")
        last = mon.index.max()
        before = mon.index[mon.index <= last - window].max()
        if np.isnan(before):
            raise ValueError(f"window = {window} reaches before the first evaluation of run "
                             f"(k={k}, seed={s})")
        rows.append({"k": k, "seed": s, "steps": int(h.step.max()), "from step": int(before),
                     "to step": int(last), "KL from": mon[before], "KL to": mon[last]})
    out = pd.DataFrame(rows)
    out["fall %"] = 100 * (1 - out["KL to"] / out["KL from"])
    return out


def nearest_by_kl(kl: pd.DataFrame, ratio: float = 0.5) -> pd.Series:
    """Per row (a training step), the BP row ``m`` whose divergence is below ``ratio`` times
    every other's, or ``-1`` ("between rows") when none is.

    Parameters
    ----------
    kl : pandas.DataFrame
        Columns ``kl_bp0..kl_bp{depth}`` (KL(BP_m || network), nats), one row per step.
    ratio : float
        In ``(0, 1]``.
    """
    if not 0 < check_real("ratio", ratio, 0.0) <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    names = [str(c) for c in kl.columns]
    if len(names) < 2 or not all(re.fullmatch(r"kl_bp\d+", c) for c in names):
        raise ValueError(f"kl must have at least two columns kl_bp<m>, got {names}")
    rows = np.array([int(c[5:]) for c in names])           # the BP row of every column
    values = kl.to_numpy()
    order = np.sort(values, axis=1)
    best = rows[values.argmin(axis=1)]
    return pd.Series(np.where(order[:, 0] < ratio * order[:, 1], best, -1), kl.index)


def stages(rows: pd.Series) -> str:
    """The :func:`nearest_by_kl` rows in order, repeats dropped, e.g. ``"4 → between → 0"``."""
    keep = rows[rows != rows.shift()]
    return " → ".join("between" if m < 0 else str(int(m)) for m in keep)

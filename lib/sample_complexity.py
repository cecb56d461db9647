"""How much data: root classification trained on fixed training sets of ``P`` sequences.

Every run of :func:`runs` is chapter 4's root classifier (`lib.config.converged_config`) trained
on a fixed set of ``P`` sequences drawn at filtering level ``k``, cycled in shuffled epochs, and
stopped early: the plateau schedule with ``restore_best``, so the weights scored are those of the
lowest loss on a held-out validation set (``n_val`` sequences, used only to choose when to stop
and not counted in ``P``). Every run is then tested on the same ``N_TEST`` held-out sequences of
level ``k`` as exact BP(k, k). :func:`table` gathers the stored runs into one row each
(``data/sample_complexity.csv``), and :func:`p_star` reads off the smallest ``P`` within ``eps``
of BP (:func:`seed_p_star`, each seed's own). The same grid at ``k = 0`` is trained again from
chapter 4's masked-token encoder, frozen or fine-tuned (the paper's pre-training comparison),
and from scratch at that encoder's depth; `lib.frozen_head` puts the authors' two-layer head,
instead of chapter 4's linear readout, on the frozen encoder.

Two caveats belong next to every result: the validation set (``n_val`` labelled sequences) is
extra data that only chooses the stopping step; and the masked-token encoder was pre-trained on
a fresh stream that excluded its own test sequences, not these, so some test inputs (never
their root labels) were among its pre-training inputs (`lib.overlap.seen_in_stream` finds them).
Introduced in chapter 4.
"""
from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from lib import overlap, reference, run_data, store, train
from lib.config import TrainConfig, chapter4_runs, converged_config
from lib.provenance import PROFILES
from lib.tree import BOOK_SETTING
from lib.validate import check_real

#: Training-set sizes: a log grid over a factor 64 (laptop) or 2,048 (paper).
SIZES = {"laptop": tuple(2**e for e in range(9, 16)), "paper": tuple(2**e for e in range(9, 21))}
#: Seeds of the replicas: ``init_seed = data_seed = seed`` (a new training set and a new init).
SEEDS = (0, 1, 2)
#: Held-out test sequences per level, the same for every run and for BP.
N_TEST = 20_000
#: Early stopping: validate every 250 steps and keep the best weights; after 4 validations
#: without improvement halve the rate once, and stop after 4 more (chapter 4's plateau rule with
#: one halving instead of three); monitored at 8 log-spaced steps. Two quicker rules stopped
#: improving runs on the noise of the validation loss, which at a constant rate jumps by 10-20 %
#: between validations: validating every 100 steps with a patience of 3 stopped k = 0,
#: P = 2^14, seed 1 at step 3,900 (accuracy 0.72; still improving at 12,000 with patience,
#: 0.84), and stopping at a validation loss 10 % above its best (Prechelt's GL_10) stopped
#: k = 0, P = 2^14 and 2^15, seed 0, one validation after a new best (0.238 then 0.274 at
#: 2^14, whose loss fell to 0.130 by step 14,250).
EARLY_STOPPING = dict(restore_best=True, val_every=250, patience=4, n_decays=1,
                      n_val=2048, n_test=N_TEST, n_monitor=1024, n_evals=8)
#: Step cap of the laptop sweep (the paper profile keeps the step cap of chapter 4's converged
#: root run): at 2^15 sequences, about 230 epochs.
N_STEPS = {"laptop": 30_000}
#: The store of these runs (kept apart from chapter 4's).
STORE = Path(__file__).resolve().parents[1] / "data" / "sample_complexity"
#: :func:`table` of the laptop sweep, committed; the chapter reads it.
TABLE = STORE.parent / "sample_complexity.csv"


#: Dropout on a fixed training set: the paper's 0.1 (chapter 4's laptop runs drop it, as fresh
#: data never overfits; without it a laptop run on 2^13 sequences overfits within 600 steps).
DROPOUT = 0.1


def run_config(profile: str, k: int, P: int, seed: int) -> TrainConfig:
    """Root classification at level ``k`` on ``P`` training sequences, stopped early, seed
    ``seed``: chapter 4's converged root run with :data:`DROPOUT` and :data:`EARLY_STOPPING`."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    cfg = converged_config("root", profile, k, seed)
    n_steps = N_STEPS.get(profile, cfg.n_steps)
    return replace(cfg, model=replace(cfg.model, dropout=DROPOUT), n_train=P, n_steps=n_steps,
                   eval_every=n_steps, **EARLY_STOPPING)


def pretrained_config(profile: str, P: int, seed: int, frozen: bool | None) -> TrainConfig:
    """:func:`run_config` at ``k = 0`` with the layer count of chapter 4's converged masked-token
    encoder (``mlm_k0``), started from it with the readout trained alone (``frozen=True``) or
    everything fine-tuned (``False``), or trained from scratch (``None``: the baseline of the
    same depth). A frozen encoder is a fixed feature map and runs as it was pre-trained, with
    its own dropout (none on the laptop) rather than :data:`DROPOUT`, which would feed the
    readout features the encoder never learned to produce."""
    source = chapter4_runs(profile)["mlm_k0"]
    cfg = run_config(profile, 0, P, seed)
    cfg = replace(cfg, model=replace(cfg.model, n_layers=source.model.n_layers))
    if frozen is None:
        return cfg
    if frozen:
        cfg = replace(cfg, model=replace(cfg.model, dropout=source.model.dropout))
    return replace(cfg, init_from=store.key(source), freeze_encoder=frozen)


def runs(profile: str) -> dict[str, TrainConfig]:
    """The sweep, by name ``{task}_k{k}_P{P}_s{seed}``: task ``root`` (from scratch, every k),
    then at ``k = 0`` ``root_pretrained_frozen``, ``root_pretrained_finetuned`` and, when the
    pre-trained encoder is deeper than the root model, ``root_layers{n}`` (from scratch at its
    depth). Seed by seed, smallest ``P`` first: every task's seed-0 curve before any replica,
    the cheapest runs first within each."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    deeper = pretrained_config(profile, SIZES[profile][0], 0, None).model.n_layers
    modes = {"root_pretrained_frozen": True, "root_pretrained_finetuned": False}
    if deeper != run_config(profile, 0, SIZES[profile][0], 0).model.n_layers:
        modes[f"root_layers{deeper}"] = None
    out = {}
    for seed in SEEDS:
        out |= {f"root_k{k}_P{P}_s{seed}": run_config(profile, k, P, seed)
                for P in SIZES[profile] for k in range(BOOK_SETTING["depth"] + 1)}
        out |= {f"{task}_k0_P{P}_s{seed}": pretrained_config(profile, P, seed, frozen)
                for P in SIZES[profile] for task, frozen in modes.items()}
    return out


def label(name: str) -> str:
    """The task label of a run of :func:`runs`, from its name ``{task}_k{k}_P{P}_s{seed}``."""
    match = re.fullmatch(r"(\w+?)_k\d+_P\d+_s\d+", name)
    if match is None:
        raise ValueError(f"name must look like '{{task}}_k{{k}}_P{{P}}_s{{seed}}', got {name!r}")
    return match.group(1)


def table(sweep: dict[str, TrainConfig], root: Path = STORE,
          seen: np.ndarray | None = None) -> pd.DataFrame:
    """One row per stored run of ``sweep``: task (:func:`label`), k, P, seed, n_test, accuracy,
    bp_accuracy (fractions, on the same test sequences), best_step, stop_step, converged
    (stopped by the criterion, not the step cap), train_s and eval_s (wall seconds of training
    and of evaluation), threads, key, commit. With ``seen`` (a boolean mask over the level-0
    test sequences, e.g. :func:`pretraining_seen`), the ``k = 0`` rows also hold n_unseen,
    accuracy_unseen and bp_accuracy_unseen (`lib.overlap.unseen_scores`; the stored model is
    scored again). Runs not stored yet are left out (:func:`p_star` refuses an incomplete
    grid)."""
    rows, references, unseen = [], {}, {}
    for name, cfg in sweep.items():
        if store.status(cfg, root) != "ok":
            continue
        final, meta = scored(cfg, root, references)
        if seen is not None and cfg.k_train == 0:
            final |= overlap.unseen_scores(cfg, predicted_roots(cfg, root), seen, unseen)
        rows.append({"task": label(name), "k": cfg.k_train, "P": cfg.n_train,
                     "seed": cfg.init_seed, **final, "best_step": meta["best_step"],
                     "stop_step": meta["stop_step"], "converged": meta["converged"],
                     **timing(meta), "key": store.key(cfg), "commit": meta["commit"]})
    return pd.DataFrame(rows)


def scored(cfg: TrainConfig, root: Path, references: dict) -> tuple[dict, dict]:
    """A stored run's final evaluation on its own level and exact BP's on the same sequences.

    Returns ``({"n_test", "accuracy", "bp_accuracy"}, provenance)``: the run's evaluation at its
    stopping step on test level ``k_train``, BP(k_train, k_train) on those sequences, and the
    entry's provenance record. ``references`` caches the BP tables (`lib.reference.bp_reference`)
    across runs that share their test sets; it is filled in place.
    """
    stem = Path(root) / store.key(cfg)
    meta = json.loads(Path(f"{stem}.json").read_text())["provenance"]
    history = pd.read_csv(f"{stem}.csv")
    final = history[(history.step == meta["stop_step"]) & (history.k_test == cfg.k_train)]
    return {"n_test": int(final.n_test.item()), "accuracy": final.accuracy.item(),
            "bp_accuracy": bp_accuracy(cfg, references)}, meta


def predicted_roots(cfg: TrainConfig, root: Path = STORE) -> np.ndarray:
    """Stored run ``cfg``'s root (n_test,) for each of its test sequences of level
    ``k_train``."""
    _, leaves = run_data.test_sets(cfg, run_data.grammar(cfg))[cfg.k_train]
    return train.log_probs(store.load(cfg, root)[0], leaves).argmax(-1).numpy()


def pretraining_seen(profile: str) -> np.ndarray:
    """Which of the sweep's ``N_TEST`` test sequences of level 0 chapter 4's masked-token
    encoder (``mlm_k0``, the pre-trained runs' encoder) had among its training inputs, up to
    its stopping step (`lib.overlap.seen_in_stream`): a boolean array (N_TEST,)."""
    source, cfg = chapter4_runs(profile)["mlm_k0"], run_config(profile, 0, SIZES[profile][0], 0)
    leaves = run_data.test_sets(cfg, run_data.grammar(cfg))[0][1]
    return overlap.seen_in_stream(source, store.load(source)[2]["stop_step"], leaves)


def timing(meta: dict) -> dict:
    """A stored run's wall seconds of training and of evaluation, and its thread count."""
    return {"train_s": round(meta["train_s"], 1), "eval_s": round(meta["eval_s"], 1),
            "threads": meta["threads"]}


def bp_accuracy(cfg: TrainConfig, references: dict) -> float:
    """BP(k_train, k_train)'s accuracy on run ``cfg``'s test sequences of level ``k_train``;
    ``references`` caches the BP tables by test sets and is filled in place."""
    tests = (cfg.task, cfg.q, cfg.depth, cfg.sigma, cfg.grammar_seed, cfg.test_seed, cfg.n_test)
    if tests not in references:
        references[tests] = reference.bp_reference(cfg)
    return reference.bp_accuracy(references[tests], cfg.k_train, cfg.k_train)


def first_validation(cfg: TrainConfig) -> int:
    """The first step at which run ``cfg`` is validated: validations start once the warm-up
    is over, at the multiples of ``val_every`` (`lib.train`); no weights before it can be
    kept."""
    start, every = max(1, cfg.warmup_steps), cfg.val_every
    return -(-start // every) * every


def early_excess(cfg: TrainConfig, root: Path = STORE) -> float:
    """How much better stored run ``cfg`` scored before its first validation than with the
    weights it kept: the largest accuracy of its evaluation trace (log-spaced steps from 0,
    ``n_monitor`` test sequences of level ``k_train``) at a step before
    :func:`first_validation`, minus its final accuracy (``n_test`` sequences), as a fraction.
    Positive when better weights came before validation could see them. Both are test scores,
    so this diagnoses the stopping rule and chooses nothing; as a maximum over a few noisy
    steps, it is biased up."""
    history = pd.read_csv(Path(root) / f"{store.key(cfg)}.csv")
    own = history[history.k_test == cfg.k_train]
    early = own[own.step < first_validation(cfg)]
    return float(early.accuracy.max() - own.accuracy.iloc[-1])


def p_star(results: pd.DataFrame, eps: float, sizes) -> pd.DataFrame:
    """The smallest ``P`` from which on the seed-mean gap to BP stays within ``eps``, per ``k``.

    Parameters
    ----------
    results : pandas.DataFrame
        :func:`table`'s rows of one task (columns k, P, accuracy, bp_accuracy), at least two
        seeds for every (k, P) with P in ``sizes``.
    eps : float
        Tolerance in accuracy (a fraction, e.g. 0.02 for 2 points), ``> 0``.
    sizes : sequence of int
        The grid of training-set sizes; every level must have all of them.

    Returns
    -------
    pandas.DataFrame
        Index k; columns P_star (NaN if no size of the grid reaches it), P_low and P_high: the
        same with the gap lowered or raised by one standard error of the seed mean (the
        uncertainty of P_star on the grid).
    """
    eps = check_real("eps", eps, 1e-12)
    gap = results.assign(gap=results.bp_accuracy - results.accuracy)
    stats = gap.groupby(["k", "P"]).gap.agg(["mean", "sem", "count"]).reset_index()
    for k, s in stats.groupby("k"):
        have = dict(zip(s.P, s["count"]))
        short = [P for P in sizes if have.get(P, 0) < 2]
        if short:
            raise ValueError(f"results must hold at least two seeds for every (k, P); level "
                             f"{k} lacks them at P = {short}")
    out = {}
    for k, s in stats[stats.P.isin(list(sizes))].groupby("k"):
        s = s.sort_values("P")
        out[k] = {col: _first_from_which(s.P.to_numpy(), s["mean"].to_numpy() + shift <= eps)
                  for col, shift in (("P_star", 0), ("P_low", -s["sem"]), ("P_high", s["sem"]))}
    return pd.DataFrame.from_dict(out, orient="index").rename_axis("k")


def seed_p_star(results: pd.DataFrame, eps: float, sizes) -> pd.Series:
    """Each seed's own ``P*``: the smallest ``P`` of ``sizes`` from which on that seed's gap to
    BP stays within ``eps`` (NaN if its gap at the largest size is not), indexed by (k, seed).

    ``results`` has columns k, P, seed, accuracy, bp_accuracy and one row per (k, P, seed) for
    every ``P`` in ``sizes``; a seed is the same index across sizes (a new training set and a
    new initialisation at each ``P``), so its curve is one replica of the sweep, not one
    network trained on growing data.
    """
    eps = check_real("eps", eps, 1e-12)
    gap = results[results.P.isin(list(sizes))].assign(
        gap=results.bp_accuracy - results.accuracy)
    out = {}
    for (k, seed), s in gap.groupby(["k", "seed"]):
        if sorted(s.P) != sorted(sizes):
            raise ValueError(f"results must hold one row per size for every (k, seed); level "
                             f"{k}, seed {seed} has P = {sorted(s.P)}")
        s = s.sort_values("P")
        out[(k, seed)] = _first_from_which(s.P.to_numpy(), s.gap.to_numpy() <= eps)
    return pd.Series(out, name="P_star").rename_axis(["k", "seed"])


def _first_from_which(P: np.ndarray, ok) -> float:
    """The smallest ``P[i]`` with ``ok[j]`` for every ``j >= i`` (NaN if ``ok[-1]`` is false)."""
    ok = np.asarray(ok, dtype=bool)
    if not ok[-1]:
        return float("nan")
    bad = np.flatnonzero(~ok)
    return float(P[bad[-1] + 1] if len(bad) else P[0])

"""The authors' readout on a frozen pre-trained encoder: a two-layer head on its features.

The frozen runs of `lib.sample_complexity` train chapter 4's root readout, one linear map of
the flattened last layer (L x d_model features), on top of the masked-token encoder. The
authors' fine-tuning script puts a multi-layer perceptron on the same flattened features
instead (hidden layers [128, 64, 32] or [64]). :func:`fit` trains the [64] head
(`lib.two_layer_probes`: one hidden ReLU layer, Adam, early stopping on validation loss) on
the features of exactly the sequences a frozen run of the sweep trains, validates and is
tested on (:func:`training_set`), so the two readouts see the same data; they differ in the
readout and in how it is trained (the linear readout by the sweep's recipe, the head by
:data:`HEAD`: its own optimiser, minibatches and stopping in epochs). The settings of
:data:`HEAD` are ours; the paper's are not known here. ``scripts/frozen_head.py``
fits every size and seed of the sweep into ``data/frozen_head.json`` (:func:`table` reads
it), with wider heads at the largest size as a check of the width. Introduced in chapter 4's
section on data.
"""
from __future__ import annotations

import itertools
import time

import numpy as np
import pandas as pd
import torch

from lib import overlap, results, run_data, store
from lib import sample_complexity as sc
from lib.config import TrainConfig, chapter4_runs
from lib.transformer import Transformer
from lib.two_layer_probes import fit_two_layer_probes

#: The head and its training: one hidden layer of 64 ReLU units (the paper's [64] head), Adam at
#: a constant rate on minibatches of 32 sequences, stopped 10 epochs after the lowest
#: validation loss (ours, except the width).
HEAD = dict(hidden=64, lr=1e-3, batch_size=32, max_epochs=200, patience=10)
#: Wider heads, fitted at the largest size only: whether the width limits what a head reads.
WIDER = (256, 1024)
#: Where the record lives and its file stem (`lib.results`).
FOLDER, NAME = sc.STORE.parent, "frozen_head"
#: The command that regenerates the record.
COMMAND = "python scripts/frozen_head.py --out data"
#: The task label of these rows in tables shaped like `lib.sample_complexity.table`.
TASK = "root_pretrained_frozen_mlp"


def training_set(cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_train`` training ``(roots (P,), leaves (P, L))`` of a fixed-set run, in the order
    of its first epoch (`lib.run_data.batches`, which drops no sequence when the batch size
    divides ``n_train``)."""
    M, _, _, exclude = run_data.held_out(cfg)
    return _first_epoch(cfg, M, exclude)


def _first_epoch(cfg: TrainConfig, M: np.ndarray, exclude: np.ndarray):
    """:func:`training_set` from the run's grammar and held-out codes (`lib.run_data.held_out`)."""
    if cfg.n_train is None or cfg.n_train % cfg.batch_size:
        raise ValueError(f"cfg.n_train must be a multiple of cfg.batch_size "
                         f"({cfg.batch_size}), got {cfg.n_train}")
    epoch = list(itertools.islice(run_data.batches(cfg, M, exclude),
                                  cfg.n_train // cfg.batch_size))
    return np.concatenate([r for r, _ in epoch]), np.concatenate([x for _, x in epoch])


@torch.no_grad()
def features(encoder: Transformer, leaves, rows: int = 1024) -> np.ndarray:
    """The encoder's last layer, flattened: (n, L * d_model) float32 for leaves (n, L)."""
    encoder.eval()
    x = torch.as_tensor(np.asarray(leaves), dtype=torch.long)
    return torch.cat([encoder.hidden(x[i:i + rows])[0].flatten(1)
                      for i in range(0, len(x), rows)]).numpy()


def fit(cfg: TrainConfig, encoder: Transformer, references: dict | None = None,
        hidden: int = HEAD["hidden"], seen: np.ndarray | None = None) -> dict:
    """Train the head on the frozen ``encoder``'s features of run ``cfg``'s data and score it.

    Parameters
    ----------
    cfg : TrainConfig
        A frozen run of `lib.sample_complexity.runs` (``freeze_encoder``): its training,
        validation and test sequences are used, and its ``init_seed`` seeds the head.
    encoder : Transformer
        The masked-token model stored under ``cfg.init_from`` (`lib.store.require`).
    references : dict, optional
        Cache of BP tables (`lib.sample_complexity.bp_accuracy`), filled in place.
    hidden : int
        Hidden units of the head (the rest of :data:`HEAD` is kept).
    seen : array_like of bool, shape (n_test,), optional
        Test sequences the encoder saw in pre-training
        (`lib.sample_complexity.pretraining_seen`): the head is also scored without them.

    Returns
    -------
    dict
        hidden, n_test, accuracy, bp_accuracy (fractions, on the same test sequences),
        best_epoch, epochs (run), fit_s (seconds, features included); with ``seen``, also
        n_unseen, accuracy_unseen and bp_accuracy_unseen (`lib.overlap.unseen_scores`).
    """
    if not cfg.freeze_encoder:
        raise ValueError("cfg must be a frozen run (freeze_encoder=True), got "
                         f"freeze_encoder={cfg.freeze_encoder}")
    mine = (encoder.cfg.task, encoder.cfg.d_model, encoder.cfg.n_layers, encoder.cfg.seq_len)
    if mine != ("mlm", cfg.model.d_model, cfg.model.n_layers, cfg.model.seq_len):
        raise ValueError(f"encoder must be a masked-token model of the run's shape, got "
                         f"(task, d_model, n_layers, seq_len) = {mine}")
    start = time.perf_counter()
    M, tests, (y_val, x_val), exclude = run_data.held_out(cfg)    # drawn once per fit
    y, x = _first_epoch(cfg, M, exclude)
    y_test, x_test = tests[cfg.k_train]
    H, H_val, H_test = (features(encoder, leaves)[None] for leaves in (x, x_val, x_test))
    head = fit_two_layer_probes(H, y[None], cfg.q, H_val, y_val[None], seed=cfg.init_seed,
                                **{**HEAD, "hidden": hidden})
    predicted = head.predict_proba(H_test)[0, 0].argmax(1)
    bp = sc.bp_accuracy(cfg, {} if references is None else references)
    unseen = {} if seen is None else overlap.unseen_scores(cfg, predicted, seen)
    return {"hidden": hidden, "n_test": len(y_test),
            "accuracy": float((predicted == y_test).mean()), "bp_accuracy": bp, **unseen,
            "best_epoch": int(head.best_epoch[0, 0]), "epochs": len(head.val_loss) - 1,
            "fit_s": time.perf_counter() - start}


def encoder(profile: str = "laptop") -> Transformer:
    """The masked-token model the frozen runs start from (chapter 4's ``mlm_k0``), read from
    the model store (`lib.store.require`: never trained here)."""
    return store.require(chapter4_runs(profile)["mlm_k0"], "mlm_k0")[0]


def frozen_runs(profile: str = "laptop") -> dict[str, TrainConfig]:
    """The frozen runs of `lib.sample_complexity.runs`, by record key ``P{P}_s{seed}``."""
    return {f"P{cfg.n_train}_s{cfg.init_seed}": cfg for name, cfg in sc.runs(profile).items()
            if sc.label(name) == "root_pretrained_frozen"}


def fits(profile: str = "laptop") -> dict[str, tuple[TrainConfig, int]]:
    """Every fit of the record, by key: ``(frozen run, hidden units)``. The head of :data:`HEAD`
    on every run of :func:`frozen_runs` (key ``P{P}_s{seed}``), and the :data:`WIDER` heads on
    the runs of the largest size (``P{P}_s{seed}_h{hidden}``)."""
    runs = frozen_runs(profile)
    largest = max(cfg.n_train for cfg in runs.values())
    out = {key: (cfg, HEAD["hidden"]) for key, cfg in runs.items()}
    return out | {f"{key}_h{w}": (cfg, w) for key, cfg in runs.items()
                  if cfg.n_train == largest for w in WIDER}


def record_config(profile: str = "laptop") -> dict:
    """Every setting the record depends on: the head, and for each fit the store key of its
    frozen run (which fixes its data, seeds and encoder) and its width."""
    return {"head": HEAD, "fits": {key: [store.key(cfg), hidden]
                                   for key, (cfg, hidden) in fits(profile).items()}}


def table(profile: str = "laptop", folder=FOLDER) -> pd.DataFrame:
    """The stored record as rows shaped like `lib.sample_complexity.table` (task :data:`TASK`,
    k, P, seed, n_test, accuracy, bp_accuracy) plus hidden, best_epoch, epochs, fit_s and
    cpu_s, one per fit of :func:`fits`; refuses a record that is stale or incomplete
    (`lib.results.load`)."""
    jobs = fits(profile)
    record = results.load(folder, NAME, record_config(profile), jobs, COMMAND)
    return pd.DataFrame([{"task": TASK, "k": cfg.k_train, "P": cfg.n_train,
                          "seed": cfg.init_seed, **record["runs"][key],
                          "commit": record["code"]["commit"]}
                         for key, (cfg, _) in jobs.items()])

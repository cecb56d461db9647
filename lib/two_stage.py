"""The two training stages of the one-layer model, timed over seeds, optimisers and learning rates.

Every weight of `lib.one_layer` (``W^Q, W^K, W^V`` and biases) trains from a small
initialisation on LDA documents; `run` records the value gap (`lib.topic_stats.value_gap`) and
the attention ratio (`lib.topic_stats.attention_stats`) along the way. The step budget of a run
scales as ``1 / lr`` from a reference budget per optimiser. That budget does not guarantee a
finished attention stage (with the stored SGD budgets the ratio is still rising at the end):
chapter 7 times the stages with `lib.topic_stats.stage_time` and tests whether each curve has
levelled off with `lib.topic_stats.late_rise_share`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from lib import lda, masked_lm, one_layer, topic_stats
from lib.validate import check_int, check_real


@dataclass(frozen=True)
class StageConfig:
    """Settings of the sweep: data and masking as in the authors' code, the rest our choice.

    ``reference`` maps each optimiser to ``(lr, steps)``: a run at learning rate ``lr'`` gets
    ``steps * lr / lr'`` steps (`budget`).
    """

    T: int = 10                                   # [code]
    v: int = 10                                   # [code]
    alpha: float = 0.1                            # [code]
    min_len: int = 100                            # [code]
    max_len: int = 150                            # [code]
    p_select: float = 0.15                        # [code]
    p_random: float = 0.1                         # [code]
    p_keep: float = 0.1                           # [code]
    batch_size: int = 40                          # [code]
    n_train: int = 5_000                          # [our choice]
    n_eval: int = 100                             # [our choice] documents for the ratio
    init_scale: float = 0.1                       # [our choice] W = 0.1 U[0, 1), b = 0
    lrs: tuple = (("adam", (3e-3, 1e-2, 3e-2)), ("sgd", (20.0, 40.0, 80.0)))
    reference: tuple = (("adam", (1e-2, 600)), ("sgd", (40.0, 1_500)))
    n_records: int = 60                           # records per run
    seeds: tuple = (0, 1, 2)

    def budget(self, optimizer: str, lr: float) -> int:
        """Steps of a run: the reference budget of ``optimizer`` scaled by ``lr_ref / lr``."""
        if optimizer not in dict(self.reference):
            raise ValueError(f"optimizer must be one of {sorted(dict(self.reference))}, "
                             f"got {optimizer!r}")
        lr_ref, steps = dict(self.reference)[optimizer]
        lr = check_real("lr", lr, 0.0)
        if lr == 0.0:
            raise ValueError("lr must be > 0")
        return int(math.ceil(round(steps * lr_ref / lr, 9)))   # round: 40.000000000000004

    def runs(self) -> list[tuple[str, float, int]]:
        """Every ``(optimizer, lr, seed)`` of the sweep."""
        return [(opt, lr, s) for opt, lrs in self.lrs for lr in lrs for s in self.seeds]


def key(optimizer: str, lr: float, seed: int) -> str:
    """Name of a run in the stored record, e.g. ``adam_lr0.01_s0``."""
    return f"{optimizer}_lr{lr:g}_s{seed}"


def run(cfg: StageConfig, optimizer: str, lr: float, seed: int) -> pd.DataFrame:
    """Train everything from the small initialisation and record both stages.

    Seeds: corpus ``3 seed``, masks ``3 seed + 1``, evaluation documents ``3 seed + 2``,
    initialisation and batch order ``seed``.

    Returns
    -------
    pandas.DataFrame
        One row per record: ``step``, ``train_loss``, ``value gap``, ``attention ratio``.
    """
    seed = check_int("seed", seed, 0)
    steps = cfg.budget(optimizer, lr)
    sizes = lda.corpus_sizes(cfg)
    tokens, _ = lda.sample_corpus(cfg.n_train, **sizes, seed=3 * seed)
    train = lda.mask_corpus(tokens, cfg.T, cfg.v, p_select=cfg.p_select,
                            p_random=cfg.p_random, p_keep=cfg.p_keep, seed=3 * seed + 1)
    eval_tokens, _ = lda.sample_corpus(cfg.n_eval, **sizes, seed=3 * seed + 2)
    docs = lda.unmasked(eval_tokens)

    def record(m):
        return {"value gap": topic_stats.value_gap(m),
                "attention ratio": topic_stats.attention_stats(m, docs)["ratio"]}

    model = one_layer.OneLayerModel(
        one_layer.TopicModelConfig(cfg.T, cfg.v, init_scale=cfg.init_scale), seed=seed)
    return masked_lm.train(model, train, steps, lr=lr, optimizer=optimizer,
                           batch_size=cfg.batch_size, order_seed=seed, record=record,
                           record_every=max(steps // cfg.n_records, 1), progress=False)

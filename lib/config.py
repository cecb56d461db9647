"""Training configurations and the two run profiles of chapter 4 (``laptop`` and ``paper``).

A :class:`TrainConfig` is the full record of one training run: grammar, data, model, optimiser,
evaluation and the four seeds. The model store (`lib.store`) keys trained weights by it, so two
runs with equal configs are the same run.

The ``paper`` profile keeps the authors' choices (arXiv 2408.15138, reference code): d_model 128,
4 layers, 1 head, feed-forward 2048, dropout 0.1, Adam at a constant 1e-4, batch 32, a fixed
training set of 2**17 (root) or 2**18 (MLM) sequences for 200 or 2,000 epochs. The ``laptop``
profile (the default, minutes on one CPU core) changes architecture and optimiser: d_model 32,
4 heads, feed-forward 128, no dropout, Adam 4e-3 with warm-up and cosine decay, batches of 256
fresh samples every step, and 5 layers for MLM. Its runs are short, a CPU budget rather than a
convergence criterion: 4,000 steps at every k (and 16,000-step masked-token runs at every k),
2,000 in the depth sweep and 400 in the training-set-size sweep. The two k = 0 runs keep nine weight checkpoints for chapter 5.
Introduced in chapter 4.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from lib.provenance import PROFILES
from lib.transformer import ModelConfig
from lib.tree import BOOK_SETTING
from lib.validate import check_int, check_real


SCHEDULES = ("cosine", "plateau")

#: Field values that a run's identity (`lib.store.key`) leaves out: the values every run had
#: before the field existed, so that older entries keep their keys. Frozen: never edit a value.
LEGACY_FIELDS = {"checkpoints": (), "schedule": "cosine", "patience": 4, "lr_decay": 0.5,
                 "n_decays": 3, "min_delta": 1e-3, "n_val": 2048, "val_seed": 2, "val_every": 500,
                 "restore_best": False, "init_from": None, "freeze_encoder": False}


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    Attributes
    ----------
    model : ModelConfig
    k_train : int
        Filtering level of the training data, ``0..depth``.
    n_train : int or None
        Size of a fixed training set (cycled in shuffled epochs); ``None`` draws a fresh batch
        every step (draws equal to a test sequence are rejected in both cases).
    n_steps, batch_size : int
        Optimiser steps and sequences per step.
    lr, warmup_steps, lr_final : float, int, float
        Adam learning rate, linear warm-up steps, and the fraction of ``lr`` reached by a cosine
        decay at the last step (``warmup_steps=0, lr_final=1`` is the paper's constant rate).
    n_test, n_monitor : int
        Held-out sequences per test level ``k = 0..depth`` at the end, and during training.
    n_evals, eval_every : int
        Log-spaced evaluation steps in ``1..n_steps``, plus every ``eval_every`` steps.
    q, depth, sigma, grammar_seed :
        The grammar (`lib.tree.random_grammar`); the book's setting by default.
    data_seed, test_seed, init_seed, mask_seed : int
        Training stream, test sets, weight initialisation (and dropout), training masks.
    checkpoints : tuple of int
        Steps in ``0..n_steps`` (increasing) at which the weights are kept and the model is
        evaluated; they do not change the training trajectory. Empty by default.
    schedule : str
        ``"cosine"``: warm-up then cosine decay over exactly ``n_steps`` (a fixed budget).
        ``"plateau"``: warm-up then a constant rate, multiplied by ``lr_decay`` whenever the
        validation loss has not improved by a relative ``min_delta`` for ``patience``
        consecutive validations (every ``val_every`` steps); the run has converged, and stops,
        at the plateau after the ``n_decays``-th decay, or at the cap ``n_steps``.
    n_val, val_seed : int
        Held-out validation sequences at level ``k_train`` (``"plateau"`` only; never trained
        on, like the test sets) and their seed.
    restore_best : bool
        ``"plateau"`` only: end with the weights of the lowest validation loss (early stopping on
        a fixed training set, where the last weights may have overfitted); the final test
        evaluation scores those.
    init_from : str or None
        Root runs only: the store key (`lib.store.key`) of a masked-token run of the same
        encoder shape whose embedding and layers initialise this run (MLM pre-training); the
        readout starts from ``init_seed``. ``None``: trained from scratch.
    freeze_encoder : bool
        With ``init_from``: train the readout only (a frozen pre-trained encoder).
    """

    model: ModelConfig
    k_train: int = 0
    n_train: int | None = None
    n_steps: int = 4000
    batch_size: int = 256
    lr: float = 4e-3
    warmup_steps: int = 300
    lr_final: float = 0.05
    n_test: int = 4096
    n_monitor: int = 2048
    n_evals: int = 30
    eval_every: int = 500
    q: int = BOOK_SETTING["q"]
    depth: int = BOOK_SETTING["depth"]
    sigma: float = BOOK_SETTING["sigma"]
    grammar_seed: int = BOOK_SETTING["seed"]
    data_seed: int = 0
    test_seed: int = 1
    init_seed: int = 0
    mask_seed: int = 0
    checkpoints: tuple[int, ...] = ()
    schedule: str = "cosine"
    patience: int = 4
    lr_decay: float = 0.5
    n_decays: int = 3
    min_delta: float = 1e-3
    n_val: int = 2048
    val_seed: int = 2
    val_every: int = 500
    restore_best: bool = False
    init_from: str | None = None
    freeze_encoder: bool = False

    def __post_init__(self):
        check_int("depth", self.depth, 1)
        check_int("k_train", self.k_train, 0, self.depth)
        if self.model.n_classes != self.q or self.model.seq_len != 2**self.depth:
            raise ValueError(f"model must have n_classes = q = {self.q} and seq_len = 2**depth = "
                             f"{2**self.depth}, got {self.model.n_classes} and {self.model.seq_len}")
        check_int("n_steps", self.n_steps, 1)
        check_int("batch_size", self.batch_size, 1)
        if self.n_train is not None:
            check_int("n_train", self.n_train, self.batch_size)
        check_real("lr", self.lr, 1e-12)
        check_int("warmup_steps", self.warmup_steps, 0, self.n_steps - 1)
        if not 0.0 <= check_real("lr_final", self.lr_final, 0.0) <= 1.0:
            raise ValueError(f"lr_final must be in [0, 1], got {self.lr_final}")
        check_int("n_test", self.n_test, 1)
        check_int("n_monitor", self.n_monitor, 1, self.n_test)
        check_int("n_evals", self.n_evals, 1)
        check_int("eval_every", self.eval_every, 1)
        for name in ("grammar_seed", "data_seed", "test_seed", "init_seed", "mask_seed"):
            check_int(name, getattr(self, name), 0)
        if not isinstance(self.checkpoints, (tuple, list)):
            raise ValueError(f"checkpoints must be a tuple of steps, got {self.checkpoints!r}")
        steps = tuple(check_int("checkpoints", s, 0, self.n_steps) for s in self.checkpoints)
        if any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError(f"checkpoints must be strictly increasing, got {steps}")
        object.__setattr__(self, "checkpoints", steps)      # a list given by the caller becomes a tuple
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        check_int("patience", self.patience, 1)
        if not 0.0 < check_real("lr_decay", self.lr_decay, 0.0) < 1.0:
            raise ValueError(f"lr_decay must be in (0, 1), got {self.lr_decay}")
        check_int("n_decays", self.n_decays, 0)
        if not 0.0 <= check_real("min_delta", self.min_delta, 0.0) < 1.0:
            raise ValueError(f"min_delta must be in [0, 1), got {self.min_delta}")
        check_int("n_val", self.n_val, 1)
        check_int("val_seed", self.val_seed, 0)
        check_int("val_every", self.val_every, 1)
        if not isinstance(self.restore_best, bool) or (self.restore_best and
                                                      self.schedule != "plateau"):
            raise ValueError(f"restore_best must be a bool and needs schedule='plateau', got "
                             f"{self.restore_best!r} with schedule={self.schedule!r}")
        self._check_pretraining()

    def _check_pretraining(self) -> None:
        if self.init_from is not None and (
                self.model.task != "root" or not isinstance(self.init_from, str)
                or len(self.init_from) != 16 or set(self.init_from) - set("0123456789abcdef")):
            raise ValueError(f"init_from must be None or the 16-hex-digit store key of a "
                             f"masked-token run (root runs only), got {self.init_from!r}")
        if not isinstance(self.freeze_encoder, bool) or (self.freeze_encoder
                                                         and self.init_from is None):
            raise ValueError(f"freeze_encoder must be a bool and needs init_from, got "
                             f"{self.freeze_encoder!r} with init_from={self.init_from!r}")

    @property
    def task(self) -> str:
        """``"root"`` or ``"mlm"``, from the model."""
        return self.model.task


def model_config(task: str, profile: str, **sizes) -> ModelConfig:
    """The profile's encoder for ``task`` on the book's grammar; ``sizes`` override fields."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    q, seq_len = BOOK_SETTING["q"], 2 ** BOOK_SETTING["depth"]
    base = ModelConfig(vocab=q + (task == "mlm"), seq_len=seq_len, n_classes=q, task=task)
    if profile == "laptop":
        base = replace(base, d_model=32, n_heads=4, d_ff=128, dropout=0.0,
                       n_layers=5 if task == "mlm" else 4)
    return replace(base, **sizes)


def train_config(task: str, profile: str, k_train: int = 0, **fields) -> TrainConfig:
    """The profile's training run for ``task`` on data filtered at ``k_train``; ``fields`` override."""
    model = model_config(task, profile)
    if profile == "laptop":
        cfg = TrainConfig(model=model, k_train=k_train)
        if k_train > 0:       # the filtered runs are evaluated less often (same training budget)
            cfg = replace(cfg, n_evals=10)
        if task == "mlm":     # 16 forward passes per evaluated sequence: smaller, sparser evaluation
            cfg = replace(cfg, n_test=2048, n_monitor=256, n_evals=20 if k_train == 0 else 8,
                          eval_every=1000)
    else:
        n_train = 2**17 if task == "root" else 2**18
        epochs = 200 if task == "root" else 2000
        n_steps = epochs * n_train // 32
        cfg = TrainConfig(model=model, k_train=k_train, n_train=n_train, batch_size=32,
                          n_steps=n_steps, lr=1e-4, warmup_steps=0, lr_final=1.0, n_test=10_000,
                          n_monitor=10_000, n_evals=40, eval_every=n_steps)    # log-spaced only
    return replace(cfg, **fields)


def power_checkpoints(n_steps: int, first: int = 32) -> tuple[int, ...]:
    """Step 0 and the powers of two from ``first`` up to ``n_steps``: checkpoints of a run whose
    length a convergence criterion decides (those past the stopping step are never reached)."""
    check_int("n_steps", n_steps, 1)
    check_int("first", first, 1)
    return (0, *(2**e for e in range(n_steps.bit_length()) if first <= 2**e <= n_steps))


#: The convergence recipe of chapter 4's runs (laptop): a plateau schedule whose step cap is
#: rarely reached; validation every ``val_every`` steps on ``n_val`` held-out sequences; every
#: test level monitored at ``n_evals`` log-spaced steps and every ``eval_every`` steps (a masked-
#: token evaluation costs one forward pass per position: about 130 training steps at 512).
#: Masked tokens start at half the root task's rate: traced over 12 seeds at k = 4 for 3,000
#: steps (``scripts/mlm_collapse.py``, chapter 4), 5 collapsed at 4e-3 and none at 2e-3. Only
#: k = 4 was traced; the lower rate is used at every k.
CONVERGED = {"root": dict(schedule="plateau", n_steps=12_000, val_every=250, n_val=4096,
                          eval_every=1000, n_evals=20),
             "mlm": dict(schedule="plateau", n_steps=40_000, lr=2e-3, val_every=500,
                         n_val=1024, eval_every=2500, n_evals=16, n_monitor=512)}
#: Seeds of the replicas of every headline run: ``_s{s}`` has ``init_seed = data_seed = s``.
REPLICAS = (1, 2)


def converged_config(task: str, profile: str, k_train: int = 0, seed: int = 0) -> TrainConfig:
    """The run of ``task`` on data filtered at ``k_train`` trained to convergence (``"plateau"``
    schedule), with ``init_seed = data_seed = seed``. ``paper``: the paper's optimiser and data,
    validated once per epoch, capped at its number of epochs."""
    cfg = train_config(task, profile, k_train)
    if profile == "laptop":
        cfg = replace(cfg, **CONVERGED[task])
    else:
        epoch = cfg.n_train // cfg.batch_size
        cfg = replace(cfg, schedule="plateau", val_every=epoch, n_val=4096)
    return replace(cfg, init_seed=seed, data_seed=seed)


def chapter4_runs(profile: str) -> dict[str, TrainConfig]:
    """Chapter 4's converged runs, by name, most important first: ``root_k{k}`` and ``mlm_k{k}``
    for ``k = 0..depth`` (seed 0; the ``k = 0`` runs keep :func:`power_checkpoints` for chapter
    5), then their replicas ``{name}_s{s}`` for ``s`` in :data:`REPLICAS`, which differ only in
    ``init_seed`` and ``data_seed``."""
    depth = BOOK_SETTING["depth"]
    runs = {}
    for seed in (0, *REPLICAS):
        for task in ("root", "mlm"):
            for k in range(depth + 1):
                cfg = converged_config(task, profile, k, seed)
                if k == 0 and seed == 0:
                    cfg = replace(cfg, checkpoints=power_checkpoints(cfg.n_steps))
                runs[f"{task}_k{k}" + (f"_s{seed}" if seed else "")] = cfg
    return runs


def tiny_runs(profile: str = "laptop") -> dict[str, TrainConfig]:
    """Two seconds-long runs on a q = 3, depth 3 grammar (one per task and schedule): the sweep
    CI exercises and the golden histories of ``tests/golden`` (the same for both profiles)."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    runs = {}
    for task, schedule in (("root", "plateau"), ("mlm", "cosine")):
        model = ModelConfig(vocab=3 + (task == "mlm"), seq_len=8, n_classes=3, task=task, d_model=8,
                            n_layers=1, n_heads=2, d_ff=16, dropout=0.0)
        runs[f"tiny_{task}"] = TrainConfig(
            model=model, q=3, depth=3, n_steps=400, batch_size=32, warmup_steps=4, n_test=64,
            n_monitor=32, n_evals=4, eval_every=20, schedule=schedule, patience=2, n_decays=1,
            val_every=20,
            n_val=64, min_delta=0.01, checkpoints=(0, 20))
    return runs


def from_record(config: dict) -> TrainConfig:
    """The :class:`TrainConfig` of a stored record (``lib.store`` JSON ``"config"``); fields
    the record leaves out take their `LEGACY_FIELDS` values."""
    fields = {**LEGACY_FIELDS, **config}
    return TrainConfig(**{**fields, "model": ModelConfig(**fields["model"]),
                          "checkpoints": tuple(fields["checkpoints"])})

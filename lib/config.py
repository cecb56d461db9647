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


def checkpoint_steps(n_steps: int) -> tuple[int, ...]:
    """Step 0 and the fractions ``2**-7, 2**-6, ..., 1`` of ``n_steps`` (rounded): nine checkpoints."""
    check_int("n_steps", n_steps, 1)
    return tuple(sorted({0, *(round(n_steps * 2.0**-e) for e in range(8))}))


def chapter4_runs(profile: str) -> dict[str, TrainConfig]:
    """Every run chapter 4 shows, by name, most important first: both tasks at each ``k`` (the
    ``k = 0`` runs keep :func:`checkpoint_steps` for chapter 5), the masked-token runs again with a
    four times longer schedule (``laptop``; in ``paper`` they are the same runs), a depth
    sweep (root, k = 0, 1 to depth layers) and a training-set-size sweep (root, k in {0, 2, 4})."""
    depth = BOOK_SETTING["depth"]
    runs = {}
    for task in ("root", "mlm"):
        cfg = train_config(task, profile, 0)
        runs[f"{task}_k0"] = replace(cfg, checkpoints=checkpoint_steps(cfg.n_steps))
    runs |= {f"{task}_k{k}": train_config(task, profile, k) for task in ("root", "mlm")
             for k in range(1, depth + 1)}
    for k in range(depth + 1):     # paper: its schedule is already long, so the same runs
        mlm = train_config("mlm", profile, k)
        runs[f"mlm_k{k}_long"] = (replace(mlm, n_steps=4 * mlm.n_steps) if profile == "laptop"
                                  else runs[f"mlm_k{k}"])
    base = train_config("root", profile, 0)
    for n_layers in range(1, depth + 1):        # laptop: a fixed budget of 2,000 steps
        runs[f"root_k0_layers{n_layers}"] = replace(
            base, model=replace(base.model, n_layers=n_layers),
            n_steps=2000 if profile == "laptop" else base.n_steps,
            n_evals=10 if profile == "laptop" else base.n_evals)
    sizes = (2**9, 2**12) if profile == "laptop" else tuple(2**p for p in range(9, 21))
    for k in (0, 2, 4):
        for P in sizes:
            base = train_config("root", profile, k)
            steps = 400 if profile == "laptop" else 200 * P // base.batch_size   # paper: 200 epochs
            runs[f"root_k{k}_P{P}"] = replace(base, n_train=P, n_steps=steps,
                                              n_evals=10 if profile == "laptop" else base.n_evals,
                                              warmup_steps=min(base.warmup_steps, 100))
    return runs

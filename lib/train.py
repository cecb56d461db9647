"""Seeded training of `lib.transformer` on the filtered grammar, evaluated against exact BP.

One :class:`lib.config.TrainConfig` fixes everything: the grammar, the training data (a fresh
batch every step, or a fixed set cycled in shuffled epochs), the held-out test sets of every
filtering level ``k = 0..depth`` (never seen in training: training draws equal to a test sequence
are rejected), the optimiser and the four seeds. Evaluation runs in eval mode at log-spaced steps;
masked language modelling is scored at every position of every test sequence (each position
masked in turn), the quantity BP's leave-one-out conditionals give exactly. Introduced in
chapter 4.
"""
from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lib import bp, tree
from lib.config import TrainConfig
from lib.transformer import Transformer, token_ids

_BATCHES_PER_DRAW = 64        # training batches sampled per call to the grammar sampler
_EVAL_ROWS = 1024             # sequences per forward pass in evaluation (cache-sized on a CPU)


def _seed(*keys: int) -> int:
    """An integer seed derived from named integer keys (independent streams per key tuple)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def grammar(cfg: TrainConfig) -> np.ndarray:
    """The production tensor ``M`` (q, q, q) of the run's grammar."""
    return tree.random_grammar(cfg.q, cfg.sigma, cfg.grammar_seed)


def test_sets(cfg: TrainConfig, M: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Held-out ``(roots (n_test,), leaves (n_test, 2**depth))`` for every test level ``k``, from ``test_seed``."""
    return {k: tree.sample(M, cfg.depth, cfg.n_test, k=k, seed=_seed(cfg.test_seed, k))
            for k in range(cfg.depth + 1)}


def _codes(leaves: np.ndarray, q: int) -> np.ndarray:
    """One int64 per sequence (base-``q`` digits; exact while ``q**length < 2**63``, as for 4**16)."""
    return leaves @ (q ** np.arange(leaves.shape[1], dtype=np.int64))


def _draw(cfg: TrainConfig, M: np.ndarray, n: int, seed: int, exclude: np.ndarray):
    """``n`` training draws at level ``k_train`` that are not test sequences (codes in ``exclude``)."""
    roots, leaves, part = [], [], 0
    while sum(map(len, roots)) < n:
        r, x = tree.sample(M, cfg.depth, n, k=cfg.k_train, seed=_seed(seed, part))
        keep = ~np.isin(_codes(x, cfg.q), exclude)
        roots.append(r[keep])
        leaves.append(x[keep])
        part += 1
    return np.concatenate(roots)[:n], np.concatenate(leaves)[:n]


def _batches(cfg: TrainConfig, M: np.ndarray, exclude: np.ndarray):
    """Endless ``(roots (B,), leaves (B, L))`` training batches from ``data_seed``."""
    B = cfg.batch_size
    if cfg.n_train is None:                                   # fresh samples every step
        for draw in itertools.count():
            roots, leaves = _draw(cfg, M, B * _BATCHES_PER_DRAW, _seed(cfg.data_seed, draw), exclude)
            for i in range(0, len(roots), B):
                yield roots[i:i + B], leaves[i:i + B]
    roots, leaves = _draw(cfg, M, cfg.n_train, _seed(cfg.data_seed), exclude)
    rng = np.random.default_rng(_seed(cfg.data_seed, 1))
    while True:                                               # shuffled epochs, last partial batch dropped
        order = rng.permutation(cfg.n_train)
        for i in range(0, cfg.n_train - B + 1, B):
            yield roots[order[i:i + B]], leaves[order[i:i + B]]


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Learning-rate multiplier: linear warm-up to 1, then cosine decay to ``lr_final`` at ``n_steps``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.n_steps - cfg.warmup_steps)
    return cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def eval_steps(cfg: TrainConfig) -> np.ndarray:
    """Steps at which the model is evaluated: 0, ``n_evals`` log-spaced steps, every ``eval_every``,
    the checkpoints, and the last."""
    log = np.round(np.geomspace(1, cfg.n_steps, cfg.n_evals)).astype(int)
    lin = np.arange(0, cfg.n_steps + 1, cfg.eval_every)
    return np.union1d(np.union1d(log, lin), [0, cfg.n_steps, *cfg.checkpoints])


def cpu_state(model: Transformer) -> dict:
    """A float32 copy on the CPU of the model's state dict (detached from further training)."""
    return {n: t.detach().float().cpu().clone() for n, t in model.state_dict().items()}


@torch.no_grad()
def log_probs(model: Transformer, leaves: np.ndarray) -> torch.Tensor:
    """The model's log-probabilities in eval mode, the transformer's analogue of `lib.bp`.

    Parameters
    ----------
    model : Transformer
    leaves : array_like of int, shape (n, L)
        Unmasked sequences, symbols in ``0..q-1``.

    Returns
    -------
    torch.Tensor on the CPU
        ``task="root"``: (n, q), log P(root | leaves). ``task="mlm"``: (n, L, q), position ``i``
        holding log P(x_i | the other leaves), read with position ``i`` alone masked.
    """
    model.eval()
    device = next(model.parameters()).device
    x = token_ids(model.cfg, leaves)
    n, L = x.shape
    if model.cfg.task == "mlm":                                # row s * L + i masks position i of s
        x = x.repeat_interleave(L, dim=0)
        pos = torch.arange(n * L) % L
        x[torch.arange(n * L), pos] = model.cfg.mask_id
    out = []
    for lo in range(0, len(x), _EVAL_ROWS):
        logits = model(x[lo:lo + _EVAL_ROWS].to(device))
        if model.cfg.task == "mlm":                            # keep the masked position's logits
            logits = logits[torch.arange(len(logits)), pos[lo:lo + _EVAL_ROWS]]
        out.append(torch.log_softmax(logits.float(), dim=-1).cpu())
    out = torch.cat(out)
    return out if model.cfg.task == "root" else out.view(n, L, -1)


def _score(logp: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy (nats) and accuracy of log-probabilities (..., q) against targets (...)."""
    picked = np.take_along_axis(logp, target[..., None], axis=-1)[..., 0]
    return float(-picked.mean()), float((logp.argmax(-1) == target).mean())


def evaluate(model: Transformer, tests: dict, n: int) -> list[dict]:
    """Loss and accuracy on the first ``n`` sequences of every test set; one dict per ``k_test``."""
    rows = []
    for k, (roots, leaves) in tests.items():
        logp = log_probs(model, leaves[:n]).numpy()
        target = roots[:n] if model.cfg.task == "root" else leaves[:n]
        loss, acc = _score(logp, target)
        rows.append({"k_test": k, "n_test": n, "loss": loss, "accuracy": acc})
    return rows


def bp_reference(cfg: TrainConfig, n: int | None = None) -> pd.DataFrame:
    """BP assuming model ``k_model`` on the first ``n`` (default ``n_test``) sequences of test set ``k_test``.

    Returns a tidy table (k_model, k_test, loss, accuracy) for the run's task: root posterior or
    leave-one-out leaf conditionals at every position, from `lib.bp` on the very test sets
    :func:`train` evaluates on.
    """
    M, n = grammar(cfg), n or cfg.n_test
    rows = []
    for k_test, (roots, leaves) in test_sets(cfg, M).items():
        for k_model in range(cfg.depth + 1):
            if cfg.task == "root":
                p, target = bp.root_posterior(M, leaves[:n], k_model), roots[:n]
            else:
                p, target = bp.leaf_posterior(M, leaves[:n], k_model), leaves[:n]
            with np.errstate(divide="ignore"):       # log 0 = -inf: symbols BP rules out exactly
                loss, acc = _score(np.log(p), target)
            rows.append({"k_model": k_model, "k_test": k_test, "loss": loss, "accuracy": acc})
    return pd.DataFrame(rows)


def _inputs(cfg: TrainConfig, roots, leaves, masks: torch.Generator):
    """Model inputs (B, L), targets (B,) and masked positions (B,) or ``None`` for one training batch."""
    x = torch.from_numpy(leaves)
    if cfg.task == "root":
        return x, torch.from_numpy(roots), None
    pos = torch.randint(x.shape[1], (len(x),), generator=masks)   # one masked token per sequence
    rows = torch.arange(len(x))
    y = x[rows, pos].clone()
    x = x.clone()
    x[rows, pos] = cfg.model.mask_id
    return x, y, pos


def train(cfg: TrainConfig, progress: bool = True, device: str | None = None):
    """Train one model from scratch.

    Parameters
    ----------
    cfg : TrainConfig
    progress : bool
        Show a tqdm progress bar.
    device : str, optional
        Torch device; CUDA when available, else CPU.

    Returns
    -------
    model : Transformer
        In eval mode, on the CPU.
    history : pandas.DataFrame
        One row per (evaluation step, k_test): step, seqs (training sequences seen), wall_s
        (training time so far, evaluation excluded), k_test, n_test, loss (nats), accuracy.
    info : dict
        train_s and eval_s (wall seconds), device, torch version and thread count.
    checkpoints : dict
        ``{step: state dict}`` (float32 copies on the CPU) at every step of ``cfg.checkpoints``;
        empty when there are none. Taking them does not change the run.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    M = grammar(cfg)
    tests = test_sets(cfg, M)
    exclude = np.concatenate([_codes(leaves, cfg.q) for _, leaves in tests.values()])
    torch.manual_seed(cfg.init_seed)
    model = Transformer(cfg.model).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, s))
    masks = torch.Generator().manual_seed(cfg.mask_seed)
    batches, evals = _batches(cfg, M, exclude), set(eval_steps(cfg).tolist())
    rows, train_s, eval_s, states = [], 0.0, 0.0, {}
    bar = tqdm(range(cfg.n_steps + 1), disable=not progress, desc=f"{cfg.task} k={cfg.k_train}")
    for step in bar:
        if step in evals:
            t0 = time.perf_counter()
            n = cfg.n_test if step == cfg.n_steps else cfg.n_monitor
            for row in evaluate(model, tests, n):
                rows.append({"step": step, "seqs": step * cfg.batch_size, "wall_s": train_s, **row})
            bar.set_postfix(acc=f"{rows[-cfg.depth - 1 + cfg.k_train]['accuracy']:.3f}")
            eval_s += time.perf_counter() - t0
        if step in cfg.checkpoints:
            states[step] = cpu_state(model)
        if step == cfg.n_steps:
            break
        t0 = time.perf_counter()
        model.train()
        x, y, pos = _inputs(cfg, *next(batches), masks)
        logits = model(x.to(device))
        if pos is not None:
            logits = logits[torch.arange(len(pos)), pos.to(device)]
        loss = F.cross_entropy(logits, y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        train_s += time.perf_counter() - t0
    info = {"train_s": train_s, "eval_s": eval_s, "device": str(device), "torch": torch.__version__,
            "threads": torch.get_num_threads()}
    return model.cpu().eval(), pd.DataFrame(rows), info, states


def time_to_accuracy(history: pd.DataFrame, k_test: int, target: float) -> float:
    """Training wall seconds at the first evaluation with accuracy on ``k_test`` at least ``target`` (NaN if never)."""
    hit = history[(history.k_test == k_test) & (history.accuracy >= target)]
    return float(hit.wall_s.iloc[0]) if len(hit) else float("nan")


def nearest_bp_row(history: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """At each step, the BP row ``k_model`` whose accuracies over ``k_test`` are closest (Euclidean) to the model's.

    Returns a table (step, wall_s, k_model, distance).
    """
    acc = history.pivot(index=["step", "wall_s"], columns="k_test", values="accuracy")
    rows = reference.pivot(index="k_model", columns="k_test", values="accuracy")[acc.columns]
    dist = np.linalg.norm(acc.to_numpy()[:, None, :] - rows.to_numpy()[None], axis=-1)
    out = acc.index.to_frame(index=False)
    out["k_model"] = rows.index.to_numpy()[dist.argmin(1)]
    out["distance"] = dist.min(1)
    return out

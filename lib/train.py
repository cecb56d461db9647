"""Seeded training of `lib.transformer` on the filtered grammar, evaluated against exact BP.

One :class:`lib.config.TrainConfig` fixes everything: the grammar, the training data and the
held-out test sets of every filtering level ``k = 0..depth`` (`lib.run_data`), the optimiser,
the schedule (`lib.schedule`) and the four seeds. Evaluation runs in eval mode at log-spaced steps;
masked language modelling is scored at every position of every test sequence (each position
masked in turn), the quantity BP's leave-one-out conditionals give exactly. Introduced in
chapter 4.
"""
from __future__ import annotations

import itertools
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lib import bp, resume, run_data, schedule
from lib.config import TrainConfig
from lib.transformer import Transformer, token_ids
from lib.validate import check_int

_EVAL_ROWS = 1024             # sequences per forward pass in evaluation (cache-sized on a CPU)


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


def score(logp: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy (nats) and accuracy of log-probabilities (..., q) against targets (...)."""
    picked = np.take_along_axis(logp, target[..., None], axis=-1)[..., 0]
    return float(-picked.mean()), float((logp.argmax(-1) == target).mean())


def evaluate(model: Transformer, tests: dict, n: int, refs: dict | None = None) -> list[dict]:
    """Loss and accuracy on the first ``n`` sequences of every test set; one dict per ``k_test``.

    With ``refs`` (:func:`bp_posteriors` of the same test sets) each dict also holds
    ``kl_bp{k}``, the mean over sequences (and positions) of KL(BP_k || model) in nats, BP_k
    being exact inference that assumes filtering level ``k``: the paper's climbing metric.
    """
    rows = []
    for k, (roots, leaves) in tests.items():
        logp = log_probs(model, leaves[:n]).numpy()
        target = roots[:n] if model.cfg.task == "root" else leaves[:n]
        loss, acc = score(logp, target)
        row = {"k_test": k, "n_test": n, "loss": loss, "accuracy": acc}
        for k_model, p in enumerate(refs[k][:, :n] if refs else ()):
            with np.errstate(divide="ignore", invalid="ignore"):     # 0 log 0 = 0
                terms = np.where(p > 0, p * (np.log(p) - logp), 0.0)
            row[f"kl_bp{k_model}"] = float(terms.sum(-1).mean())
        rows.append(row)
    return rows


def bp_posteriors(cfg: TrainConfig, M: np.ndarray, leaves: np.ndarray) -> np.ndarray:
    """BP_k's answer for every ``k = 0..depth`` on ``leaves`` (n, L): (depth+1, n, q) root
    posteriors or (depth+1, n, L, q) leave-one-out leaf conditionals, by the run's task."""
    posterior = bp.root_posterior if cfg.task == "root" else bp.leaf_posterior
    return np.stack([posterior(M, leaves, k) for k in range(cfg.depth + 1)])


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


def _step(cfg, model, opt, batch, masks, lr: float, amp: bool) -> float:
    """One optimiser step on a training batch ``(roots, leaves)`` at learning rate ``lr``;
    returns the batch's training loss (nats) before the step."""
    device = next(model.parameters()).device
    for group in opt.param_groups:
        group["lr"] = lr
    model.train()
    x, y, pos = _inputs(cfg, *batch, masks)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(x.to(device))
    if pos is not None:
        logits = logits[torch.arange(len(pos)), pos.to(device)]
    loss = F.cross_entropy(logits.float(), y.to(device))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def _load_encoder(model: Transformer, encoder: dict, freeze: bool) -> None:
    """Copy a masked-token model's embedding and layers into a root model (the mask id's
    embedding row is dropped); with ``freeze`` only the readout stays trainable."""
    state = {n: t for n, t in encoder.items() if not n.startswith("readout.")}
    state["embed.weight"] = state["embed.weight"][:model.cfg.vocab]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"readout.weight", "readout.bias"}:
        raise ValueError(f"encoder does not fit the model: missing {missing}, unexpected "
                         f"{unexpected}")
    for name, p in model.named_parameters():
        p.requires_grad_(not freeze or name.startswith("readout."))


def _validation_loss(model: Transformer, val) -> float:
    """Mean cross-entropy (nats) on the validation set (every position, for masked tokens)."""
    logp = log_probs(model, val[1]).numpy()
    return score(logp, val[0] if model.cfg.task == "root" else val[1])[0]


def _log(cfg: TrainConfig, model, tests, refs, state: dict, step: int, final: bool,
         extra: dict) -> dict:
    """Append the evaluation rows of ``step`` (whole test sets if ``final``, else the monitor
    sets) and ``extra`` columns to ``state["rows"]``; return the row of ``k_test = k_train``."""
    for row in evaluate(model, tests, cfg.n_test if final else cfg.n_monitor, refs):
        state["rows"].append({"step": step, "seqs": step * cfg.batch_size,
                              "wall_s": state["train_s"], **row, **extra})
    return state["rows"][-cfg.depth - 1 + cfg.k_train]


def train(cfg: TrainConfig, progress: bool = True, device: str | None = None,
          partial: str | Path | None = None, stop_at: int | None = None,
          report: Callable[[dict], None] | None = None, amp: bool = False,
          keep_partial: bool = False, encoder: dict | None = None):
    """Train one model from scratch, or resume it from a partial run.

    Parameters
    ----------
    cfg : TrainConfig
    progress : bool
        Show a tqdm progress bar.
    device : str, optional
        Torch device; CUDA when available, else CPU.
    partial : path, optional
        File of a partial run (`lib.resume`): resumed from if it exists, rewritten every
        ``resume.SAVE_EVERY_S`` seconds, deleted at the end unless ``keep_partial`` (a caller
        that saves the result deletes it after saving). A resumed run is bit-identical to an
        uninterrupted one.
    stop_at : int, optional
        With ``partial``: save the partial state before training step ``stop_at >= 1`` and
        return ``None`` (a run split across sessions, or a test of resuming).
    report : callable, optional
        Called after every evaluation with ``{"step", "n_steps", "accuracy", "lr_factor"}``.
    amp : bool
        bfloat16 autocast in the training forward pass (for GPUs; evaluation stays float32).
    encoder : dict, optional
        The state dict of the pre-trained run ``cfg.init_from`` (`lib.store.pretrained_state`);
        required exactly when ``cfg.init_from`` is set.

    Returns
    -------
    model : Transformer
        In eval mode, on the CPU.
    history : pandas.DataFrame
        One row per (evaluation step, k_test): step, seqs (training sequences seen), wall_s
        (training time so far, evaluation excluded), k_test, n_test, loss (nats), accuracy,
        ``kl_bp0..kl_bp{depth}`` (:func:`evaluate`); for ``schedule="plateau"`` also
        val_loss (NaN between validations) and lr_factor. The last step holds the whole test
        sets; under ``restore_best`` its test columns score the best validated weights (the
        ones returned, and a checkpoint at that step holds them too), while its val_loss is
        the last weights'.
    info : dict
        train_s and eval_s (wall seconds), device, torch version, thread count, amp, the
        step the run stopped at and whether the criterion stopped it (``converged``); under
        ``restore_best``, ``best_step``, the step of the weights returned.
    checkpoints : dict
        ``{step: state dict}`` (float32 copies on the CPU) at every step of ``cfg.checkpoints``
        that the run reached; taking them does not change the run.
    """
    if stop_at is not None and (partial is None or check_int("stop_at", stop_at, 1) > cfg.n_steps):
        raise ValueError(f"stop_at must be in 1..{cfg.n_steps} and needs partial, got "
                         f"stop_at={stop_at}, partial={partial}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    M, tests, val, exclude = run_data.held_out(cfg)
    refs = {k: bp_posteriors(cfg, M, leaves) for k, (_, leaves) in tests.items()}
    if (cfg.init_from is None) != (encoder is None):
        raise ValueError(f"encoder must be given exactly when cfg.init_from is set, got "
                         f"init_from={cfg.init_from!r} and encoder {type(encoder).__name__}")
    model, opt, masks, plateau = _init(cfg, device, encoder)
    state = {"step": 0, "rows": [], "states": {}, "train_s": 0.0, "eval_s": 0.0}
    partial = Path(partial) if partial else None
    if partial and partial.exists():
        state = resume.resume(cfg, partial, model, opt, masks, plateau)
    batches = run_data.batches(cfg, M, exclude)
    evals = set(schedule.eval_steps(cfg).tolist())
    for _ in range(state["step"]):                     # the data stream is a pure function of the step
        next(batches)
    quiet = {} if progress else {"disable": True}      # TQDM_DISABLE=1 silences the bar too
    bar = tqdm(total=cfg.n_steps, initial=state["step"], desc=f"{cfg.task} k={cfg.k_train}", **quiet)
    saved, converged = time.perf_counter(), False
    for step in itertools.count(state["step"]):
        if partial and step > 0 and (step == stop_at
                                     or time.perf_counter() - saved > resume.SAVE_EVERY_S):
            snap = resume.snapshot(cfg, {**state, "step": step}, model, opt, masks, plateau)
            resume.save(partial, snap)
            saved = time.perf_counter()
        if step == stop_at:
            return None
        t0, extra = time.perf_counter(), {}
        if val is not None and step >= max(1, cfg.warmup_steps) and step % cfg.val_every == 0:
            extra["val_loss"] = _validation_loss(model, val)
            converged = plateau.update(extra["val_loss"])
            _keep_best(cfg, model, state, step, extra["val_loss"])
        lr = schedule.lr_factor(cfg, step, plateau.decays)
        final = converged or step == cfg.n_steps
        if final and "best" in state:                  # early stopping: score the best weights
            model.load_state_dict(state["best"]["model"])
        if step in evals or final:
            if val is not None:
                extra = {"val_loss": math.nan, **extra, "lr_factor": lr}
            ours = _log(cfg, model, tests, refs, state, step, final, extra)
            bar.set_postfix(acc=f"{ours['accuracy']:.3f}")
            if report:
                report({"step": step, "n_steps": cfg.n_steps, "accuracy": ours["accuracy"],
                        "lr_factor": lr})
        state["eval_s"] += time.perf_counter() - t0
        if step in cfg.checkpoints:
            state["states"][step] = resume.cpu_state(model)
        if final:
            break
        t0 = time.perf_counter()
        _step(cfg, model, opt, next(batches), masks, cfg.lr * lr, amp and device.type == "cuda")
        state["train_s"] += time.perf_counter() - t0
        bar.update()
    bar.close()
    if partial and partial.exists() and not keep_partial:
        partial.unlink()
    info = {"train_s": state["train_s"], "eval_s": state["eval_s"], "device": str(device),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "amp": amp,
            "stop_step": step, "converged": converged,
            **({"best_step": state["best"]["step"]} if "best" in state else {}),
            "resumed_from_lib": sorted(set(state.get("resumed_from_lib", ())))}
    return model.cpu().eval(), pd.DataFrame(state["rows"]), info, state["states"]


def _init(cfg: TrainConfig, device: torch.device, encoder: dict | None):
    """A fresh model (from ``init_seed``, or a pre-trained encoder), its Adam over the trainable
    weights, the training-mask generator and the plateau criterion."""
    torch.manual_seed(cfg.init_seed)
    model = Transformer(cfg.model).to(device)
    if encoder is not None:
        _load_encoder(model, encoder, cfg.freeze_encoder)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    masks = torch.Generator().manual_seed(cfg.mask_seed)
    return model, opt, masks, schedule.Plateau(cfg.patience, cfg.min_delta, cfg.n_decays)


def _keep_best(cfg: TrainConfig, model: Transformer, state: dict, step: int,
               val_loss: float) -> None:
    """Under ``restore_best``, copy the weights into ``state["best"]`` when ``val_loss`` is the
    lowest so far."""
    if cfg.restore_best and val_loss < state.get("best", {}).get("val_loss", math.inf):
        state["best"] = {"step": step, "val_loss": val_loss, "model": resume.cpu_state(model)}

"""Training throughput (sequences/s), where a run's wall time goes, and time to BP of chapter 4.

Usage (repository root; reads the model store, trains nothing unless asked):

    python benchmarks/train_throughput.py              # throughput variants + time to BP of stored runs
    python benchmarks/train_throughput.py --retrain    # also retrain the two k = 0 runs and time them
    python benchmarks/train_throughput.py --compile    # also try torch.compile (slow to compile)

Throughput is measured on a fixed batch of the book's grammar (forward, backward, Adam step) after
a few warm-up steps, on one CPU thread (and on CUDA when present), for the book's choice and for
candidates side by side in one run: PyTorch's fused ``scaled_dot_product_attention`` (which
cannot return the attention pattern, so the book would keep the explicit layer for analysis),
other batch sizes and, with ``--compile``, ``torch.compile``. The ratio column is against the
book's choice measured in the same run. *Evaluation cost* is one evaluation of a chapter 4 run
(every test level, monitor sets; masked tokens need one forward pass per position). *Time to
BP* is the training wall time (evaluation excluded) until the k = 0 held-out accuracy is within
1 point of BP (both tasks, chapter 4's goal), read from the monitored evaluations of the stored
converged run; BP is scored on the same sequences.
"""
from __future__ import annotations

import argparse
import contextlib
import time

import pandas as pd
import torch
import torch.nn.functional as F

from lib import config, reference, run_data, store, train, tree
from lib.transformer import SelfAttention, Transformer

TOLERANCE = {"root": 0.01, "mlm": 0.01}      # chapter 4's goal (1 point), in accuracy


def _fused_forward(self, x: torch.Tensor, key_visible: torch.Tensor | None = None):
    """Candidate: SelfAttention.forward through ``F.scaled_dot_product_attention`` (no pattern);
    ``key_visible`` (B, L) as in the book's layer."""
    B, L, d = x.shape
    qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
    qkv = qkv.view(B, L, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
    p = self.dropout.p if self.training else 0.0
    mask = None if key_visible is None else key_visible[:, None, None, :]
    out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask, dropout_p=p)
    return self.out_proj(out.transpose(1, 2).reshape(B, L, d)), None


@contextlib.contextmanager
def fused_attention(on: bool):
    """Swap the fused candidate into every SelfAttention while the block runs."""
    explicit = SelfAttention.forward
    SelfAttention.forward = _fused_forward if on else explicit
    try:
        yield
    finally:
        SelfAttention.forward = explicit


def throughput(cfg, device: str, steps: int = 30, warmup: int = 5, fused: bool = False,
               compile: bool = False) -> float:
    """Training sequences per second of ``cfg`` (a TrainConfig) on ``device``."""
    torch.manual_seed(cfg.init_seed)
    model = Transformer(cfg.model).to(device)
    step_model = torch.compile(model) if compile else model
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batch = tree.sample(run_data.grammar(cfg), cfg.depth, cfg.batch_size, seed=cfg.data_seed)
    masks = torch.Generator().manual_seed(cfg.mask_seed)
    with fused_attention(fused):
        for i in range(warmup + steps):
            if i == warmup:
                if device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            train._step(cfg, step_model, opt, batch, masks, cfg.lr, amp=False)
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * cfg.batch_size / (time.perf_counter() - t0)


def variants(args, profile: str) -> list[tuple[str, dict, dict]]:
    """(name, TrainConfig fields, throughput options) of every candidate, the book's first
    (other batch sizes only for the laptop profile: the paper's protocol fixes batch 32)."""
    out = [("book (explicit attention, profile batch)", {}, {}),
           ("fused attention (SDPA)", {}, {"fused": True})]
    if profile == "laptop":
        out += [("batch 128", {"batch_size": 128}, {}), ("batch 512", {"batch_size": 512}, {})]
    return out + ([("torch.compile", {}, {"compile": True})] if args.compile else [])


def throughput_table(args) -> pd.DataFrame:
    rows = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for profile in ("laptop", "paper"):
        for task in ("root", "mlm"):
            for device in devices:
                base = None
                for name, fields, opts in variants(args, profile):
                    cfg = config.train_config(task, profile, **fields)
                    rate = throughput(cfg, device, **opts)
                    base = base or rate
                    rows.append({"profile": profile, "task": task, "device": device,
                                 "variant": name, "seq/s": round(rate),
                                 "vs book": round(rate / base, 2)})
    return pd.DataFrame(rows)


def evaluation_cost() -> pd.DataFrame:
    """Seconds of one monitor evaluation of each chapter 4 k = 0 run, and the training steps
    that take as long (at the book's throughput measured here)."""
    rows = []
    for task in ("root", "mlm"):
        cfg = config.chapter4_runs("laptop")[f"{task}_k0"]
        torch.manual_seed(0)
        model = Transformer(cfg.model)
        M = run_data.grammar(cfg)
        tests = run_data.test_sets(cfg, M)
        refs = {k: train.bp_posteriors(cfg, M, x) for k, (_, x) in tests.items()}
        t0 = time.perf_counter()
        train.evaluate(model, tests, cfg.n_monitor, refs)
        seconds = time.perf_counter() - t0
        steps_per_s = throughput(cfg, "cpu") / cfg.batch_size
        rows.append({"task": task, "n_monitor": cfg.n_monitor, "eval s": round(seconds, 2),
                     "= training steps": round(seconds * steps_per_s),
                     "evaluations per run (cap)": len(train.schedule.eval_steps(cfg))})
    return pd.DataFrame(rows)


def time_to_bp(cfg, history: pd.DataFrame) -> tuple[float, float]:
    """(BP accuracy on the monitored k = 0 test sequences, seconds until the network's accuracy
    on them is within tolerance; NaN if it never is). The final row scores the whole test set,
    so the table reports it beside BP on that set."""
    bp_acc = reference.bp_accuracy(reference.bp_reference(cfg, cfg.n_monitor), 0, 0)
    return bp_acc, reference.time_to_accuracy(history[history.n_test == cfg.n_monitor], 0,
                                          bp_acc - TOLERANCE[cfg.task])


def time_to_bp_table(retrain: bool) -> pd.DataFrame:
    rows, runs = [], config.chapter4_runs("laptop")
    for task in ("root", "mlm"):
        cfg = runs[f"{task}_k0"]
        if retrain:
            _, history, info, _ = train.train(cfg)
        else:
            _, history, info = store.require(cfg, f"{task}_k0")
        bp_acc, seconds = time_to_bp(cfg, history)
        stop = history.step.max()
        final = history.query(f"step == {stop} and k_test == 0").accuracy.item()
        bp_full = reference.bp_accuracy(reference.bp_reference(cfg), 0, 0)
        rows.append({"task": task, "run": f"{task}_k0", "BP (monitored)": round(bp_acc, 4),
                     "goal": f"BP - {TOLERANCE[task]}", "time to goal (s)": round(seconds, 1),
                     "final (full set)": round(final, 4), "BP (full set)": round(bp_full, 4),
                     "steps": stop,
                     "train s": round(info["train_s"]), "eval s": round(info["eval_s"]),
                     "threads": info["threads"], "source": "retrained" if retrain else "store"})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retrain", action="store_true", help="retrain the k = 0 runs and time them")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("Training throughput, one CPU thread: the book's choice and candidates, in one run\n"
          + throughput_table(args).to_string(index=False))
    print("\nEvaluation cost (one monitor evaluation, untrained model)\n"
          + evaluation_cost().to_string(index=False))
    print("\nTime to BP, laptop profile, k = 0 (training wall time, evaluation excluded;"
          " train s / eval s: where the run's wall time went)\n"
          + time_to_bp_table(args.retrain).to_string(index=False))


if __name__ == "__main__":
    main()

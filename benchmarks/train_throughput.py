"""Training throughput (sequences/s) and time to BP of chapter 4's transformers.

Usage (repository root):

    python benchmarks/train_throughput.py              # throughput + time to BP of the stored runs
    python benchmarks/train_throughput.py --retrain    # also retrain the two k = 0 runs and time them

Throughput is measured on fresh batches of the book's grammar (forward, backward, Adam step) after
a few warm-up steps, on one CPU thread and on CUDA when present. *Time to BP* is the training wall
time (evaluation excluded) until the k = 0 held-out accuracy is within 1 point of BP (root) or
2 points (MLM), read from the evaluation history of the run; BP is scored on the same sequences.
"""
from __future__ import annotations

import argparse
import time

import pandas as pd
import torch
import torch.nn.functional as F

from lib import config, store, train, tree
from lib.transformer import Transformer

TOLERANCE = {"root": 0.01, "mlm": 0.02}      # the goals, in accuracy


def throughput(cfg, device: str, steps: int = 30, warmup: int = 5) -> float:
    """Training sequences per second of ``cfg`` (a TrainConfig) on ``device``."""
    torch.manual_seed(cfg.init_seed)
    model = Transformer(cfg.model).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    roots, leaves = tree.sample(train.grammar(cfg), cfg.depth, cfg.batch_size, seed=cfg.data_seed)
    x, y, pos = train._inputs(cfg, roots, leaves, torch.Generator().manual_seed(cfg.mask_seed))
    x, y = x.to(device), y.to(device)
    for i in range(warmup + steps):
        if i == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        logits = model(x)
        if pos is not None:
            logits = logits[torch.arange(len(pos)), pos.to(device)]
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * cfg.batch_size / (time.perf_counter() - t0)


def time_to_bp(cfg, history: pd.DataFrame) -> tuple[float, float]:
    """(BP accuracy on the monitored k = 0 test sequences, seconds until within tolerance)."""
    bp_acc = train.bp_reference(cfg, cfg.n_monitor).query("k_model == 0 and k_test == 0").accuracy.item()
    return bp_acc, train.time_to_accuracy(history[history.n_test == cfg.n_monitor], 0,
                                          bp_acc - TOLERANCE[cfg.task])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retrain", action="store_true", help="retrain the k = 0 runs and time them")
    args = parser.parse_args()
    torch.set_num_threads(1)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for profile in ("laptop", "paper"):
        for task in ("root", "mlm"):
            cfg = config.train_config(task, profile)
            for device in devices:
                rate = throughput(cfg, device)
                rows.append({"profile": profile, "task": task, "device": device,
                             "batch": cfg.batch_size, "layers": cfg.model.n_layers,
                             "seq/s": round(rate), "steps/s": round(rate / cfg.batch_size, 1)})
    print("Training throughput (1 CPU thread)\n" + pd.DataFrame(rows).to_string(index=False))

    rows = []
    runs = config.legacy_chapter4_runs("laptop")        # the runs chapters 4 and 5 show
    for task in ("root", "mlm"):
        cfg = runs[f"{task}_k0"]
        if args.retrain:
            _, history, info, _ = train.train(cfg)
        else:
            _, history, info = store.require(cfg, f"{task}_k0")
        bp_acc, seconds = time_to_bp(cfg, history)
        final = history.query(f"step == {cfg.n_steps} and k_test == 0").accuracy.item()
        rows.append({"task": task, "BP acc": round(bp_acc, 4), "goal": f"BP - {TOLERANCE[task]}",
                     "time to goal (s)": round(seconds, 1), "final acc": round(final, 4),
                     "run train s": round(info["train_s"], 1), "device": info["device"],
                     "source": "retrained" if args.retrain else "store"})
    print("\nTime to BP, laptop profile, k = 0 (training wall time, evaluation excluded)\n"
          + pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()

"""Fit chapter 6's baselines and sweeps once and store them in data/potts/ (the chapter reads them).

Every fit is scored on the same held-out test set by its MLM test loss (every site of every test
sequence masked in turn) minus the optimum, the true conditionals' loss on that set:

- ``factored``, ``factored_softmax``: one layer of factored attention without and with a softmax
  over the keys (`lib.factored_attention`), full-batch L-BFGS, ridge ``lam_factored``, on every
  training-set size of ``sweep_M`` (down to alpha = M / L = 0.5) and on three coupling instances:
  ``A0`` (the chapter's), ``A1`` (another draw of the signed couplings), ``B`` (non-negative ring
  couplings with equal row sums, the softmax-compatible case); on ``A0`` and ``A1`` also with the
  larger ridges ``sweep_lams`` (column ``lam``; empty: ``lam_factored``);
- ``plm_full``: the standard pseudo-likelihood fit with unconstrained couplings and fields
  (plmDCA, `lib.pseudolikelihood.fit_full_pseudolikelihood`), every ridge of ``plm_lams`` (the
  chapter picks the one with the best validation loss), instance ``A0``;
- ``vanilla``: chapter 4's encoder trained by single-token MLM to a validation plateau
  (`lib.potts_mlm.train_mlm`), ``vanilla_layers`` x ``vanilla_M`` x ``seeds``, instance ``A0``.

Training sets smaller than ``rep_below`` are ``n_rep`` disjoint blocks of the training sample
(``rep`` = block); larger ones are its prefixes, as in the chapter. Rows are appended to
``baselines_<profile>.csv`` as they finish; a rerun skips the rows already there (resumable).
``baselines_<profile>.json`` records the configuration, the code
(`lib.provenance.code_state`), the environment and the CPU time. Run it from a clean worktree of
a commit, writing into the main checkout:

    git worktree add /tmp/wt-ch6 HEAD
    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/wt-ch6 python /tmp/wt-ch6/scripts/potts_baselines.py \\
        --out data/potts
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from lib import factored_attention, potts, potts_mlm, provenance, pseudolikelihood


@dataclass(frozen=True)
class Config:
    """What fixes the stored numbers. The data fields equal chapter 6's ``Config``."""
    # data: the chapter's sizes and seeds, shared by every instance
    L: int = 20
    q: int = 10
    M_max: int = 8192
    n_chains: int = 2048
    burn_in: int = 150
    thin: int = 20
    n_val: int = 250
    n_test: int = 2000
    train_seed: int = 2
    val_seed: int = 3
    test_seed: int = 1
    # instances: (name, couplings, coupling seed, beta)
    instances: tuple = (("A0", "signed", 0, 1.0), ("A1", "signed", 1, 1.0),
                        ("B", "ring", 0, 2.0))
    ring_r: int = 2
    # factored attention and plmDCA
    sweep_M: tuple = (10, 20, 40, 80, 128, 256, 512, 1024, 2048, 4096, 8192)
    n_rep: int = 3                         # disjoint training sets for each M < rep_below
    rep_below: int = 128
    softmax_instances: tuple = ("A0", "B")
    lam_factored: float = 1e-4
    sweep_lams: tuple = (1e-2,)           # more ridges of the factored layer, sweep instances
    sweep_instances: tuple = ("A0", "A1")
    plm_lams: tuple = (1e-3, 3e-3, 1e-2, 3e-2)
    # vanilla encoders, instance A0 (--M and --layers choose which run now)
    vanilla_M: tuple = (512, 2048, 8192)
    vanilla_layers: tuple = (1, 2, 4)
    seeds: tuple = (0, 1, 2)              # init, batch and mask seed of a vanilla run
    d_model: int = 32
    n_heads: int = 4
    d_ff: int = 128
    max_steps: int = 10000
    batch_size: int = 128
    lr: float = 2e-3
    eval_every: int = 250
    patience: int = 3
    lr_decay: float = 0.5
    n_decays: int = 1
    min_delta: float = 1e-3


#: the `paper` profile: chapter 6's paper-profile samples, wider vanilla encoders (not run)
PAPER = dict(M_max=32768, n_chains=4096, n_test=5000, sweep_M=(10, 20, 40, 80, *(2**k for k in
             range(7, 16))), vanilla_M=(512, 2048, 8192, 32768), d_model=64, d_ff=256,
             max_steps=40000)

KEY = ("model", "instance", "M", "rep", "n_layers", "seed", "lam")
FIELDS = (*KEY, "beta", "test_loss", "optimum", "excess", "val_loss", "coupling_error",
          "best_step", "steps", "converged", "n_params", "cpu_seconds")


def instance_data(cfg: Config, name: str) -> dict:
    """Couplings, samples and optimum of one instance (the chapter's draws for ``A0``)."""
    _, kind, seed, beta = next(i for i in cfg.instances if i[0] == name)
    if kind == "signed":
        J, U = potts.random_couplings(cfg.L, cfg.q, seed=seed)
    else:
        J, U = potts.ring_couplings(cfg.L, cfg.q, cfg.ring_r, seed=seed)
    draw = dict(burn_in=cfg.burn_in, thin=cfg.thin)
    s = {"train": potts.sample(J, U, beta, cfg.M_max, n_chains=cfg.n_chains,
                               seed=cfg.train_seed, **draw),
         "val": potts.sample(J, U, beta, cfg.n_val, seed=cfg.val_seed, **draw),
         "test": potts.sample(J, U, beta, cfg.n_test, seed=cfg.test_seed, **draw)}
    optimum = potts.neg_log_pseudolikelihood(J, U, beta, s["test"])
    return {"J": J, "U": U, "beta": beta, "s": s, "optimum": optimum}


def nll(logp: np.ndarray, s: np.ndarray) -> float:
    """Mean ``-log p(s_i | s_-i)`` from log conditionals (n, L, q)."""
    return -float(np.take_along_axis(logp, s[:, :, None], axis=2).mean())


def fit_factored(cfg, data, s, softmax: bool, lam: float) -> dict:
    layer = factored_attention.FactoredAttention(cfg.L, cfg.q, softmax=softmax).double()
    factored_attention.fit_factored(layer, s, lam=lam)
    A, V = layer.attention().detach().numpy(), layer.V.detach().numpy()
    return {"test_loss": nll(potts.log_conditionals(A, V, data["s"]["test"]),
                             data["s"]["test"]),
            "val_loss": nll(potts.log_conditionals(A, V, data["s"]["val"]), data["s"]["val"]),
            "coupling_error": pseudolikelihood.coupling_error(A, V, data["J"], data["U"],
                                                              data["beta"]),
            "n_params": cfg.L * (cfg.L - 1) + cfg.q**2}


def fit_plm(cfg, data, s, lam: float) -> dict:
    W, h = pseudolikelihood.fit_full_pseudolikelihood(s, cfg.q, lam)
    loss = {k: nll(pseudolikelihood.full_log_conditionals(W, h, data["s"][k]), data["s"][k])
            for k in ("test", "val")}
    return {"test_loss": loss["test"], "val_loss": loss["val"],
            "n_params": cfg.L * (cfg.L - 1) * cfg.q**2 + cfg.L * cfg.q}


def fit_vanilla(cfg, data, s, n_layers: int, seed: int) -> dict:
    model = potts_mlm.vanilla_transformer(cfg.L, cfg.q, n_layers, d_model=cfg.d_model,
                                          n_heads=cfg.n_heads, d_ff=cfg.d_ff, init_seed=seed)
    history, converged = potts_mlm.train_mlm(
        model, s, data["s"]["val"], cfg.q, steps=cfg.max_steps, batch_size=cfg.batch_size,
        lr=cfg.lr, eval_every=cfg.eval_every, batch_seed=seed, mask_seed=seed,
        patience=cfg.patience, lr_decay=cfg.lr_decay, n_decays=cfg.n_decays,
        min_delta=cfg.min_delta)
    best_step, val_loss, _ = min(history, key=lambda h: h[1])
    return {"test_loss": potts_mlm.test_loss(model, data["s"]["test"], cfg.q),
            "val_loss": val_loss, "best_step": best_step, "steps": history[-1][0],
            "converged": converged, "n_params": sum(p.numel() for p in model.parameters())}


def jobs(cfg: Config, vanilla_layers, vanilla_M):
    """Every row to compute, cheapest first: ``(key dict, fit function, its arguments)``."""
    for name, *_ in cfg.instances:
        models = ("factored", "factored_softmax")[:1 + (name in cfg.softmax_instances)]
        for M in cfg.sweep_M:
            for rep in range(n_reps(cfg, M)):
                for model in models:
                    yield (dict(model=model, instance=name, M=M, rep=rep),
                           fit_factored, (model == "factored_softmax", cfg.lam_factored))
                for lam in cfg.sweep_lams if name in cfg.sweep_instances else ():
                    yield (dict(model="factored", instance=name, M=M, rep=rep, lam=lam),
                           fit_factored, (False, lam))
    for M in cfg.sweep_M:
        for rep in range(n_reps(cfg, M)):
            for lam in cfg.plm_lams:
                yield dict(model="plm_full", instance="A0", M=M, rep=rep, lam=lam), fit_plm, (lam,)
    for M in vanilla_M:
        for seed in cfg.seeds:                 # every depth gets its first seed first
            for n_layers in vanilla_layers:
                yield (dict(model="vanilla", instance="A0", M=M, rep=0, n_layers=n_layers,
                            seed=seed), fit_vanilla, (n_layers, seed))


def n_reps(cfg: Config, M: int) -> int:
    """How many disjoint training sets of size ``M`` are fitted."""
    return min(cfg.n_rep, cfg.M_max // M) if M < cfg.rep_below else 1


def key_of(row: dict) -> tuple:
    return tuple(str(row.get(k, "")) for k in KEY)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/potts"))
    parser.add_argument("--layers", type=int, nargs="*", help="vanilla depths to run now")
    parser.add_argument("--M", type=int, nargs="*", help="vanilla training-set sizes to run now")
    args = parser.parse_args()
    torch.set_num_threads(1)
    profile = provenance.profile()
    cfg = Config() if profile == "laptop" else replace(Config(), **PAPER)
    csv_path = args.out / f"baselines_{profile}.csv"
    json_path = args.out / f"baselines_{profile}.json"
    record = json.loads(json.dumps(asdict(cfg)))
    meta = json.loads(json_path.read_text()) if json_path.exists() else None
    if meta is not None and meta["config"] != record:
        sys.exit(f"{json_path} holds another configuration: delete it and {csv_path} to rerun")
    code = provenance.code_state()
    if code["dirty"]:
        sys.exit("the working tree differs from its commit: commit first, or run from a clean "
                 "git worktree (every run records its commit; lib.potts_results refuses dirty ones)")
    if meta is not None and meta["code"]["commit"] != code["commit"]:
        print(f"note: adding rows from commit {code['commit']} to rows from "
              f"{meta['code']['commit']}", flush=True)
    meta = {"config": record, "code": (meta or {}).get("code", code),
            "environment": provenance.environment(), "runs": (meta or {}).get("runs", [])}
    args.out.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(meta, indent=1) + "\n")
    done = set()
    if csv_path.exists():
        with csv_path.open() as f:
            done = {key_of(row) for row in csv.DictReader(f)}
    new_file = not csv_path.exists()
    cpu_start, data = time.process_time(), {}
    with csv_path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new_file:
            writer.writeheader()
        for key, fit, extra in jobs(cfg, args.layers or cfg.vanilla_layers,
                                    args.M or cfg.vanilla_M):
            if key_of(key) in done:
                continue
            if key["instance"] not in data:
                data[key["instance"]] = instance_data(cfg, key["instance"])
            d, M, rep, cpu = data[key["instance"]], key["M"], key["rep"], time.process_time()
            out = fit(cfg, d, d["s"]["train"][rep * M:(rep + 1) * M], *extra)
            row = {**key, "beta": d["beta"], "optimum": d["optimum"], **out,
                   "excess": out["test_loss"] - d["optimum"],
                   "cpu_seconds": round(time.process_time() - cpu, 2)}
            writer.writerow(row)
            f.flush()
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()},
                  flush=True)
    meta["runs"].append({
        "commit": code["commit"], "dirty": code["dirty"], "lib_sha256": code["lib_sha256"],
        "cpu_seconds": round(time.process_time() - cpu_start),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python", *sys.argv])})
    json_path.write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {csv_path} and {json_path}")


if __name__ == "__main__":
    main()

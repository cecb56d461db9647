"""Chapter 5's ancestor probes: what is fitted, on which sequences, and the stored tables.

Fitting every probe takes CPU minutes, so the page never fits: ``scripts/fit_probes.py`` runs
:func:`ancestor_table`, :func:`budget_table` and :func:`checkpoint_table` on the models of the
store and :func:`save` writes three tidy CSV tables and a JSON record (configuration, store keys
of the models, code state, wall and CPU time) into ``data/probes/``; the page calls
:func:`load`, which refuses a record made with another configuration, other models or
uncommitted code.

Two studies:

- **ancestor probes** (:func:`ancestor_table`): the paper's two-layer readout
  (`lib.two_layer_probes.fit_two_layer_probes`) per model, layer (0 = embedding plus
  position) and ancestor level ``m``, trained on the tokens of ``n_train`` fresh sequences of the full model and scored
  on ``n_test`` others, for the trained models and for a random encoder of each model shape;
  the probes' laws are compared with BP's exact ancestor laws (`lib.ancestor_laws`); one
  model's probes are refitted with a longer budget (:func:`budget_table`);
- **checkpoint probes** (:func:`checkpoint_table`): the linear probes (`lib.probe.fit_probe`)
  of every layer and level at each stored checkpoint of the ``k = 0`` runs and at their final
  model, the protocol chapter 5 used to fit on the page (500 sequences per fit).

Masked-token models read every sequence with one masked position (they were trained so); root
models read the sequences as they are. Introduced in chapter 5.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lib import ancestor_laws, probe, provenance, store, tree, two_layer_probes
from lib.validate import check_int, check_real

REGENERATE = ("git worktree add /tmp/probe_wt HEAD && OMP_NUM_THREADS=1 PYTHONPATH=/tmp/probe_wt "
              "python /tmp/probe_wt/scripts/fit_probes.py --out data/probes")
TABLES = {"ancestors": "ancestor_probes.csv", "checkpoints": "checkpoint_probes.csv",
          "budget": "budget_check.csv"}
RECORD = "probes.json"


@dataclass(frozen=True)
class ProbeConfig:
    """Sizes and seeds of chapter 5's probes.

    The readout (one hidden ReLU layer of 64) and the training-set size (2**14 sequences, all
    their tokens) are the paper's; the optimiser, the budget, the early stopping and the test
    size are our choices, to fit the CPU budget of a page (the paper: Adam at 1e-4, batches of 32
    sequences, 100 epochs, 10**4 validation sequences).
    """

    models: tuple[str, ...] = ("mlm_k0", "mlm_k1", "mlm_k2", "mlm_k3", "mlm_k4", "root_k0")
    n_train: int = 2**14          # sequences (x 2**depth tokens) training each probe (paper)
    n_val: int = 2**11            # held-out sequences for early stopping (ours)
    n_test: int = 2**12           # held-out sequences scoring each probe (ours)
    hidden: int = 64              # hidden ReLU units of the readout (paper)
    lr: float = 4e-3              # Adam learning rate at the start (ours) ...
    lr_final: float = 0.02        # ... decayed by a cosine to this fraction (ours)
    batch_size: int = 1024        # tokens per Adam step (ours; paper 32 x 16 = 512)
    max_epochs: int = 5           # passes over the training tokens at most (ours)
    patience: int = 2             # epochs without a lower validation loss before stopping
    budget_model: str = "mlm_k0"  # budget check: this model's probes refitted with ...
    budget_factor: int = 2        # ... this many times max_epochs
    train_seed: int = 601         # data seed of the training sequences (k = 0 trees)
    val_seed: int = 602           # data seed of the early-stopping sequences
    test_seed: int = 603          # data seed of the test sequences
    mask_seed: int = 604          # masked position of MLM inputs (+0 train, +1 val, +2 test)
    probe_seed: int = 605         # initial weights and minibatch order of every probe
    control_seed: int = 606       # weights of the random encoders (one per model shape)
    linear_n_train: int = 500     # checkpoint probes: sequences fitting each linear probe
    linear_n_test: int = 500      # ... and scoring it
    linear_l2: float = 1e-4       # ... weight penalty
    linear_train_seed: int = 502  # ... data seeds (chapter 5's earlier page-side protocol)
    linear_test_seed: int = 503
    linear_mask_seed: int = 504   # ... masked positions (+1 train, +2 test)

    def __post_init__(self):
        for name in ("n_train", "n_val", "n_test", "hidden", "batch_size", "max_epochs",
                     "patience", "budget_factor", "linear_n_train", "linear_n_test"):
            check_int(name, getattr(self, name), 1)
        check_real("lr", self.lr, 1e-12)
        if not 0.0 < check_real("lr_final", self.lr_final, 0.0) <= 1.0:
            raise ValueError(f"lr_final must be in (0, 1], got {self.lr_final}")
        check_real("linear_l2", self.linear_l2, 0.0)
        for name in ("train_seed", "val_seed", "test_seed", "mask_seed", "probe_seed",
                     "control_seed", "linear_train_seed", "linear_test_seed",
                     "linear_mask_seed"):
            check_int(name, getattr(self, name), 0)
        models = tuple(self.models) if isinstance(self.models, (tuple, list)) else ()
        if not models or not all(isinstance(m, str) for m in models):
            raise ValueError(f"models must be a non-empty tuple of run names, got {self.models!r}")
        object.__setattr__(self, "models", models)


def inputs(task: str, leaves: np.ndarray, q: int, seed: int) -> np.ndarray:
    """Token ids for a model of ``task``: MLM sequences get one masked position (id ``q``) each,
    drawn from ``seed``; root sequences are returned as they are."""
    if task not in ("root", "mlm"):
        raise ValueError(f"task must be 'root' or 'mlm', got {task!r}")
    if task == "root":
        return leaves
    x = np.array(leaves, copy=True)
    where = np.random.default_rng(seed).integers(x.shape[1], size=len(x))
    x[np.arange(len(x)), where] = q
    return x


def encoders(cfg: ProbeConfig, runs: dict) -> dict:
    """``{name: (run name or None, model)}``: the stored models of ``cfg.models`` (never
    trained here, `lib.store.require`) and one random encoder per model shape, named
    ``random_{task}``, drawn from ``cfg.control_seed``."""
    out, shapes = {}, {}
    for name in cfg.models:
        if name not in runs:
            raise ValueError(f"models: unknown run {name!r}; known runs: {sorted(runs)}")
        out[name] = (name, store.require(runs[name], name)[0])
        shapes.setdefault(runs[name].task, runs[name].model)
    for task, shape in shapes.items():
        out[f"random_{task}"] = (None, probe.random_encoder(shape, cfg.control_seed))
    return out


def _split(M, depth, n, seed):
    """Whole k = 0 trees: the levels of `lib.tree.sample_tree`."""
    return tree.sample_tree(M, depth, n, k=0, seed=seed)


def _token_rows(H: np.ndarray) -> np.ndarray:
    """(layers, n, L, d) -> (layers, n * L, d)."""
    return H.reshape(H.shape[0], -1, H.shape[-1])


def _clustered_se(correct: np.ndarray, n: int) -> float:
    """Standard error of a token mean whose tokens come in ``n`` sequences (cluster-robust)."""
    per_seq = correct.reshape(n, -1).mean(axis=1)
    return float(per_seq.std(ddof=1) / np.sqrt(n))


def _data(cfg: ProbeConfig, M: np.ndarray, depth: int) -> tuple[dict, dict]:
    """The train, val and test trees (levels) and their ancestors (depth, n * L) per split."""
    split = {s: _split(M, depth, n, seed) for s, n, seed in (
        ("train", cfg.n_train, cfg.train_seed), ("val", cfg.n_val, cfg.val_seed),
        ("test", cfg.n_test, cfg.test_seed))}
    Y = {s: np.stack([probe.ancestors(lv, m).ravel() for m in range(depth)])
         for s, lv in split.items()}
    return split, Y


def _fit(cfg: ProbeConfig, model, split: dict, Y: dict, q: int, max_epochs: int):
    """Inputs, fitted probes, test probabilities (layers, depth, N, q) and timing of one
    encoder."""
    x = {s: inputs(model.cfg.task, lv[-1], q, cfg.mask_seed + i)
         for i, (s, lv) in enumerate(split.items())}
    start, cpu = time.perf_counter(), time.process_time()
    H = {s: _token_rows(probe.residual_stream(model, x[s])) for s in x}
    fit = two_layer_probes.fit_two_layer_probes(
        H["train"], Y["train"], q, H["val"], Y["val"], hidden=cfg.hidden, lr=cfg.lr,
        lr_final=cfg.lr_final, batch_size=cfg.batch_size, max_epochs=max_epochs,
        patience=cfg.patience, seed=cfg.probe_seed)
    P = fit.predict_proba(H["test"]).astype(np.float64)              # (layers, m, N, q)
    P /= P.sum(-1, keepdims=True)
    timing = {"fit_seconds": time.perf_counter() - start,
              "fit_cpu_seconds": time.process_time() - cpu}
    return x, fit, P, timing


def ancestor_table(cfg: ProbeConfig, runs: dict, M: np.ndarray, progress=None) -> pd.DataFrame:
    """Two-layer ancestor probes of every encoder of :func:`encoders`, per layer and level.

    One row per (encoder, layer, m) with the held-out accuracy and its standard error
    (clustered by sequence), BP's accuracy from the same sequences (its exact posterior given
    every observed leaf, and its inside law given the leaves below the node), and the mean
    ``KL(BP law || probe)`` in nats per token for both laws, over all test tokens and over the
    tokens whose level-``m`` block holds the masked leaf (MLM inputs only). ``above_filter``
    marks levels ``m < k_train`` that a model trained on filtered data never saw.
    """
    q, depth = M.shape[0], runs[cfg.models[0]].depth
    split, Y = _data(cfg, M, depth)
    rows = []
    for name, (run, model) in (progress or (lambda x: x))(encoders(cfg, runs).items()):
        x, fit, P, timing = _fit(cfg, model, split, Y, q, cfg.max_epochs)
        masked = (x["test"] == q)                                     # (n, L)
        k_train = runs[run].k_train if run else None
        for m in range(depth):
            post = ancestor_laws.per_token(ancestor_laws.posterior(M, x["test"], m), depth)
            ins = ancestor_laws.per_token(ancestor_laws.inside(M, x["test"], m), depth)
            block = masked.reshape(len(masked), 2**m, -1).any(-1)     # (n, 2**m)
            block = np.repeat(block, 2 ** (depth - m), axis=1).ravel()
            post, ins = post.reshape(-1, q), ins.reshape(-1, q)
            y = Y["test"][m]
            for layer in range(P.shape[0]):
                p = P[layer, m]
                correct = p.argmax(1) == y
                row = {"encoder": name, "run": run, "task": model.cfg.task,
                       "k_train": k_train, "trained": run is not None, "layer": layer,
                       "m": m, "above_filter": bool(run and m < k_train),
                       "accuracy": float(correct.mean()),
                       "accuracy_se": _clustered_se(correct, cfg.n_test),
                       "bp_accuracy": float((post.argmax(1) == y).mean()),
                       "inside_accuracy": float((ins.argmax(1) == y).mean()),
                       "kl_posterior": probe.divergence(post, p)[0],
                       "kl_inside": probe.divergence(ins, p)[0],
                       "masked_block_share": float(block.mean())}
                if block.any():
                    row |= {"kl_posterior_masked_block": probe.divergence(
                                post[block], p[block])[0],
                            "kl_inside_masked_block": probe.divergence(
                                ins[block], p[block])[0],
                            "accuracy_masked_block": float(correct[block].mean())}
                row |= {"best_epoch": int(fit.best_epoch[layer, m]),
                        "epochs_run": len(fit.val_loss) - 1,
                        "val_loss": float(fit.val_loss[fit.best_epoch[layer, m], layer, m]),
                        **timing}
                rows.append(row)
    return pd.DataFrame(rows)


def budget_table(cfg: ProbeConfig, runs: dict, M: np.ndarray) -> pd.DataFrame:
    """The probes of ``cfg.budget_model`` refitted with ``budget_factor`` times the epochs (the
    same data, seeds and schedule shape): held-out accuracy per (layer, m), to set beside the
    model's rows of :func:`ancestor_table` and show what the short budget costs."""
    q, depth = M.shape[0], runs[cfg.budget_model].depth
    split, Y = _data(cfg, M, depth)
    model = store.require(runs[cfg.budget_model], cfg.budget_model)[0]
    epochs = cfg.budget_factor * cfg.max_epochs
    _, fit, P, timing = _fit(cfg, model, split, Y, q, epochs)
    correct = P.argmax(-1) == Y["test"][None]                         # (layers, m, N)
    return pd.DataFrame([{"encoder": cfg.budget_model, "max_epochs": epochs, "layer": layer,
                          "m": m, "accuracy": float(correct[layer, m].mean()),
                          "best_epoch": int(fit.best_epoch[layer, m]),
                          "val_loss": float(fit.val_loss[fit.best_epoch[layer, m], layer, m]),
                          **timing}
                         for layer in range(P.shape[0]) for m in range(depth)])


def checkpoint_table(cfg: ProbeConfig, runs: dict, M: np.ndarray, progress=None
                     ) -> pd.DataFrame:
    """Linear probes (`lib.probe.fit_probe`) of every layer and ancestor level at every stored
    checkpoint of the runs ``mlm_k0`` and ``root_k0`` and at their final model (its stopping
    step): held-out accuracy per (task, step, layer, m)."""
    q, depth = M.shape[0], runs["mlm_k0"].depth
    train_lv = _split(M, depth, cfg.linear_n_train, cfg.linear_train_seed)
    test_lv = _split(M, depth, cfg.linear_n_test, cfg.linear_test_seed)
    rows = []
    for task in ("mlm", "root"):
        name = f"{task}_k0"
        final, _, info = store.require(runs[name], name)
        checkpoints = store.load_checkpoints(runs[name]) | {info["stop_step"]: final}
        x_train = inputs(task, train_lv[-1], q, cfg.linear_mask_seed + 1)
        x_test = inputs(task, test_lv[-1], q, cfg.linear_mask_seed + 2)
        for step, model in (progress or (lambda x: x))(checkpoints.items()):
            H_train = probe.residual_stream(model, x_train)
            H_test = probe.residual_stream(model, x_test)
            d = H_train.shape[-1]
            for layer in range(H_train.shape[0]):
                for m in range(depth):
                    fit = probe.fit_probe(H_train[layer].reshape(-1, d),
                                          probe.ancestors(train_lv, m).ravel(), q,
                                          l2=cfg.linear_l2)
                    p = fit.predict_proba(H_test[layer].reshape(-1, d))
                    y = probe.ancestors(test_lv, m).ravel()
                    rows.append({"task": task, "step": step, "layer": layer, "m": m,
                                 "accuracy": float((p.argmax(1) == y).mean())})
    return pd.DataFrame(rows)


def _models_record(cfg: ProbeConfig, runs: dict) -> dict:
    """Store keys of every model the tables read (the checkpoint runs included)."""
    names = sorted(set(cfg.models) | {"mlm_k0", "root_k0", cfg.budget_model})
    return {name: store.key(runs[name]) for name in names}


def _config_record(cfg: ProbeConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg)))


def save(folder, cfg: ProbeConfig, runs: dict, tables: dict, timing: dict, command: str,
         allow_dirty: bool = False) -> Path:
    """Write ``tables`` (``{name: DataFrame}`` for every name of :data:`TABLES`) and their JSON
    record into ``folder``; returns the record's path.

    Raises
    ------
    lib.store.DirtyTree
        If the library's checkout has uncommitted changes to tracked files (unless
        ``allow_dirty``): a record must name the code that made it.
    """
    if set(tables) != set(TABLES):
        raise ValueError(f"tables must hold exactly {sorted(TABLES)}, got {sorted(tables)}")
    code = provenance.code_state()
    if code["dirty"] and not allow_dirty:
        raise store.DirtyTree("the checkout has uncommitted changes; commit them and run "
                              f"from a clean worktree: {REGENERATE}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_csv(folder / TABLES[name], index=False)
    record = {"config": _config_record(cfg), "models": _models_record(cfg, runs),
              "code": code, "environment": provenance.environment(), "timing": timing,
              "command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    path = folder / RECORD
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def load(folder, cfg: ProbeConfig, runs: dict) -> tuple[dict, dict]:
    """The stored ``({name: table}, record)`` for ``cfg`` and ``runs`` (names of :data:`TABLES`).

    Raises
    ------
    lib.store.MissingEntry
        If the tables are missing.
    ValueError
        If they were made with another configuration, from other models of the store, or
        from uncommitted code; the message names the command that regenerates them.
    """
    folder = Path(folder)
    if not all((folder / name).exists() for name in (*TABLES.values(), RECORD)):
        raise store.MissingEntry(f"{folder} holds no probe tables; regenerate them with: "
                                 f"{REGENERATE}")
    record = json.loads((folder / RECORD).read_text())
    if record["config"] != _config_record(cfg):
        changed = sorted(k for k in record["config"]
                         if record["config"][k] != _config_record(cfg).get(k))
        raise ValueError(f"the probe tables in {folder} were made with another configuration "
                         f"(fields {changed} differ); regenerate them with: {REGENERATE}")
    if record["models"] != _models_record(cfg, runs):
        raise ValueError(f"the probe tables in {folder} were made from other models of the "
                         f"store; regenerate them with: {REGENERATE}")
    if record["code"]["dirty"] or record["code"]["commit"] == "unknown":
        raise ValueError(f"the probe tables in {folder} come from uncommitted code; "
                         f"regenerate them with: {REGENERATE}")
    return {name: pd.read_csv(folder / file) for name, file in TABLES.items()}, record

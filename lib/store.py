"""The model store: trained weights and training histories in ``data/models``, keyed by the full config.

An entry is three files named by :func:`key`, a hash of the whole :class:`lib.config.TrainConfig`
(grammar, data, model, optimiser, evaluation, seeds) and of :data:`FORMAT`:

- ``<key>.pt``: the float32 state dict;
- ``<key>.csv``: the history table of `lib.train.train`;
- ``<key>.json``: the config itself and the provenance (clean commit, hash of the library code,
  device, wall time, versions), written last;
- ``<key>.checkpoints.pt``, only for a config with ``checkpoints``: ``{step: state dict}``.

The chapters only :func:`require` entries: a missing one is an error naming the command that
regenerates it (`scripts/regenerate_models.py`, which trains through `lib.sweep`). An entry is
used only when its stored config equals the requested one exactly. :func:`status` also calls an
entry stale when its record names no clean commit. Bump :data:`FORMAT` whenever a change to
`lib.train` or `lib.transformer` changes what a config produces (the golden test in
``tests/test_golden.py`` fails until then): every old entry then stops matching. Introduced in
chapter 4.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import pandas as pd
import torch

from lib import train
from lib.config import LEGACY_FIELDS, TrainConfig, from_record
from lib.provenance import code_state
from lib.resume import atomic_write, cpu_state
from lib.transformer import Transformer

#: Default location of the store, ``data/models`` in the repository.
STORE = Path(__file__).resolve().parents[1] / "data" / "models"
#: Version of the meaning of a config; part of every key.
FORMAT = 1


def _record(cfg: TrainConfig) -> dict:
    """The JSON-ready identity of a run: store format plus every config field.

    A field at its value in `lib.config.LEGACY_FIELDS` is left out, so entries written before
    that field existed keep their key.
    """
    config = {name: value for name, value in dataclasses.asdict(cfg).items()
              if name not in LEGACY_FIELDS or value != LEGACY_FIELDS[name]}
    return {"format": FORMAT, "config": config}


def key(cfg: TrainConfig) -> str:
    """16 hex digits of the SHA-256 of the run's identity (:func:`_record`, canonical JSON)."""
    text = json.dumps(_record(cfg), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class DirtyTree(ValueError):
    """Raised when a run would be saved from a working tree that differs from its commit."""


class MissingEntry(LookupError):
    """Raised by :func:`require` when the store has no entry for a run."""


def save(cfg: TrainConfig, model: Transformer, history: pd.DataFrame, info: dict,
         checkpoints: dict | None = None, root: Path = STORE, allow_dirty: bool = False,
         code: dict | None = None) -> Path:
    """Write an entry; returns the path of its JSON record.

    ``checkpoints`` (``{step: state dict}``) holds the steps of ``cfg.checkpoints`` the run
    reached. The old record of the entry (a re-save) is removed first, every file is written
    atomically and the new record last, so an interrupted save leaves no entry. The record
    names the commit and a hash of the library code: ``code``, the `code_state` read when the
    run started, if given (the save then refuses if the code changed since).

    Raises
    ------
    DirtyTree
        If tracked files differ from the commit, unless ``allow_dirty`` (the hash of the diff is
        then recorded, and `scripts/regenerate_models.py --check` reports the entry as stale).
    """
    stop = history.step.max()
    if set(checkpoints or {}) != {s for s in cfg.checkpoints if s <= stop}:
        raise ValueError(f"checkpoints must hold exactly the steps of {cfg.checkpoints} up to the "
                         f"last step {stop}, got {sorted(checkpoints or {})}")
    now = code_state()
    if code is not None and code != now:
        raise DirtyTree(f"the code changed while the run trained ({code['commit']} -> "
                        f"{now['commit']}): retrain it")
    code = now
    if code["dirty"] and not allow_dirty:
        raise DirtyTree("the working tree differs from its commit: commit first (or pass "
                        "allow_dirty=True, which records the diff's hash)")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stem = root / key(cfg)
    Path(f"{stem}.json").unlink(missing_ok=True)
    atomic_write(Path(f"{stem}.pt"), lambda p: torch.save(cpu_state(model), p))
    if cfg.checkpoints:
        atomic_write(Path(f"{stem}.checkpoints.pt"), lambda p: torch.save(
            {int(s): state for s, state in sorted(checkpoints.items())}, p))
    atomic_write(Path(f"{stem}.csv"), lambda p: history.to_csv(p, index=False, float_format="%.6g"))
    meta = {**_record(cfg), "provenance": {**info, **code,
                                           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}}
    atomic_write(Path(f"{stem}.json"), lambda p: p.write_text(json.dumps(meta, indent=1, sort_keys=True)))
    return Path(f"{stem}.json")


def partial_path(cfg: TrainConfig, root: Path = STORE) -> Path:
    """Where a run of ``cfg`` in progress keeps its resumable state (not committed)."""
    return Path(root) / "partial" / f"{key(cfg)}.pt"


def status(cfg: TrainConfig, root: Path = STORE) -> str:
    """``"ok"``, ``"missing"``, or ``"stale: <why>"`` for the entry of ``cfg``: a stored config
    that differs, a file missing, or a record that names no clean commit."""
    try:
        entry = _entry(cfg, root)
    except ValueError:
        return "stale: the stored config differs"
    if entry is None:
        return "missing"
    stem, meta = entry
    if not all(Path(f"{stem}.{ext}").exists() for ext in ("pt", "csv")):
        return "stale: files missing"
    if cfg.checkpoints and not Path(f"{stem}.checkpoints.pt").exists():
        return "stale: checkpoint file missing"
    commit = meta["provenance"].get("commit", "unknown")
    if commit.endswith("+dirty") or meta["provenance"].get("dirty", False) or commit == "unknown":
        return f"stale: written from an uncommitted tree ({commit})"
    return "ok"


def require(cfg: TrainConfig, name: str | None = None, root: Path = STORE):
    """The stored ``(model, history, provenance)`` for ``cfg``; never trains.

    Raises
    ------
    MissingEntry
        If there is no entry, naming the command that regenerates it.
    ValueError
        If the entry is stale (as in :func:`load`).
    """
    entry = load(cfg, root)
    if entry is None:
        only = f" --only {name}" if name else ""
        raise MissingEntry(f"the model store has no entry {key(cfg)} for run {name or cfg}; "
                           f"regenerate it with: python scripts/regenerate_models.py{only}")
    return entry


def _entry(cfg: TrainConfig, root: Path):
    """``(path stem, JSON record)`` of the entry for ``cfg``, or ``None``; raises if it is stale."""
    stem = Path(root) / key(cfg)
    if not Path(f"{stem}.json").exists():
        return None
    meta = json.loads(Path(f"{stem}.json").read_text())
    if {k: meta.get(k) for k in ("format", "config")} != json.loads(json.dumps(_record(cfg))):
        raise ValueError(f"store entry {stem.name} does not hold this config (stale or edited entry); "
                         "delete it or regenerate the store with scripts/regenerate_models.py")
    return stem, meta


def _model(cfg: TrainConfig, state: dict) -> Transformer:
    """A model of ``cfg`` in eval mode holding the weights ``state`` (all of them, exactly)."""
    model = Transformer(cfg.model)
    model.load_state_dict(state, strict=True)
    return model.eval()


def load(cfg: TrainConfig, root: Path = STORE):
    """The stored ``(model, history, provenance)`` for ``cfg``, or ``None`` if there is no entry.

    Raises
    ------
    ValueError
        If the entry's stored config is not exactly ``cfg`` (a stale or foreign entry).
    """
    entry = _entry(cfg, root)
    if entry is None:
        return None
    stem, meta = entry
    model = _model(cfg, torch.load(f"{stem}.pt", weights_only=True))
    return model, pd.read_csv(f"{stem}.csv"), meta["provenance"]


def pretrained_state(cfg: TrainConfig, root: Path = STORE) -> dict | None:
    """The stored weights of the masked-token run ``cfg.init_from`` (``None`` without one).

    Raises
    ------
    MissingEntry
        If the store at ``root`` has no current entry under that key.
    ValueError
        If that run is not a masked-token run of the same encoder shape and grammar.
    """
    if cfg.init_from is None:
        return None
    stem = Path(root) / cfg.init_from
    if not Path(f"{stem}.json").exists():
        raise MissingEntry(f"the model store has no pre-trained run {cfg.init_from}; train it "
                           f"first (python scripts/regenerate_models.py)")
    source = from_record(json.loads(Path(f"{stem}.json").read_text())["config"])
    if status(source, root) != "ok":
        raise MissingEntry(f"pre-trained run {cfg.init_from}: {status(source, root)}")
    shape = ("seq_len", "d_model", "n_layers", "n_heads", "d_ff", "n_classes")
    if source.task != "mlm" or any(getattr(source.model, f) != getattr(cfg.model, f)
                                   for f in shape) or (source.q, source.depth, source.sigma,
                                                       source.grammar_seed) != (
            cfg.q, cfg.depth, cfg.sigma, cfg.grammar_seed):
        raise ValueError(f"init_from {cfg.init_from} must be a masked-token run with the "
                         f"encoder shape {[getattr(cfg.model, f) for f in shape]} and grammar "
                         f"of this run")
    return torch.load(f"{stem}.pt", weights_only=True)


def load_checkpoints(cfg: TrainConfig, root: Path = STORE) -> dict[int, Transformer] | None:
    """The stored models ``{step: model}`` at every step of ``cfg.checkpoints`` the run reached
    (a converged run stops before the later ones), or ``None`` if there is no entry.

    Raises
    ------
    ValueError
        If ``cfg`` has no checkpoints, or the entry is stale (as in :func:`load`).
    """
    if not cfg.checkpoints:
        raise ValueError("cfg.checkpoints is empty: this run keeps no checkpoints")
    entry = _entry(cfg, root)
    if entry is None:
        return None
    states = torch.load(f"{entry[0]}.checkpoints.pt", weights_only=True)
    return {step: _model(cfg, state) for step, state in sorted(states.items())}


def load_or_train(cfg: TrainConfig, root: Path = STORE, progress: bool = True,
                  allow_dirty: bool = False):
    """The stored run for ``cfg`` if present, else train it with `lib.train.train` and save it
    (for a reader's own experiments; the book's chapters only :func:`require` entries).

    Returns
    -------
    model : Transformer (eval mode, CPU)
    history : pandas.DataFrame
    provenance : dict
    """
    entry = load(cfg, root)
    if entry is not None:
        return entry
    save(cfg, *train.train(cfg, progress=progress), root=root, allow_dirty=allow_dirty)
    return load(cfg, root)          # read back, so a fresh and a stored run give identical tables

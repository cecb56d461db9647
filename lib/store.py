"""The model store: trained weights and training histories in ``data/models``, keyed by the full config.

An entry is three files named by :func:`key`, a hash of the whole :class:`lib.config.TrainConfig`
(grammar, data, model, optimiser, evaluation, seeds) and of :data:`FORMAT`:

- ``<key>.pt``: the float32 state dict;
- ``<key>.csv``: the history table of `lib.train.train`;
- ``<key>.json``: the config itself and the provenance (commit, device, wall time, versions);
- ``<key>.checkpoints.pt``, only for a config with ``checkpoints``: ``{step: state dict}``.

:func:`load_or_train` reuses an entry only when its stored config equals the requested one
exactly; an entry whose config differs (edited by hand, or written by other code) raises instead
of being used, and an absent entry is trained and saved. Bump :data:`FORMAT` whenever a change to
`lib.train` or `lib.transformer` changes what a config produces: every old entry then stops
matching. Introduced in chapter 4.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import pandas as pd
import torch

from lib import train
from lib.config import TrainConfig
from lib.provenance import git_commit
from lib.transformer import Transformer

#: Default location of the store, ``data/models`` in the repository.
STORE = Path(__file__).resolve().parents[1] / "data" / "models"
#: Version of the meaning of a config; part of every key.
FORMAT = 1


def _record(cfg: TrainConfig) -> dict:
    """The JSON-ready identity of a run: store format plus every config field.

    An empty ``checkpoints`` is left out, so entries written before that field existed keep their key.
    """
    config = dataclasses.asdict(cfg)
    if not config["checkpoints"]:
        del config["checkpoints"]
    return {"format": FORMAT, "config": config}


def key(cfg: TrainConfig) -> str:
    """16 hex digits of the SHA-256 of the run's identity (:func:`_record`, canonical JSON)."""
    text = json.dumps(_record(cfg), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save(cfg: TrainConfig, model: Transformer, history: pd.DataFrame, info: dict,
         checkpoints: dict | None = None, root: Path = STORE) -> Path:
    """Write an entry (with ``checkpoints``, ``{step: state dict}``, for every step of
    ``cfg.checkpoints``); returns the path of its JSON record."""
    if set(checkpoints or {}) != set(cfg.checkpoints):
        raise ValueError(f"checkpoints must hold exactly the steps {cfg.checkpoints} of the config, "
                         f"got {sorted(checkpoints or {})}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stem = root / key(cfg)
    torch.save(train.cpu_state(model), f"{stem}.pt")
    if cfg.checkpoints:
        torch.save({int(s): checkpoints[s] for s in cfg.checkpoints}, f"{stem}.checkpoints.pt")
    history.to_csv(f"{stem}.csv", index=False, float_format="%.6g")
    meta = {**_record(cfg), "provenance": {**info, "commit": git_commit(),
                                           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}}
    Path(f"{stem}.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    return Path(f"{stem}.json")


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


def load_checkpoints(cfg: TrainConfig, root: Path = STORE) -> dict[int, Transformer] | None:
    """The stored models ``{step: model}`` at every step of ``cfg.checkpoints``, or ``None`` if no entry.

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
    return {step: _model(cfg, states[step]) for step in cfg.checkpoints}


def load_or_train(cfg: TrainConfig, root: Path = STORE, progress: bool = True):
    """The stored run for ``cfg`` if present, else train it with `lib.train.train` and save it.

    Returns
    -------
    model : Transformer (eval mode, CPU)
    history : pandas.DataFrame
    provenance : dict
    """
    entry = load(cfg, root)
    if entry is not None:
        return entry
    save(cfg, *train.train(cfg, progress=progress), root=root)
    return load(cfg, root)          # read back, so a fresh and a stored run give identical tables

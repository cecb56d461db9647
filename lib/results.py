"""Costly results stored in ``data/`` as JSON records, written run by run and read only when current.

A record holds the configuration it was made with, the code (`lib.provenance.code_state`) and
software (`lib.provenance.environment`) that made it, and one entry per finished run under
``runs``. A script adds runs one at a time (`add_run`), so an interrupted sweep resumes where it
stopped (`open_record` returns the runs already done); a chapter reads the record with `load`,
which refuses a record made with another configuration, from uncommitted code, or missing runs.
Introduced in chapter 7 (`scripts/topic_runs.py` writes ``data/topics/``).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from lib import provenance
from lib.resume import atomic_write


def _path(folder, name: str) -> Path:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be a plain identifier (the file stem), got {name!r}")
    return Path(folder) / f"{name}.json"


def _plain(config: dict) -> dict:
    """``config`` as JSON would return it (tuples become lists), for comparisons."""
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict, got {type(config).__name__}")
    return json.loads(json.dumps(config))


def open_record(folder, name: str, config: dict, fresh: bool = False,
                allow_dirty: bool = False) -> dict:
    """The record to add runs to: the stored one if it matches, else a new empty one.

    Parameters
    ----------
    folder : path
    name : str
        File stem: the record is ``folder/name.json``.
    config : dict
        Every setting the runs depend on.
    fresh : bool
        Start a new record even if a stored one exists (its runs are dropped when saved).
    allow_dirty : bool
        Accept uncommitted code; `load` will refuse the result.

    Raises
    ------
    ValueError
        If the code has uncommitted changes (unless ``allow_dirty``), or a stored record was
        made with another configuration or another commit (unless ``fresh``).
    """
    code = provenance.code_state()
    if code["dirty"] and not allow_dirty:
        raise ValueError("the checkout has uncommitted changes: commit them and run from a clean "
                         "worktree, so the record names the code that made it")
    path, config = _path(folder, name), _plain(config)
    if path.exists() and not fresh:
        record = json.loads(path.read_text())
        if record["config"] != config or record["code"]["commit"] != code["commit"]:
            raise ValueError(f"{path} was made with another configuration or commit; pass "
                             "fresh=True (--fresh) to start it again")
        return record
    return {"config": config, "code": code, "environment": provenance.environment(),
            "runs": {}}


def add_run(folder, name: str, record: dict, key: str, result: dict) -> None:
    """Store ``result`` as run ``key`` of ``record`` and rewrite ``folder/name.json`` atomically."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"key must be a non-empty string, got {key!r}")
    record["runs"][key] = _plain(result)
    save(folder, name, record)


def save(folder, name: str, record: dict) -> None:
    """Write ``record`` (e.g. after adding summary fields) to ``folder/name.json`` atomically."""
    record["date"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    path = _path(folder, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record, indent=1) + "\n"))


def load(folder, name: str, config: dict, keys, command: str) -> dict:
    """The stored record of ``name`` if it is current: same ``config``, clean code, all ``keys``.

    Parameters
    ----------
    folder : path
    name : str
    config : dict
    keys : iterable of str
        Runs the reader needs.
    command : str
        The command that regenerates the record, named in every error.

    Raises
    ------
    FileNotFoundError
        If there is no record.
    ValueError
        If the record is not current.
    """
    path = _path(folder, name)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; regenerate it with: {command}")
    record = json.loads(path.read_text())
    stored, wanted = record["config"], _plain(config)
    if stored != wanted:
        changed = sorted(k for k in stored.keys() | wanted.keys()
                         if k not in stored or k not in wanted or stored[k] != wanted[k])
        raise ValueError(f"{path} was made with another configuration (fields {changed}); "
                         f"regenerate it with: {command}")
    if record["code"]["dirty"] or record["code"]["commit"] == "unknown":
        raise ValueError(f"{path} comes from uncommitted code; regenerate it with: {command}")
    missing = sorted(set(keys) - set(record["runs"]))
    if missing:
        raise ValueError(f"{path} lacks runs {missing[:5]} ({len(missing)} in all); finish it "
                         f"with: {command}")
    return record

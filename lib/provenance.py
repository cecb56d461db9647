"""Which profile, code and software produced a page: read by every chapter's last cell."""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PROFILES = ("laptop", "paper")
_PACKAGES = ("numpy", "scipy", "pandas", "matplotlib", "seaborn", "torch", "gensim", "jupyter-book")


def profile() -> str:
    """The run profile named by the ``BOOK_PROFILE`` environment variable (default ``laptop``)."""
    name = os.environ.get("BOOK_PROFILE", "laptop")
    if name not in PROFILES:
        raise ValueError(f"BOOK_PROFILE must be one of {PROFILES}, got {name!r}")
    return name


def _git(*args: str) -> str:
    """Output of a git command in the repository the library was imported from."""
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                          check=True).stdout.strip()


def code_state() -> dict:
    """The code a result comes from: ``commit`` (full SHA of HEAD, or ``"unknown"`` outside git),
    ``dirty`` (tracked files differ from it, or ``lib/`` holds untracked files), ``diff_sha256``
    (of ``git diff HEAD`` and the untracked names, ``None`` when clean) and ``lib_sha256`` (of
    every ``lib/*.py`` file, names and contents)."""
    lib = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(lib.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    try:
        commit, diff = _git("rev-parse", "HEAD"), _git("diff", "HEAD")
        untracked = _git("ls-files", "--others", "--exclude-standard", "--", "lib")
    except (OSError, subprocess.CalledProcessError):
        commit, diff, untracked = "unknown", "", ""
    diff += "".join(f"\nuntracked {name}" for name in untracked.split())
    return {"commit": commit, "dirty": bool(diff),
            "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff else None,
            "lib_sha256": digest.hexdigest()}


#: The library files whose content decides what a training run computes (`lib.train` and what
#: it calls; the run's own settings are its `lib.config.TrainConfig`).
TRAINING_CODE = ("lib/train.py", "lib/transformer.py", "lib/run_data.py", "lib/tree.py",
                 "lib/bp.py", "lib/schedule.py", "lib/resume.py")


def changed_since(commit: str, paths) -> list[str] | None:
    """Which of ``paths`` (relative to the repository root) differ between ``commit`` and the
    working tree; ``None`` when git or the commit is not available (e.g. outside a clone)."""
    try:
        return _git("diff", "--name-only", commit, "--", *paths).split()
    except (OSError, subprocess.CalledProcessError):
        return None


def git_commit() -> str:
    """Commit of the checkout the library was imported from, with ``+dirty`` for local edits."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def environment() -> dict:
    """Profile, commit, machine and package versions as a flat dictionary."""
    env = {"profile": profile(), "commit": git_commit(), "python": platform.python_version(),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    for name in _PACKAGES:
        try:
            env[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            env[name] = "not installed"
    return env

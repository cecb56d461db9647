"""Binder's environment files: what can be checked without reaching Binder itself.

repo2docker reads ``binder/`` (which makes it ignore the root files): ``runtime.txt`` for Python,
``requirements.txt`` for pip (the root pins plus PyTorch's CPU wheel index) and ``postBuild``.
The pins must resolve together: pip's resolver is run in a dry run against the package index.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"


def pins(path: Path) -> dict[str, str]:
    """``name -> version`` for every ``name==version`` line of a requirements file."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s#]+)", line.strip())
        if match:
            found[match.group(1).lower().replace("_", "-")] = match.group(2)
    return found


def test_binder_files_point_at_the_pinned_environment():
    assert (BINDER / "runtime.txt").read_text().strip() == f"python-{sys.version_info.major}.{sys.version_info.minor}"
    lines = [l.strip() for l in (BINDER / "requirements.txt").read_text().splitlines()]
    assert "-r ../requirements.txt" in lines
    assert any(l.startswith("--extra-index-url") and "/whl/cpu" in l for l in lines), "CPU torch index missing"
    post = (BINDER / "postBuild").read_text()
    assert "jupytext-config set-default-viewer" in post and (BINDER / "postBuild").stat().st_mode & 0o111


@pytest.mark.slow
def test_pinned_requirements_resolve_together(tmp_path):
    wanted = pins(ROOT / "requirements.txt")
    reqs = tmp_path / "requirements.txt"                     # the pins alone (no editable install)
    reqs.write_text("\n".join(f"{name}=={version}" for name, version in wanted.items()) + "\n")
    report = tmp_path / "report.json"
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                          "--report", str(report), "-r", str(reqs)], capture_output=True, text=True, timeout=600)
    if run.returncode != 0 and re.search(r"connection|network|resolve host|Max retries", run.stderr, re.I):
        pytest.skip(f"package index unreachable: {run.stderr.strip().splitlines()[-1]}")
    assert run.returncode == 0, run.stderr
    resolved = {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
                for item in json.loads(report.read_text())["install"]}
    for name, version in wanted.items():
        assert resolved[name].split("+")[0] == version, f"{name}: pinned {version}, resolved {resolved[name]}"

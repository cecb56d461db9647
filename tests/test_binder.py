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
import yaml

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


def binder_links(html: Path) -> list[str]:
    """Every link of a built page that points at a BinderHub launch (``/v2/<provider>/...``)."""
    return re.findall(r'href="(https?://[^"]+/v2/(?:gh|gl|git)/[^"]+)"', html.read_text(encoding="utf-8"))


def expected_link(config: dict, page: str) -> str:
    """The launch link sphinx-book-theme builds for a MyST notebook ``page`` of a GitHub repository."""
    repo, launch = config["repository"], config["launch_buttons"]
    org_repo = repo["url"].removeprefix("https://github.com/").strip("/")
    prefix = {"jupyterlab": "lab/tree", "classic": "tree"}[launch.get("notebook_interface", "classic")]
    book = repo.get("path_to_book", "").strip("/")
    return (f"{launch['binderhub_url'].rstrip('/')}/v2/gh/{org_repo}/{repo.get('branch', 'main')}"
            f"?urlpath={prefix}/{book + '/' if book else ''}{page}.md")


def test_launch_buttons_point_where_config_says():
    """With Binder configured, every chapter opens there at its own file; unconfigured, no page links there."""
    site = ROOT / "_build" / "html"
    if not (site / "index.html").exists():
        pytest.skip("site not built: run `make book` first")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    on = bool(config["launch_buttons"]["binderhub_url"])
    assert on == bool(config["repository"]["url"]), "set repository.url and binderhub_url together"
    chapters = sorted(p.relative_to(ROOT).with_suffix("").as_posix() for p in (ROOT / "chapters").glob("*.md"))
    for page in chapters:
        links = binder_links(site / f"{page}.html")
        if on:
            assert links == [expected_link(config, page)], page
        else:
            assert links == [], f"{page} links to Binder without a repository.url: {links}"


def test_launch_button_of_a_configured_repository(tmp_path):
    """A one-page book with this book's settings plus a repository and mybinder.org gets the right button."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config = {"title": "launch-button check", "execute": {"execute_notebooks": "off"},
              "repository": {**config["repository"], "url": "https://github.com/example-org/example-book"},
              "launch_buttons": {**config["launch_buttons"], "binderhub_url": "https://mybinder.org"},
              "html": config["html"]}
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n- file: chapters/demo\n")
    (tmp_path / "intro.md").write_text("# Intro\n")
    (tmp_path / "chapters").mkdir()
    header = (ROOT / "chapters" / "01_generative_model.md").read_text().split("---")[1]   # a real chapter's
    (tmp_path / "chapters" / "demo.md").write_text(f"---{header}---\n# Demo\n\n```{{code-cell}} ipython3\n1 + 1\n```\n")
    jb = Path(sys.executable).with_name("jupyter-book")
    run = subprocess.run([str(jb), "build", str(tmp_path), "-W", "-q"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    links = binder_links(tmp_path / "_build" / "html" / "chapters" / "demo.html")
    assert links == [expected_link(config, "chapters/demo")]
    assert links[0] == "https://mybinder.org/v2/gh/example-org/example-book/main?urlpath=lab/tree/chapters/demo.md"

"""The built site as a reader meets it, checked in a real (headless) Chromium.

Runs against ``_build/html`` (build it first with ``make book``; ``.ci/run`` does). For every page of
the table of contents: no console or page errors, no request leaving the machine, every figure
loaded and non-empty, all math typeset by the vendored MathJax (no raw TeX left), and every internal
link and anchor resolving to a file and an element that exist. A full-page screenshot of every
page, taken offline after MathJax has finished, is left in ``_build/screenshots`` for inspection.
"""
from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def toc_pages() -> list[str]:
    """Document names in ``_toc.yml`` order, e.g. ``['intro', 'chapters/01_generative_model', ...]``."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        pages += [entry["file"] for entry in part["chapters"]]
    return pages


pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed: `apt-get install chromium` "
                                                 "(CI installs it); the site test needs a real browser"),
    pytest.mark.skipif(not (SITE / "index.html").exists(), reason="site not built: run `make book` first"),
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        yield browser
        browser.close()


def load(browser, page_name: str):
    """Open a page offline; return (page, console errors, requests that left the machine)."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors, external = [], []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.route(re.compile(r"^https?://"), lambda route: (external.append(route.request.url), route.abort()))
    page.goto((SITE / f"{page_name}.html").as_uri(), wait_until="load")
    if page.locator("script[src*='mathjax']").count() == 0:          # Sphinx adds MathJax only where needed
        return page, errors, external
    try:
        page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=20_000)
    except Exception:
        pytest.fail(f"MathJax did not load on {page_name} (blocked external requests: {external})")
    page.evaluate("() => MathJax.startup.promise")
    return page, errors, external


@pytest.mark.parametrize("page_name", toc_pages())
def test_page_loads_offline_with_figures_and_typeset_math(browser, page_name):
    page, errors, external = load(browser, page_name)
    assert not errors, f"console errors on {page_name}: {errors}"
    assert not external, f"{page_name} requested resources off the machine: {external}"
    images = page.evaluate("""() => [...document.querySelectorAll('article img')].map(
        img => ({src: img.getAttribute('src'), ok: img.complete && img.naturalWidth > 0}))""")
    broken = [img["src"] for img in images if not img["ok"]]
    assert not broken, f"figures that did not load on {page_name}: {broken}"
    text = page.evaluate("() => document.querySelector('article').innerText")
    raw = re.findall(r"\\\(|\\\[|\$\$|\\begin\{", text)
    assert not raw, f"untypeset TeX on {page_name}: {raw[:5]}"
    source = (ROOT / f"{page_name}.md").read_text()
    if re.search(r"\$[^$\n]+\$", source):
        assert page.locator("mjx-container").count() > 0, f"{page_name} has math but none was typeset"
    shot = SCREENSHOTS / f"{page_name}.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=shot, full_page=True)
    assert shot.stat().st_size > 10_000, f"screenshot of {page_name} is (nearly) empty"
    page.close()


class _Links(HTMLParser):
    """Collects hrefs of <a> elements and every id in a document."""

    def __init__(self):
        super().__init__()
        self.hrefs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.hrefs.append(attrs["href"])


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


@pytest.mark.parametrize("page_name", toc_pages())
def test_internal_links_and_anchors_resolve(page_name):
    page = SITE / f"{page_name}.html"
    missing = []
    for href in _parse(page).hrefs:
        url = urlparse(href)
        if url.scheme or href.startswith("mailto:"):
            continue
        target = (page.parent / unquote(url.path)).resolve() if url.path else page
        if not target.exists():
            missing.append(href)
        elif url.fragment and target.suffix == ".html" and unquote(url.fragment) not in _parse(target).ids:
            missing.append(href)
    assert not missing, f"broken internal links on {page_name}: {missing}"


def test_download_buttons_point_to_existing_sources():
    for page_name in toc_pages()[1:]:
        hrefs = _parse(SITE / f"{page_name}.html").hrefs
        downloads = [h for h in hrefs if "_sources/" in h]
        assert downloads, f"{page_name} has no download button"
        for href in downloads:
            assert (SITE / page_name).parent.joinpath(href).resolve().exists(), href

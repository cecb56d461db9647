"""Chapter sources read well on the page: no code-cell line wider than the rendered column.

A code cell is shown in a column about 88 characters wide; a longer line scrolls sideways and
the reader loses the thread (STYLE.md, "Lessons from the rendered book").
"""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.md"))
#: every executed page, the landing page included, and the drafts waiting in chapters/pending
PAGES = CHAPTERS + [ROOT / "intro.md"] + sorted((ROOT / "chapters" / "pending").glob("0*.md"))
MAX_WIDTH = 88
FENCE = "```{code-cell}"


def code_cell_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line inside a ```{code-cell} fence of a MyST chapter."""
    lines, inside = [], False
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not inside and line.startswith(FENCE):
            inside = True
        elif inside and line.rstrip() == "```":
            inside = False
        elif inside:
            lines.append((number, line))
    if inside:
        raise AssertionError(f"{path.name}: a code cell is never closed")
    return lines


def test_chapters_found():
    assert len(CHAPTERS) >= 7


@pytest.mark.parametrize("path", PAGES, ids=[p.stem for p in PAGES])
def test_code_cell_lines_fit_the_column(path):
    wide = [f"{path.name}:{n}: {len(line)} characters" for n, line in code_cell_lines(path)
            if len(line) > MAX_WIDTH]
    assert not wide, f"code-cell lines longer than {MAX_WIDTH} characters:\n" + "\n".join(wide)


def test_fence_parser_on_a_small_chapter(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text " * 40 + "\n```{code-cell} ipython3\n:tags: [remove-cell]\nx = 1\n```\n"
                    "```python\n" + "y" * 100 + "\n```\n")
    assert code_cell_lines(page) == [(3, ":tags: [remove-cell]"), (4, "x = 1")]

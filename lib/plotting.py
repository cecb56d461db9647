"""One figure style for the whole book: a seaborn theme and one colour per filtering level ``k``.

Every plotting helper takes ``ax=None`` and returns the axes it drew on.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

K_PALETTE = "viridis"          # filtering levels k = 0..depth, dark (full model) to light


def set_theme() -> None:
    """Apply the book's matplotlib/seaborn theme (called in every chapter's setup cell)."""
    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.95)
    plt.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight", "axes.titleweight": "bold",
                         "image.cmap": "viridis"})


def k_colors(depth: int) -> list:
    """One colour per filtering level ``k = 0..depth``; the same ``k`` has the same colour everywhere."""
    return sns.color_palette(K_PALETTE, n_colors=depth + 1)


def heatmap(values: np.ndarray, ax=None, *, xlabel: str = "", ylabel: str = "", title: str = "",
            cbar_label: str = "", annot: bool = False, fmt: str = ".3f", **kwargs):
    """Square heatmap with labelled axes and colour bar; returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4))
    sns.heatmap(values, ax=ax, square=True, annot=annot, fmt=fmt,
                cbar_kws={"label": cbar_label, "shrink": 0.8}, **kwargs)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    return ax

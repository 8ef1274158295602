"""The figures of RESULTS.md: rate-distortion curves and same-rate crops, as PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on benchmark machines

import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from .curves import Curve  # noqa: E402

MAX_BPP = 2.0
"""Right edge of the RD plots: the range where learned codecs compete; the tables have the rest."""


def plot_rd(curves: list[Curve], metric: str, ylabel: str, path: Path, title: str) -> None:
    """All codecs' ``metric`` (a Curve attribute) against bpp on one figure; learned codecs
    (the subject of the benchmark) drawn heavier than the classical references."""
    fig, ax = plt.subplots(figsize=(8, 6), dpi=110)
    for c in curves:
        learned = c.codec.startswith("aecodec")
        ax.plot(c.bpp, getattr(c, metric), marker="o", markersize=4 if learned else 3,
                linewidth=2.2 if learned else 1.2, label=c.codec)
    ax.set_xlim(0, MAX_BPP)
    visible = [v for c in curves for b, v in zip(c.bpp, getattr(c, metric), strict=True) if b <= MAX_BPP]
    if visible:
        ax.set_ylim(min(visible) - 0.5, max(visible) + 0.5)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_crops(panels: list[tuple[str, Image.Image]], path: Path, title: str) -> None:
    """Crops side by side, each titled, enlarged without smoothing so that each codec's
    artifacts look as they are."""
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.8 * rows), dpi=110, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, crop) in zip(axes.flat, panels, strict=False):  # spare axes stay blank
        ax.imshow(crop, interpolation="nearest")
        ax.set_title(label, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

"""Plots and image grids as PNG bytes (matplotlib's Agg canvas, no pyplot state, no display, no network)."""

from __future__ import annotations

import io

import numpy as np
import torch

__all__ = ["plot_png", "grid_png"]


def plot_png(spec: dict, title: str = "") -> bytes:
    """A plot dict from a section ({"kind": "roc" | "hist" | "bars" | "grouped_bars", ...}) -> PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    kind = spec["kind"]
    if kind == "roc":
        for name, pts in spec["series"].items():
            ax.plot(pts["fpr"], pts["tpr"], label=name)
        diag = np.concatenate([[0.0], np.logspace(-4, 0, 200)])
        ax.plot(diag, diag, "k:", lw=0.8, label="chance")
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_xlim(0, 1)
        ax.set_xlabel("false positive rate (symlog)")
        ax.set_ylabel("true positive rate")
    elif kind == "hist":
        values = [np.asarray(v, dtype=float) for v in spec["series"].values() if len(v)]
        if values:
            hi = max(float(np.quantile(v, 0.99)) for v in values)
            lo = min(float(v.min()) for v in values)
            bins = np.linspace(lo, hi if hi > lo else lo + 1, 40)
            for name, v in spec["series"].items():
                if len(v):
                    w = np.full(len(v), 1 / len(v))
                    ax.hist(np.clip(v, lo, bins[-1]), bins=bins, weights=w, alpha=0.55, label=name)
        if spec.get("threshold") is not None:
            ax.axvline(spec["threshold"], color="k", ls="--", lw=1, label="threshold")
    elif kind == "bars":
        ax.bar(range(len(spec["values"])), spec["values"], color="#4c72b0")
        ax.set_xticks(range(len(spec["labels"])), [str(x)[:18] for x in spec["labels"]], rotation=30 if len(spec["labels"]) > 6 else 0)
    elif kind == "grouped_bars":
        labels, series = spec["labels"], spec["series"]
        width = 0.8 / max(len(series), 1)
        for j, (name, vals) in enumerate(series.items()):
            ax.bar(np.arange(len(labels)) + j * width, vals, width, label=name)
        ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, [str(x)[:18] for x in labels])
        if spec.get("ylim"):
            ax.set_ylim(*spec["ylim"])
    ax.set_xlabel(spec.get("xlabel", ax.get_xlabel()))
    ax.set_ylabel(spec.get("ylabel", ax.get_ylabel()))
    if title:
        ax.set_title(title, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def grid_png(images: torch.Tensor, nrow: int, scale: int = 3) -> bytes:
    """(N, C, H, W) in [0, 1] -> a PNG grid, upscaled ``scale`` times (nearest) so small images stay visible."""
    from PIL import Image
    from torchvision.utils import make_grid

    if len(images) == 0:
        images = torch.zeros(1, 1, 8, 8)
    grid = make_grid(images.float().clamp(0, 1), nrow=nrow, padding=1, pad_value=1.0)
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    img = Image.fromarray(arr[..., 0] if images.shape[1] == 1 else arr, "L" if images.shape[1] == 1 else "RGB")
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()

"""perplexity.png: training and validation perplexity against epoch.

The picture d2l's Animator draws during train_ch8, written to a file instead of
a notebook (matplotlib's Agg backend: no display needed), and rewritten
atomically after every epoch so it can be watched while a run trains.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Dict, List


def perplexity_png(history: List[Dict[str, Any]], title: str = "") -> bytes:
    """A PNG of train_ppl and val_ppl against epoch, from metrics records."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # a bare Figure: no global pyplot state to leak

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(5, 3.5), dpi=100)
    ax = fig.add_subplot()
    ax.plot(epochs, [r["train_ppl"] for r in history], "-", label="train")
    ax.plot(epochs, [r["val_ppl"] for r in history], "--", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    if epochs:
        ax.set_xlim(1, max(max(epochs), 2))
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_perplexity_plot(path: Path, history: List[Dict[str, Any]], title: str = "") -> None:
    from .files import atomic_write
    atomic_write(Path(path), perplexity_png(history, title))

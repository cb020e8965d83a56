"""perplexity.png: training and validation perplexity against epoch.

The picture d2l's Animator draws during train_ch8, written to a file instead of
a notebook and rewritten atomically after every epoch, so it can be watched
while a run trains. The figure is drawn on its own Agg canvas, as in
:mod:`rnnlab.d2l_plot`: no display is needed, and neither pyplot's state nor the
user's matplotlib backend is touched.
"""

from __future__ import annotations

import io
from typing import Any


def perplexity_png(history: list[dict[str, Any]], title: str = "") -> bytes:
    """A PNG of train_ppl and val_ppl against epoch, from metrics records."""
    # Imported when a plot is drawn, not with this module: matplotlib takes a while to
    # import, and commands that only read a run directory draw nothing.
    import numpy
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A diverging run's perplexities (up to exp(700), train.perplexity's cap) make the
    # tick arithmetic overflow: harmless for the picture, so numpy is not to warn of it.
    with numpy.errstate(all="ignore"):
        epochs = [r["epoch"] for r in history]
        fig = Figure(figsize=(5, 3.5), dpi=100)
        FigureCanvasAgg(fig)
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

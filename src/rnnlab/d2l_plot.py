"""Plots for :mod:`rnnlab.d2l`: the book's ``plot`` and ``Animator``, in a notebook or in PNGs.

In a Jupyter notebook (code running in an IPython kernel) the figures appear in the
cell's output, as the book's do: ``plot`` shows its figure once, and an ``Animator``
shows its figure at its first ``add`` and replaces that picture in place at every
later one (an IPython display handle), so a training cell ends with one up-to-date
curve and keeps whatever else it printed. Nothing is written to disk there.

A script has no notebook, so every figure made there is saved as a PNG instead,
numbered in the order the figures are made:

    $RNNLAB_D2L_PLOTS/d2l-figure-1.png, d2l-figure-2.png, ...

``RNNLAB_D2L_PLOTS`` names the folder (created if missing); without it the
figures go to the current directory. The numbering restarts with each Python
process, so running a script again overwrites its own figures. An ``Animator``
rewrites its file after every ``add``, so the PNG follows a training run as
the notebook's live plot does; its ``path`` attribute says where it is.

Figures are built with matplotlib's object API on their own Agg canvas, not
through ``pyplot`` (as :mod:`rnnlab.plot` does): nothing here needs a display,
changes the user's pyplot state or switches the user's matplotlib backend. In a
notebook they are shown as PNG images, whatever inline backend the kernel has.

Guide: docs/d2l.md ("Where the plots go")
"""

from __future__ import annotations

import io
import itertools
import os
import sys
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from . import files

PLOTS_ENV = "RNNLAB_D2L_PLOTS"
FMTS = ("-", "m--", "g-.", "r:")

_figure_numbers = itertools.count(1)
_figsize = [3.5, 2.5]  # inches; what set_figsize changes, as the book's rcParams does


def next_figure_path() -> Path:
    """The file the next figure is saved to: $RNNLAB_D2L_PLOTS (or .) / d2l-figure-N.png."""
    folder = Path(os.environ.get(PLOTS_ENV) or ".")
    return folder / f"d2l-figure-{next(_figure_numbers)}.png"


def notebook_display() -> Any:
    """IPython's ``display`` module when this code runs in a Jupyter kernel, else None.

    A kernel has imported IPython before it runs any cell, so when IPython is not
    imported there is no notebook, and IPython is not imported here to find that out
    (nor needed at all). A terminal IPython has a shell but no kernel: no notebook.
    """
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    shell = ipython.get_ipython()
    if getattr(shell, "kernel", None) is None:
        return None
    from IPython import display

    return display


def save_figure(fig: Figure, path: Path) -> None:
    """Write ``fig`` to ``path`` as PNG, whole or not at all; only a regular file is replaced
    (anything else raises files.NotRegularFile, an OSError)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    path.parent.mkdir(parents=True, exist_ok=True)
    files.atomic_write(path, buffer.getvalue(), follow_links=True)


def figure_image(fig: Figure, display: Any) -> Any:
    """The figure as an IPython PNG image (what a notebook cell shows), drawn as save_figure's."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return display.Image(data=buffer.getvalue(), format="png")


def show(fig: Figure) -> None:
    """Show a finished figure: in the notebook's cell output, else in the next numbered PNG."""
    display = notebook_display()
    if display is not None:
        display.display(figure_image(fig, display))
    else:
        save_figure(fig, next_figure_path())


def new_figure(figsize=None, nrows: int = 1, ncols: int = 1):
    """A Figure on an Agg canvas and its axes (a single Axes when nrows*ncols == 1)."""
    width, height = figsize if figsize is not None else _figsize
    fig = Figure(figsize=(float(width), float(height)))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols)


def use_svg_display() -> None:
    """Kept for the book's code; figures are shown, or saved, as PNG images."""


def set_figsize(figsize=(3.5, 2.5)) -> None:
    """Default size in inches of the figures that ``plot`` makes."""
    _figsize[:] = list(figsize)


def set_axes(axes, xlabel, ylabel, xlim, ylim, xscale, yscale, legend) -> None:
    """Label, scale and limit a matplotlib Axes, add a legend if given, and draw a grid."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_xscale(xscale)
    axes.set_yscale(yscale)
    axes.set_xlim(xlim)
    axes.set_ylim(ylim)
    if legend:
        axes.legend(legend)
    axes.grid()


def _is_one_curve(X) -> bool:
    # A 1-D array, or a flat list of numbers, is one curve; a list of lists is several.
    if hasattr(X, "ndim"):
        return X.ndim == 1
    return isinstance(X, list) and not hasattr(X[0], "__len__")


def plot(
    X,
    Y=None,
    xlabel=None,
    ylabel=None,
    legend=None,
    xlim=None,
    ylim=None,
    xscale="linear",
    yscale="linear",
    fmts=FMTS,
    figsize=(3.5, 2.5),
    axes=None,
):
    """Plot one or several curves, as the book's ``d2l.plot``.

    ``plot(Y)`` draws Y against its index; ``plot(X, Y)`` draws Y against X;
    lists of curves draw several, one format of ``fmts`` each. Without ``axes``
    a new figure is made and shown in the notebook, or saved as a PNG in a script
    (see the module docstring); with ``axes`` it draws there and shows nothing.
    Returns None, as the book's does.
    """
    if legend is None:
        legend = []
    set_figsize(figsize)
    own_figure = axes is None
    if own_figure:
        fig, axes = new_figure(figsize)
    if _is_one_curve(X):
        X = [X]
    if Y is None:
        X, Y = [[]] * len(X), X
    elif _is_one_curve(Y):
        Y = [Y]
    if len(X) != len(Y):
        X = X * len(Y)
    axes.cla()
    for x, y, fmt in zip(X, Y, fmts):
        if len(x):
            axes.plot(x, y, fmt)
        else:
            axes.plot(y, fmt)
    set_axes(axes, xlabel, ylabel, xlim, ylim, xscale, yscale, legend)
    if own_figure:
        show(fig)


class Animator:
    """Curves that grow point by point (the book's ``Animator``), live in a notebook or a PNG.

    ``add(x, y)`` appends a point to each curve (y may be a list, one value per
    curve; None skips a curve) and redraws the figure: in a notebook it replaces
    the picture this Animator showed in the cell's output (the first ``add``
    shows it); in a script it rewrites the PNG at ``self.path``. ``path`` (not in
    the book) picks the file, and in a notebook also saves the figure there; by
    default a script's is the next numbered figure and a notebook's is None.
    """

    def __init__(
        self,
        xlabel=None,
        ylabel=None,
        legend=None,
        xlim=None,
        ylim=None,
        xscale="linear",
        yscale="linear",
        fmts=FMTS,
        nrows=1,
        ncols=1,
        figsize=(3.5, 2.5),
        path: os.PathLike | None = None,
    ):
        if legend is None:
            legend = []
        self.fig, axes = new_figure(figsize, nrows, ncols)
        self.axes = [axes] if nrows * ncols == 1 else axes
        self._axes_settings = (xlabel, ylabel, xlim, ylim, xscale, yscale, legend)
        self.X: list[list] = []  # one list of x values per line, made at the first add
        self.Y: list[list] = []
        self.fmts = fmts
        self._display = notebook_display()
        self._shown: Any = None  # the display handle of the picture in the cell's output
        if path is not None:
            self.path: Path | None = Path(path)
        else:
            self.path = None if self._display is not None else next_figure_path()

    def config_axes(self) -> None:
        set_axes(self.axes[0], *self._axes_settings)

    def add(self, x, y) -> None:
        if not hasattr(y, "__len__"):
            y = [y]
        n = len(y)
        if not hasattr(x, "__len__"):
            x = [x] * n
        if not self.X:
            self.X = [[] for _ in range(n)]
        if not self.Y:
            self.Y = [[] for _ in range(n)]
        for i, (a, b) in enumerate(zip(x, y)):
            if a is not None and b is not None:
                self.X[i].append(a)
                self.Y[i].append(b)
        self.axes[0].cla()
        for xs, ys, fmt in zip(self.X, self.Y, self.fmts):
            self.axes[0].plot(xs, ys, fmt)
        self.config_axes()
        if self.path is not None:
            save_figure(self.fig, self.path)
        if self._display is not None:
            image = figure_image(self.fig, self._display)
            if self._shown is None:
                self._shown = self._display.display(image, display_id=True)
            else:
                self._shown.update(image)

"""Plots for :mod:`rnnlab.d2l`: the book's ``plot`` and ``Animator``, written to PNG files.

The book draws into a notebook. A script has no notebook, so every figure made
here is saved as a PNG instead, numbered in the order the figures are made:

    $RNNLAB_D2L_PLOTS/d2l-figure-1.png, d2l-figure-2.png, ...

``RNNLAB_D2L_PLOTS`` names the folder (created if missing); without it the
figures go to the current directory. The numbering restarts with each Python
process, so running a script again overwrites its own figures. An ``Animator``
rewrites its file after every ``add``, so the PNG follows a training run as
the notebook's live plot does; its ``path`` attribute says where it is.

Figures are built with matplotlib's object API on their own Agg canvas, not
through ``pyplot`` (as :mod:`rnnlab.plot` does): nothing here needs a display,
changes the user's pyplot state or switches the user's matplotlib backend.

Guide: docs/d2l.md ("Where the plots go")
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PLOTS_ENV = "RNNLAB_D2L_PLOTS"
FMTS = ("-", "m--", "g-.", "r:")

_figure_numbers = itertools.count(1)
_figsize = [3.5, 2.5]  # inches; what set_figsize changes, as the book's rcParams does


def next_figure_path() -> Path:
    """The file the next figure is saved to: $RNNLAB_D2L_PLOTS (or .) / d2l-figure-N.png."""
    folder = Path(os.environ.get(PLOTS_ENV) or ".")
    return folder / f"d2l-figure-{next(_figure_numbers)}.png"


def save_figure(fig: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")


def new_figure(figsize=None, nrows: int = 1, ncols: int = 1):
    """A Figure on an Agg canvas and its axes (a single Axes when nrows*ncols == 1)."""
    width, height = figsize if figsize is not None else _figsize
    fig = Figure(figsize=(float(width), float(height)))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols)


def use_svg_display() -> None:
    """Kept for the book's code; PNG files need no display format."""


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
    a new figure is made and saved as a PNG (see the module docstring); with
    ``axes`` it draws there and saves nothing. Returns None, as the book's does.
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
        save_figure(fig, next_figure_path())


class Animator:
    """Curves that grow point by point (the book's ``Animator``), kept in a PNG file.

    ``add(x, y)`` appends a point to each curve (y may be a list, one value per
    curve; None skips a curve) and rewrites the PNG at ``self.path``. ``path``
    (not in the book) picks the file; by default it is the next numbered figure.
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
        self.path = Path(path) if path is not None else next_figure_path()

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
        save_figure(self.fig, self.path)

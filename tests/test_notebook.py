"""rnnlab.d2l in a Jupyter notebook: its figures appear in the cells' outputs, live.

The chapter-8 notes (tests/d2l_notes/) are cut into cells where they leave a blank
line between statements, as the book's notebooks are, and run in a real IPython
kernel by nbclient. The only cell added is the first, which cuts train_ch8 to
20 epochs (two points of its plot: one picture shown, then replaced), as
tests/test_d2l.py does by wrapping it.
"""

import ast
import base64
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import DATA_DIR
from rnnlab import d2l, d2l_plot

# Minutes of training, subprocesses and servers: the full suite (CI) runs it, the fast tier not.
pytestmark = pytest.mark.slow

NOTES = Path(__file__).parent / "d2l_notes"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EPOCHS = 20  # train_ch8 plots every 10 epochs: two points, so one update of the picture

SHORT_TRAINING = textwrap.dedent(f"""
    import random
    import torch
    from rnnlab import d2l

    book_train_ch8 = d2l.train_ch8

    def short_train_ch8(net, train_iter, vocab, lr, num_epochs, device, use_random_iter=False):
        book_train_ch8(net, train_iter, vocab, lr, {EPOCHS}, device, use_random_iter)

    d2l.train_ch8 = short_train_ch8
    random.seed(0)
    _ = torch.manual_seed(0)
""")


def note_cells(name: str) -> list[str]:
    """The code of tests/d2l_notes/NAME.py as notebook cells: a new cell after each blank
    line between top-level statements, but for the imports at its top, which make one
    (the module docstring left out)."""
    source = (NOTES / f"{name}.py").read_text()
    lines = source.splitlines()
    body = ast.parse(source).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    cells: list[list[str]] = []
    last = None
    for stmt in body:
        start = stmt.lineno - 1  # (the notes decorate nothing)
        blank = last is not None and any(
            not lines[i].strip() for i in range(last.end_lineno, start)
        )
        imports = (ast.Import, ast.ImportFrom)
        if last is None or (
            blank and not (isinstance(last, imports) and isinstance(stmt, imports))
        ):
            cells.append([])
        cells[-1].extend(lines[start : stmt.end_lineno])
        last = stmt
    return ["\n".join(cell) for cell in cells]


class RecordingClient(NotebookClient):
    """nbclient's client, keeping every IOPub message type the kernel sent for each cell."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.messages: dict[int, list[dict]] = {}

    def process_message(self, msg, cell, cell_index):
        self.messages.setdefault(cell_index, []).append(msg)
        return super().process_message(msg, cell, cell_index)


def images(outputs) -> list[bytes]:
    """The PNG images among a cell's outputs, decoded."""
    return [
        base64.b64decode(out["data"]["image/png"])
        for out in outputs
        if out["output_type"] == "display_data" and "image/png" in out.get("data", {})
    ]


def texts(outputs) -> list[str]:
    """The lines a cell printed on its stdout."""
    return "".join(
        o["text"] for o in outputs if o["output_type"] == "stream" and o["name"] == "stdout"
    ).splitlines()


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The 8.3 and 8.6 notes as one notebook, executed in a fresh kernel: (notebook, client,
    the folder of $RNNLAB_D2L_PLOTS). The kernel's environment is a clean one: the
    verified corpora, one thread, a home and plots folder of its own, no network needed."""
    folder = tmp_path_factory.mktemp("notebook")
    plots = folder / "plots"
    cells = [SHORT_TRAINING]
    for name in ("ch08_3_language_models", "ch08_6_rnn_concise"):
        cells += note_cells(name)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(folder),
        "RNNLAB_DATA_DIR": str(DATA_DIR),
        "RNNLAB_D2L_PLOTS": str(plots),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    client = RecordingClient(
        nb,
        timeout=240,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
    )
    client.execute(env=env)
    return nb, client, plots


def cell_running(nb, code: str) -> int:
    """The index of the one cell whose code contains ``code``."""
    [index] = [i for i, cell in enumerate(nb.cells) if code in cell.source]
    return index


def test_d2l_plot_shows_one_png_per_call_in_its_cell(executed):
    nb, _, _ = executed
    first = nb.cells[cell_running(nb, "d2l.plot(freqs,")]
    three = nb.cells[cell_running(nb, "legend=['unigram', 'bigram', 'trigram']")]
    for cell in (first, three):
        [png] = images(cell.outputs)
        assert png.startswith(PNG_SIGNATURE) and len(png) > 5_000


def test_train_ch8_shows_one_live_curve_replaced_in_place(executed):
    nb, client, _ = executed
    index = cell_running(nb, "d2l.train_ch8(")
    cell = nb.cells[index]
    [png] = images(cell.outputs)  # one picture at the end, not one per point
    assert png.startswith(PNG_SIGNATURE)
    shown = [m for m in client.messages[index] if m["msg_type"] == "display_data"]
    updates = [m for m in client.messages[index] if m["msg_type"] == "update_display_data"]
    assert len(shown) == 1 and len(updates) == EPOCHS // 10 - 1
    display_id = shown[0]["content"]["transient"]["display_id"]
    assert all(m["content"]["transient"]["display_id"] == display_id for m in updates)
    # the picture in the notebook is the last update's, with both points
    last = base64.b64decode(updates[-1]["content"]["data"]["image/png"])
    assert png == last != base64.b64decode(shown[0]["content"]["data"]["image/png"])
    # the printed lines stay: a prediction every 10 epochs, then the book's closing three
    lines = texts(cell.outputs)
    assert len(lines) == EPOCHS // 10 + 3
    assert lines[-3].startswith("perplexity ") and lines[-3].endswith(" tokens/sec on cpu")
    assert lines[-2].startswith("time traveller") and lines[-1].startswith("traveller")


def test_a_notebook_writes_no_png_files_and_warns_of_nothing(executed):
    nb, _, plots = executed
    complaints = [
        o
        for c in nb.cells
        for o in c.outputs
        if o["output_type"] == "error" or o.get("name") == "stderr"
    ]
    assert complaints == []  # no error, no warning
    assert not plots.exists() or list(plots.iterdir()) == []


def test_pictures_are_the_figure_size(executed):
    from matplotlib.image import imread

    nb, _, _ = executed
    [png] = images(nb.cells[cell_running(nb, "d2l.train_ch8(")].outputs)
    height, width = imread(io.BytesIO(png)).shape[:2]
    assert 200 <= width <= 400 and 150 <= height <= 300  # 3.5 x 2.5 inches at 100 dpi, trimmed


# ---------------------------------------------------------------- telling a notebook apart


class Shown:
    """What IPython.display.display was given: images shown, and their updates in place."""

    def __init__(self):
        self.shown: list[bytes] = []
        self.updates: list[bytes] = []

    def display(self, image, display_id=None):
        self.shown.append(image.data)
        return SimpleNamespace(update=lambda image: self.updates.append(image.data))


def pretend_shell(monkeypatch, **shell) -> Shown:
    """IPython imported, its get_ipython() giving a shell with ``shell``'s attributes, and
    display recorded instead of sent to a front end."""
    import IPython
    from IPython import display

    shown = Shown()
    monkeypatch.setattr(IPython, "get_ipython", lambda: SimpleNamespace(**shell))
    monkeypatch.setattr(display, "display", shown.display)
    return shown


@pytest.fixture
def plots_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNLAB_D2L_PLOTS", str(tmp_path))
    return tmp_path


def test_in_a_kernel_the_animator_shows_once_then_updates_and_plot_shows(monkeypatch, plots_folder):
    shown = pretend_shell(monkeypatch, kernel=object())
    animator = d2l.Animator(xlabel="epoch", legend=["train"])
    for epoch in (10, 20, 30):
        animator.add(epoch, [30.0 - epoch / 2])
    d2l.plot([1, 2, 3], xlabel="x")
    assert animator.path is None
    assert len(shown.shown) == 2 and len(shown.updates) == 2  # the animator's, then plot's
    assert all(png.startswith(PNG_SIGNATURE) for png in shown.shown + shown.updates)
    assert list(plots_folder.iterdir()) == []


def test_an_animator_given_a_path_in_a_notebook_also_saves_it(monkeypatch, plots_folder):
    shown = pretend_shell(monkeypatch, kernel=object())
    animator = d2l.Animator(path=plots_folder / "curve.png")
    animator.add(1, 2.0)
    assert (plots_folder / "curve.png").read_bytes().startswith(PNG_SIGNATURE)
    assert len(shown.shown) == 1


def test_a_terminal_ipython_without_a_kernel_gets_png_files(monkeypatch, plots_folder):
    shown = pretend_shell(monkeypatch)  # a terminal shell: no kernel
    assert d2l_plot.notebook_display() is None
    animator = d2l.Animator()
    animator.add(1, 2.0)
    assert animator.path is not None and animator.path.parent == plots_folder
    assert animator.path.read_bytes().startswith(PNG_SIGNATURE)
    assert shown.shown == []


def test_a_script_never_imports_ipython(tmp_path):
    script = textwrap.dedent("""
        import sys
        from rnnlab import d2l
        d2l.plot([1, 2, 3])
        animator = d2l.Animator()
        animator.add(1, 2.0)
        assert "IPython" not in sys.modules, "IPython was imported"
        print(animator.path.name)
    """)
    env = dict(os.environ, RNNLAB_D2L_PLOTS=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "d2l-figure-2.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d2l-figure-1.png", "d2l-figure-2.png"]

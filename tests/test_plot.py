"""perplexity.png and the d2l figures: real PNGs, drawn without touching the user's matplotlib."""

import io
import os
import subprocess
import sys
import textwrap

import pytest

from rnnlab.plot import perplexity_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HISTORY = [
    {"epoch": 1, "train_ppl": 12.5, "val_ppl": 11.0},
    {"epoch": 2, "train_ppl": 8.25, "val_ppl": 8.5},
    {"epoch": 3, "train_ppl": 6.0, "val_ppl": 7.75},
]


def test_perplexity_png_is_a_png_of_the_figure_size():
    from matplotlib.image import imread

    png = perplexity_png(HISTORY, title="gru, 256 hidden")
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000
    assert imread(io.BytesIO(png)).shape[:2] == (350, 500)  # 5 x 3.5 inches at 100 dpi


def test_perplexity_png_of_an_empty_history_is_still_a_png():
    assert perplexity_png([]).startswith(PNG_SIGNATURE)


# In a fresh interpreter, so that the backend chosen and pyplot's import are this script's own.
DRAW_EVERYTHING = textwrap.dedent("""
    import sys
    import matplotlib
    matplotlib.use("svg")  # the user's choice, which drawing must not change

    from rnnlab import d2l
    from rnnlab.plot import perplexity_png

    png = perplexity_png(HISTORY)
    d2l.plot(list(range(10)), xlabel="x")
    animator = d2l.Animator(xlabel="epoch", legend=["train"])
    animator.add(1, [3.0])
    animator.add(2, [2.0])

    assert png.startswith(PNG_SIGNATURE), png[:8]
    assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
    print(matplotlib.get_backend())
""")


@pytest.mark.slow
def test_drawing_keeps_the_users_backend_and_leaves_pyplot_alone(tmp_path):
    script = f"HISTORY = {HISTORY!r}\nPNG_SIGNATURE = {PNG_SIGNATURE!r}\n" + DRAW_EVERYTHING
    env = dict(os.environ, RNNLAB_D2L_PLOTS=str(tmp_path / "plots"))
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "svg"
    figures = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert figures == ["d2l-figure-1.png", "d2l-figure-2.png"]
    for name in figures:
        assert (tmp_path / "plots" / name).read_bytes().startswith(PNG_SIGNATURE)

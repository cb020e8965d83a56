"""``rnnlab inspect RUN --html OUT.html``: the inspection page as one self-contained file.

    rnnlab inspect runs/tm --html tm.html                    # the validation split's start
    rnnlab inspect runs/tm --text chapter.txt --html tm.html

The file is the page ``rnnlab serve`` shows (:mod:`rnnlab.web`) with its stylesheet and
script inline and, instead of API calls, its data embedded as JSON: the model's reading
of the text (each token's probability and top 5, the loss), the activation of every unit
at every token (to 3 decimals), the units ranked for each built-in feature, and the
training history. It opens from disk, with no server and no network; there is no
generation and no regular expression feature (both need the model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import web
from .corpus import decode_utf8
from .errors import RnnlabError
from .files import atomic_write, check_writable, read_regular
from .lens import FEATURES, MAX_TEXT_CHARS, Lens
from .rundir import refuse_run_file

# The features ranked ahead of time: all but "regex", whose pattern the reader would type.
RANKED = tuple(name for name in FEATURES if name != "regex")
TEXT_ADVICE = f"give a UTF-8 text file of at most {MAX_TEXT_CHARS:,} characters"

# The lines of page.html that load the stylesheet and the script from the server.
STYLESHEET_LINK = '<link rel="stylesheet" href="page.css">'
SCRIPT_TAG = '<script src="page.js"></script>'


def read_text(path: Path) -> str:
    """The text of ``path``: a UTF-8 file of at most MAX_TEXT_CHARS characters."""
    try:
        # UTF-8 takes at most 4 bytes a character: a larger file is surely too long.
        data = read_regular(path, 4 * MAX_TEXT_CHARS, TEXT_ADVICE)
    except FileNotFoundError:
        raise RnnlabError(f"no such file: {path}; {TEXT_ADVICE}") from None
    except OSError as e:
        raise RnnlabError(f"cannot read {path}: {e.strerror or e}; {TEXT_ADVICE}") from None
    text = decode_utf8(data, str(path))
    if len(text) > MAX_TEXT_CHARS:
        raise RnnlabError(f"{path} has {len(text):,} characters; {TEXT_ADVICE}")
    return text


def page_data(lens: Lens, text: str, run: Path, which: str) -> dict[str, Any]:
    """Everything page.js asks the server for, computed once for ``text``."""
    reading = lens.read(text)
    info = web.info(lens, run, which)
    info["features"] = {name: info["features"][name] for name in RANKED}
    return {
        "info": {**info, "text": text},
        "reading": web.reading_json(reading),
        "activations": web.activations_json(reading),
        "rankings": {name: lens.rank_units(reading, name) for name in RANKED},
        "training": lens.training(),
    }


def _embedded_json(value: Any) -> str:
    """JSON that can sit inside a <script> element: every "<" (so "</script" and "<!--"
    too) written as \\u003c, which a JSON parser reads back as "<"."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")


def inline_page(data: dict[str, Any]) -> str:
    """page.html with page.css and page.js inline and ``data`` embedded for page.js."""
    html = web.asset("page.html").decode("utf-8")
    css = web.asset("page.css").decode("utf-8")
    js = web.asset("page.js").decode("utf-8")
    for tag in (STYLESHEET_LINK, SCRIPT_TAG):
        if html.count(tag) != 1:
            raise RuntimeError(f"page.html should have the line {tag} once")
    html = html.replace(STYLESHEET_LINK, f"<style>\n{css}</style>")
    scripts = (
        f'<script id="page-data" type="application/json">{_embedded_json(data)}</script>\n'
        f"<script>\n{js}</script>"
    )
    before, after = html.split(SCRIPT_TAG)
    return before + scripts + after


def write_report(run: Path, html: Path, text_path: Path | None = None, which: str = "best") -> Path:
    """Write the page for run directory ``run`` to ``html``, reading the text of
    ``text_path`` (default: the start of the run's validation split); returns ``html``.

    ``which`` is the checkpoint, "best" or "latest". A file that can't be read or is
    too long, or an ``html`` that can't be written, is an RnnlabError.
    """
    html = Path(html)
    check_writable(html, "--html")  # refused before the reading, which takes a while
    refuse_run_file(html, "--html")
    lens = Lens.from_run(Path(run), which)
    text = lens.default_text() if text_path is None else read_text(Path(text_path))
    page = inline_page(page_data(lens, text, Path(run), which))
    try:
        atomic_write(html, page.encode("utf-8"), follow_links=True)
    except OSError as e:
        raise RnnlabError(
            f"cannot write {html}: {e.strerror or e}; choose another --html path"
        ) from None
    return html

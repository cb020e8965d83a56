"""The inspection page of a trained run: its three static files and the JSON it is drawn from.

The page is shown two ways, by one page.js: ``rnnlab serve`` (:mod:`rnnlab.serve`) sends
page.html, page.css and page.js as they are and answers the page's API calls with the
JSON below; ``rnnlab inspect --html`` (:mod:`rnnlab.report`) inlines the same files and
embeds the same JSON in the page, so no server is needed.

Numbers are rounded for the page, which only draws them: probabilities to 4 significant
digits (a tiny probability stays non-zero, so its surprise stays finite), activations
to 3 decimals.
"""

from __future__ import annotations

import math
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RnnlabError
from ..lens import FEATURES, MAX_GENERATE, MAX_TEXT_CHARS, Lens, Reading

# The page's files, each with its media type; nothing else is ever read from this folder.
ASSETS = {
    "page.html": "text/html; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
    "page.js": "text/javascript; charset=utf-8",
}


def asset(name: str) -> bytes:
    """The bytes of one of the page's files (a name in ASSETS)."""
    if name not in ASSETS:
        raise KeyError(name)
    return (files(__name__) / name).read_bytes()


def _probability(p: float) -> float:
    return float(f"{p:.4g}")


def _finite(x: float) -> float | None:
    """A loss as JSON has it: null where it is infinite (a token given probability 0)."""
    return float(x) if math.isfinite(x) else None


def info(lens: Lens, run: Path, which: str) -> dict[str, Any]:
    """What the page needs to set itself up: the run, the model's shape, the limits."""
    cfg = lens.cfg
    return {
        "run": Path(run).name or str(run),
        "checkpoint": which,
        "mode": cfg.mode,
        "cell": lens.cell,
        "layers": lens.layers,
        "hidden": lens.hidden,
        "vocab_size": len(lens.vocab),
        "features": dict(FEATURES),
        "prefix": cfg.prefix or "",
        "max_text_chars": MAX_TEXT_CHARS,
        "max_generate": MAX_GENERATE,
    }


def reading_json(reading: Reading) -> dict[str, Any]:
    """A reading without its activations: tokens, each one's probability and the top 5
    predictions for its position (none for the first), and the loss per token."""
    return {
        "tokens": list(reading.tokens),
        "probs": [None if p is None else _probability(p) for p in reading.probs],
        "top": [[[token, _probability(p)] for token, p in top] for top in reading.top],
        "loss_nats": _finite(reading.loss_nats),
        "loss_bits": _finite(reading.loss_bits),
    }


def _rounded(values: np.ndarray) -> list[Any]:
    # float64 first: a float32 rounded to 0.123 would print as 0.12300000339746475.
    return np.round(np.asarray(values, dtype=np.float64), 3).tolist()


def state_key(reading: Reading, layer: Any, kind: Any) -> str:
    """The activations' key ("h1", "c2", ...) of a layer (1-based) and kind ("h" or "c")."""
    kinds = [k for k in ("h", "c") if f"{k}1" in reading.activations]
    layers = len([key for key in reading.activations if key.startswith("h")])
    if kind not in kinds:
        raise RnnlabError(f"kind must be one of {', '.join(kinds)} for this model, not {kind!r}")
    if not isinstance(layer, int) or isinstance(layer, bool) or not 1 <= layer <= layers:
        raise RnnlabError(f"layer must be a whole number from 1 to {layers}, not {layer!r}")
    return f"{kind}{layer}"


def unit_values(reading: Reading, layer: Any, kind: Any, unit: Any) -> list[float]:
    """One unit's activation at every token (T,), rounded to 3 decimals."""
    states = reading.activations[state_key(reading, layer, kind)]  # (T, H)
    hidden = states.shape[1]
    if not isinstance(unit, int) or isinstance(unit, bool) or not 0 <= unit < hidden:
        raise RnnlabError(f"unit must be a whole number from 0 to {hidden - 1}, not {unit!r}")
    return _rounded(states[:, unit])


def activations_json(reading: Reading) -> dict[str, list[list[float]]]:
    """Every unit's activations, unit by unit: {"h1": [[T values] for each of H units], ...}."""
    return {key: _rounded(states.T) for key, states in reading.activations.items()}

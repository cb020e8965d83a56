"""rnnlab: recurrent neural network language models, from the textbook to fast kernels.

The pipeline, one module per stage:
corpus (text) -> tokenize (tokens) -> vocab (ids) -> batches (X, Y) -> models -> train -> generate.
"""

from .errors import RnnlabError

__all__ = ["RnnlabError", "__version__"]


def __getattr__(name: str) -> str:
    """``rnnlab.__version__``, read when asked for (the one place it is written is pyproject.toml).

    Lazily, so that importing rnnlab (and starting the command) stays quick.
    """
    if name != "__version__":
        raise AttributeError(f"module 'rnnlab' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rnnlab")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"

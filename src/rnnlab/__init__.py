"""rnnlab: recurrent neural network language models, from the textbook to fast kernels.

The pipeline, one module per stage:
corpus (text) -> tokenize (tokens) -> vocab (ids) -> batches (X, Y) -> models -> train -> generate.
"""

from importlib.metadata import PackageNotFoundError, version

from .errors import RnnlabError

try:
    __version__ = version("rnnlab")  # the one place it is written is pyproject.toml
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["RnnlabError", "__version__"]

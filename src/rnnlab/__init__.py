"""rnnlab: recurrent neural network language models, from the textbook to fast kernels.

The pipeline, one module per stage:
corpus (text) -> tokenize (tokens) -> vocab (ids) -> batches (X, Y) -> models -> train -> generate.
"""
__version__ = "0.1.0"

from .errors import RnnlabError  # noqa: E402

__all__ = ["RnnlabError", "__version__"]

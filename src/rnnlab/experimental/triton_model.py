"""``--impl triton``: the fused model with its recurrences as Triton kernels on CUDA.

Experimental: the kernels (``triton_rnn``) are checked in Triton's interpreter and compiled
for sm_90, but have never run on a GPU (docs/gpu.md). :class:`TritonLM` has the parameters,
``state_dict`` keys and function of ScratchLM and FusedLM; off CUDA it computes exactly as
FusedLM does, so a run trained with it samples on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ..errors import RnnlabError
from ..models.fused import FusedLM

if TYPE_CHECKING:
    from ..config import ModelConfig

_loaded: Any = None  # the kernels' module once imported; False if it could not be

TRITON_MISSING = (
    "needs the triton package, which cannot be imported here (pip install 'rnnlab[gpu]')"
)


def kernels():
    """``rnnlab.experimental.triton_rnn``, or None where it or Triton cannot be imported."""
    global _loaded
    if _loaded is None:
        try:
            from . import triton_rnn

            _loaded = triton_rnn if triton_rnn.triton is not None else False
        except ImportError:
            _loaded = False
    return _loaded or None


def check_device(config: ModelConfig, device_type: str) -> None:
    """Raise RnnlabError unless ``--impl triton`` can train ``config``'s model on
    ``device_type``: a CUDA GPU, Triton importable, and a hidden size the kernels support."""
    if device_type != "cuda":
        raise RnnlabError(
            f"--impl triton runs its kernels only on a CUDA GPU, and this run is on the "
            f"{device_type}; give --device cuda on a machine with one, or use --impl fused"
        )
    found = kernels()
    if found is None:
        raise RnnlabError(f"--impl triton {TRITON_MISSING}; or use --impl fused")
    if config.cell not in found.KIND_IDS:
        raise RnnlabError(
            f"--impl triton has kernels for --cell {', '.join(found.KIND_IDS)} only (got "
            f"{config.cell}); use --impl fused"
        )
    if not found.supported(config.cell, config.hidden, torch.float32):
        raise RnnlabError(
            f"--impl triton supports --hidden from 16 to {found.MAX_HIDDEN} in multiples "
            f"of 16 (got {config.hidden}); use --impl fused"
        )


class TritonLM(FusedLM):
    """FusedLM whose recurrences run as the Triton kernels on CUDA (``--impl triton``)."""

    def path(self, device_type: str) -> str:
        """ "triton" on CUDA; elsewhere the fused model's own path."""
        return "triton" if device_type == "cuda" else super().path(device_type)

    def recurrence(self, XW: torch.Tensor) -> Callable:
        """The Triton kernels' recurrence for XW (T, B, G*H) on CUDA; cpu.py's elsewhere."""
        if not XW.is_cuda:
            return super().recurrence(XW)
        found = kernels()
        if found is None:
            raise RnnlabError(
                f"a model of --impl triton on CUDA {TRITON_MISSING}; or use --device cpu"
            )
        return found.recurrence

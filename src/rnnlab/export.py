"""A run's model as a file that runs without rnnlab: its step function, ONNX or TorchScript.

    rnnlab export RUN --format onnx --out model.onnx   # writes model.onnx, model.onnx.vocab.json

The step reads one token per stream and returns the scores of the next one; the caller
carries the state (B streams, V tokens, L layers, H hidden units):

    ids (B,) int64, h (L, B, H) [, c (L, B, H): the LSTM]
        -> logits (B, V), h_out (L, B, H) [, c_out (L, B, H)]

Every stream starts from zeros for h (and c); h_out (c_out) is the next step's h (c).
softmax(logits) is the next token's distribution. A model with an adaptive softmax gives
its log-probabilities (``adaptive.log_prob``) as the logits: the same distribution, as
generation samples it. (ONNX names each value once, so the outputs are h_out, c_out.)

Beside the model goes its description, OUT with ``.vocab.json`` added (model.onnx ->
model.onnx.vocab.json; one per model file, so model.onnx and model.pt side by side keep
theirs): ``idx_to_token``, the tokenization mode, the model's sizes, and the name, shape
and dtype of every input and output, what another program needs to drive the step.

ONNX is written by torch.onnx.export's torch.export-based exporter, which needs the
onnxscript package (the older TorchScript-based one is deprecated); onnxruntime runs it.
TorchScript is written by torch.jit.trace; torch.jit.load runs it, in Python or C++.
The one-hot implementations (scratch, fused, triton) are exported as the scratch model
with their parameters: the same function, in plain tensor operations both exporters
trace (fused's hand-written recurrences are opaque to torch.export).
"""

from __future__ import annotations

import inspect
import io
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from . import files
from .errors import RnnlabError
from .models import ScratchLM
from .models.cells import CELLS
from .options import EXPORT_FORMATS, ONE_HOT_IMPLS
from .tokenize import MODES

if TYPE_CHECKING:  # config imports EXPORT_FORMATS from this module
    from .checkpoint import Checkpoint
    from .config import ModelConfig, TrainConfig
    from .vocab import Vocab

# The formats ``export_run`` writes, in the words the command line's --help shows.
VOCAB_SUFFIX = ".vocab.json"  # added to OUT's name: model.onnx -> model.onnx.vocab.json
EXPORT_FORMAT = 1  # of the .vocab.json file
# Protobuf caps one ONNX file at 2 GiB; the graph itself takes a little of that.
ONNX_WEIGHTS_LIMIT = 2 * files.GIB - 16 * files.MIB
EXAMPLE_BATCH = 2  # torch.export fixes a dimension it sees as 1, so trace with 2 streams


class Step(nn.Module):
    """One step of a language model: ids (B,), h (L, B, H)[, c] -> logits (B, V), h[, c].

    Wraps a model of the common interface (forward(X (B, T), state) -> (T*B, V)); with
    T = 1 its rows are the streams. An adaptive softmax's features (B, H) become its
    log-probabilities (B, V).
    """

    def __init__(self, model: nn.Module, two_parts: bool):
        super().__init__()
        self.model, self.lstm = model, two_parts  # a state (h, c), as the LSTM's
        self.head = getattr(model, "adaptive", None)

    def forward(self, ids: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None):
        scores, state = self.model(ids[:, None], (h, c) if self.lstm else h)  # (B, V) or (B, H)
        if self.head is not None:
            scores = self.head.log_prob(scores)  # (B, V)
        return (scores, *state) if self.lstm else (scores, state)


def vocab_path(out: Path) -> Path:
    """Where the vocabulary of a model written to ``out`` goes: model.onnx.vocab.json."""
    out = Path(out)
    return out.with_name(out.name + VOCAB_SUFFIX)


def _check_out(out: Path) -> None:
    """Refuse, before any work, an ``out`` that cannot be written as a file, or whose
    writing would replace something other than a regular file or a file of a run."""
    from .rundir import refuse_run_file  # config imports EXPORT_FORMATS from this module

    folder = out.parent
    if not folder.exists():
        raise RnnlabError(
            f"the folder {folder} does not exist; create it, or give --out a file in an "
            f"existing folder"
        )
    if not folder.is_dir():
        raise RnnlabError(f"{folder} is not a folder; give --out a file in a folder")
    for path in (out, vocab_path(out)):
        if path.is_dir():
            raise RnnlabError(
                f"{path} is a folder; give --out the name of a file to write, e.g. "
                f"{out / 'model.onnx'}"
            )
        files.check_writable(path, "--out")
        refuse_run_file(path, "--out")


def _plain_model(model: nn.Module, config: ModelConfig, vocab_size: int) -> nn.Module:
    """The model to trace: a one-hot implementation as the scratch model, else ``model``."""
    if config.impl not in ONE_HOT_IMPLS:
        return model
    scratch = ScratchLM(vocab_size, config.hidden, config.layers, config.cell)  # same keys
    scratch.load_state_dict(model.state_dict())
    return scratch.eval()


def _check_onnx_exporter() -> None:
    """Refuse --format onnx where torch's exporter cannot run: a torch without the
    torch.export-based one (before 2.5), or no onnxscript."""
    if not {"dynamo", "dynamic_shapes"} <= inspect.signature(torch.onnx.export).parameters.keys():
        raise RnnlabError(
            f"--format onnx needs torch 2.5 or later (this is {torch.__version__}): "
            f"pip install -U torch, or use --format torchscript"
        )
    try:
        import onnxscript  # noqa: F401  the exporter imports it only after tracing the model
    except ImportError:
        raise RnnlabError(
            "--format onnx needs the onnxscript package (torch's ONNX exporter uses it): "
            "pip install onnxscript, or use --format torchscript"
        ) from None


def _onnx_bytes(
    step: Step, example: tuple[torch.Tensor, ...], inputs: list[str], outputs: list[str]
) -> bytes:
    """The ONNX model of ``step`` (inputs ``example``), with a dynamic batch axis B."""
    weights = sum(t.numel() * t.element_size() for t in step.state_dict().values())
    if weights > ONNX_WEIGHTS_LIMIT:
        raise RnnlabError(
            f"the model's weights take {files.size_text(weights)}, more than the 2 GiB an "
            f"ONNX file holds; use --format torchscript"
        )
    batch = torch.export.Dim("B")
    dynamic = ({0: batch},) + ({1: batch},) * (len(example) - 1)  # ids (B,), states (L, B, H)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    try:
        # The exporter logs and warns about its own workings (torch APIs it calls that are
        # deprecated, torchvision operators it skips, axes that share the name B): nothing
        # a user of rnnlab can act on. A failure still raises.
        exporter_log.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                step,
                example,
                input_names=inputs,
                output_names=outputs,
                dynamic_shapes=dynamic,
                dynamo=True,
                verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    assert program is not None  # returned whenever no file is given
    return program.model_proto.SerializeToString()


def _torchscript_bytes(step: Step, example: tuple[torch.Tensor, ...]) -> bytes:
    """The TorchScript module of ``step`` (inputs ``example``), traced and checked at B = 3."""
    other_batch = tuple(
        torch.zeros(3, dtype=t.dtype) if t.dim() == 1 else t.new_zeros(t.shape[0], 3, t.shape[2])
        for t in example
    )
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns of loops over time steps and shape-dependent Python values;
        # a step has one time step, and check_inputs runs the trace at another B.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(step, example, check_inputs=[example, other_batch])
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    return buffer.getvalue()


def _description(
    cfg: TrainConfig,
    vocab: Vocab,
    fmt: str,
    out: Path,
    ckpt: Checkpoint,
    inputs: list[str],
    outputs: list[str],
    adaptive: bool,
) -> dict[str, Any]:
    """The .vocab.json contents: the tokens, the sizes, and the step's inputs and outputs."""
    L, H, V = cfg.model.layers, cfg.model.hidden, len(vocab)
    shapes: dict[str, list[Any]] = {name: [L, "B", H] for name in inputs + outputs}
    shapes.update(ids=["B"], logits=["B", V])
    return {
        "rnnlab_export": EXPORT_FORMAT,
        "format": fmt,
        "model_file": out.name,
        "idx_to_token": vocab.idx_to_token,
        "unk": vocab.unk,
        "mode": cfg.mode,
        "tokenization": MODES[cfg.mode],
        "impl": cfg.model.impl,
        "cell": cfg.model.cell,
        "layers": L,
        "hidden": H,
        "vocab_size": V,
        "logits": "log-probabilities" if adaptive else "logits",
        "inputs": inputs,
        "outputs": outputs,
        "shapes": shapes,
        "dtypes": {name: "int64" if name == "ids" else "float32" for name in shapes},
        "start_state": "zeros",
        "checkpoint": {"which": ckpt.which, "generation": ckpt.generation, "epoch": ckpt.epoch},
    }


def _write(blobs: list[tuple[Path, bytes]]) -> None:
    """Write the model file and its vocabulary as one unit: both new, or both as they were."""
    try:
        files.atomic_write_all(blobs, follow_links=True)
    except OSError as e:
        names = " and ".join(str(path) for path, _ in blobs)
        raise RnnlabError(
            f"could not write {names} ({e.strerror or e}); nothing was changed; free disk "
            f"space or fix the folder's permissions, or give another --out"
        ) from None


def export_run(run: Path, fmt: str, out: Path, which: str = "best") -> tuple[Path, Path]:
    """Write the step model of the run directory `run` to `out` and its vocabulary beside it;
    returns (model file, vocab file).

    ``fmt``: a key of :data:`EXPORT_FORMATS`; ``which``: the checkpoint, "best" or "latest"
    (as ``trained.load_run``). The vocabulary file is :func:`vocab_path` of ``out``.
    Both files are written whole or not at all, as one unit; an existing regular file
    (or the regular file a link leads to) is replaced, anything else refused, and so is
    a file of any run directory.
    """
    # Imported here: config imports EXPORT_FORMATS from this module, and checkpoint imports config.
    from .checkpoint import json_bytes
    from .trained import load_run

    if fmt not in EXPORT_FORMATS:
        raise RnnlabError(
            f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}"
        )
    out = Path(out)
    _check_out(out)
    if not os.access(out.parent, os.W_OK):  # before the load and the trace, which take a while
        raise RnnlabError(
            f"the folder {out.parent} is not writable; fix its permissions, or give --out "
            f"a file in another folder"
        )
    if fmt == "onnx":
        _check_onnx_exporter()
    cfg, vocab, model, ckpt = load_run(Path(run), "cpu", which)
    lstm = CELLS[cfg.model.cell].state_parts == 2
    step = Step(_plain_model(model, cfg.model, len(vocab)), lstm).eval()
    step.requires_grad_(False)  # for inference: outputs a caller needs not detach
    inputs = ["ids", "h", "c"] if lstm else ["ids", "h"]
    outputs = ["logits", "h_out", "c_out"] if lstm else ["logits", "h_out"]
    states = [torch.zeros(cfg.model.layers, EXAMPLE_BATCH, cfg.model.hidden) for _ in inputs[1:]]
    example = (torch.zeros(EXAMPLE_BATCH, dtype=torch.int64), *states)  # ids (B,), (L, B, H)
    if fmt == "onnx":
        model_bytes = _onnx_bytes(step, example, inputs, outputs)
    else:
        model_bytes = _torchscript_bytes(step, example)
    description = _description(
        cfg, vocab, fmt, out, ckpt, inputs, outputs, adaptive=step.head is not None
    )
    vocab_file = vocab_path(out)
    _write([(out, model_bytes), (vocab_file, json_bytes(description))])
    return out, vocab_file

"""rnnlab export: the step function as ONNX and TorchScript, checked against the loaded model.

Each exported file is run step by step on the same ids as the model ``load_run`` gives,
the state fed back each step, and must give the same logits and states.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from conftest import COMMAND_ENV
from rnnlab import files
from rnnlab.cli import main
from rnnlab.errors import RnnlabError
from rnnlab.export import export_run, vocab_path
from rnnlab.options import EXPORT_FORMATS
from rnnlab.trained import load_run

# A run that trains in a fraction of a second; MODELS add the model's options.
TINY = "--max-tokens 2000 --hidden 8 --batch-size 4 --num-steps 5 --epochs 1 --quiet".split()
TINY += ["--device", "cpu"]
# Every cell with 1 and 2 layers, one-hot (scratch and fused), and torch.nn models with
# an embedding: dropout (off in the step), tied weights, an adaptive softmax.
MODELS = {
    name: options.split()
    for name, options in {
        "scratch-rnn-1": "--impl scratch --cell rnn",
        "fused-rnn-2": "--impl fused --cell rnn --layers 2",
        "fused-gru-1": "--impl fused --cell gru",
        "fused-rnn-relu-1": "--impl fused --cell rnn-relu",
        "torch-rnn-relu-2": "--impl torch --cell rnn-relu --layers 2 --embedding 6",
        "scratch-gru-2": "--impl scratch --cell gru --layers 2",
        "scratch-lstm-1": "--impl scratch --cell lstm",
        "fused-lstm-2": "--impl fused --cell lstm --layers 2",
        "torch-lstm-2": "--impl torch --cell lstm --layers 2 --embedding 6 --dropout 0.3",
        "torch-gru-1-tied": "--impl torch --cell gru --embedding 8 --tie-weights",
        "torch-rnn-1-adaptive": "--impl torch --embedding 8 --hidden 16 --adaptive-softmax "
        "--cutoffs 8",
    }.items()
}
STEPS = 4
TOLERANCE = 1e-5

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # torch 2.13 deprecates TorchScript (jit.trace, save, load); it is a format users ask for.
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def run_of(tmp_path_factory):
    """A tiny trained run of each model of MODELS, trained once for the module."""
    folder = tmp_path_factory.mktemp("runs")
    threads = torch.get_num_threads()

    def run(name: str) -> Path:
        path = folder / name
        if not path.exists():
            torch.set_num_threads(1)
            try:
                assert main(["train", "--out", str(path), *TINY, *MODELS[name]]) == 0
            finally:
                torch.set_num_threads(threads)
        return path

    return run


@pytest.fixture(scope="module")
def exported(run_of, tmp_path_factory):
    """(model file, vocab file) of each (model, format), exported once for the module."""
    folder = tmp_path_factory.mktemp("exports")
    made: dict[tuple[str, str], tuple[Path, Path]] = {}

    def export(name: str, fmt: str) -> tuple[Path, Path]:
        if (name, fmt) not in made:
            made[name, fmt] = export_run(run_of(name), fmt, folder / f"{name}.{fmt}")
        return made[name, fmt]

    return export


def reference_steps(run: Path, ids: torch.Tensor) -> list[list[np.ndarray]]:
    """What rnnlab's own model gives for ids (STEPS, B), one step at a time from zeros:
    per step [logits (B, V), h (L, B, H)(, c)], logits as the export defines them."""
    _, _, model, _ = load_run(run, "cpu", "best")
    head = getattr(model, "adaptive", None)
    state = model.begin_state(ids.shape[1], "cpu")
    steps = []
    with torch.no_grad():
        for step_ids in ids:
            scores, state = model(step_ids[:, None], state)  # (B, V), or features (B, H)
            if head is not None:
                scores = head.log_prob(scores)
            states = state if isinstance(state, tuple) else (state,)
            steps.append([t.numpy().copy() for t in (scores, *states)])
    return steps


def onnx_steps(model_file: Path, ids: np.ndarray, description: dict) -> list[list[np.ndarray]]:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(model_file), options)
    B = ids.shape[1]
    state = [zeros(description, name, B) for name in description["inputs"][1:]]
    steps = []
    for step_ids in ids:
        feed = dict(zip(description["inputs"], [step_ids, *state]))
        outputs = session.run(description["outputs"], feed)
        steps.append(outputs)
        state = outputs[1:]
    return steps


def torchscript_steps(model_file: Path, ids: np.ndarray, description: dict):
    module = torch.jit.load(str(model_file))
    B = ids.shape[1]
    state = [torch.from_numpy(zeros(description, name, B)) for name in description["inputs"][1:]]
    steps = []
    with torch.no_grad():
        for step_ids in ids:
            outputs = module(torch.from_numpy(step_ids), *state)
            steps.append([t.numpy().copy() for t in outputs])
            state = list(outputs[1:])
    return steps


def zeros(description: dict, name: str, B: int) -> np.ndarray:
    """The start state ``name`` for B streams, from the shape the vocab file gives."""
    shape = [B if size == "B" else size for size in description["shapes"][name]]
    return np.zeros(shape, dtype=description["dtypes"][name])


RUNNERS = {"onnx": onnx_steps, "torchscript": torchscript_steps}


def random_ids(B: int, V: int, seed: int) -> np.ndarray:
    """(STEPS, B) token ids in [0, V)."""
    return np.random.default_rng(seed).integers(0, V, size=(STEPS, B), dtype=np.int64)


def assert_same_steps(got: list[list[np.ndarray]], want: list[list[np.ndarray]]) -> None:
    assert len(got) == len(want)
    for t, (got_step, want_step) in enumerate(zip(got, want)):
        assert len(got_step) == len(want_step)
        for got_value, want_value in zip(got_step, want_step):
            assert got_value.shape == want_value.shape, t
            np.testing.assert_allclose(got_value, want_value, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.slow
def test_exported_step_gives_the_models_logits_and_states(exported, run_of, name, fmt):
    model_file, vocab_file = exported(name, fmt)
    description = json.loads(vocab_file.read_text(encoding="utf-8"))
    for B, seed in ((1, 0), (3, 1)):  # the batch size is not the one traced with
        ids = random_ids(B, description["vocab_size"], seed)
        want = reference_steps(run_of(name), torch.from_numpy(ids))
        assert_same_steps(RUNNERS[fmt](model_file, ids, description), want)


def test_the_onnx_graph_has_the_named_inputs_and_outputs_with_a_batch_axis(exported):
    model_file, vocab_file = exported("fused-lstm-2", "onnx")
    session = onnxruntime.InferenceSession(str(model_file))
    shapes = {value.name: value.shape for value in session.get_inputs() + session.get_outputs()}
    assert shapes == {
        "ids": ["B"],
        "h": [2, "B", 8],
        "c": [2, "B", 8],
        "logits": ["B", 27],
        "h_out": [2, "B", 8],
        "c_out": [2, "B", 8],
    }
    assert json.loads(vocab_file.read_text(encoding="utf-8"))["shapes"] == shapes


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_vocab_file_describes_the_tokens_the_model_and_the_step(exported, run_of, fmt):
    model_file, vocab_file = exported("torch-gru-1-tied", fmt)
    assert vocab_file == vocab_path(model_file) == Path(f"{model_file}.vocab.json")
    cfg, vocab, _, ckpt = load_run(run_of("torch-gru-1-tied"), "cpu", "best")
    description = json.loads(vocab_file.read_text(encoding="utf-8"))
    assert description["idx_to_token"] == vocab.idx_to_token
    assert description["idx_to_token"][description["unk"]] == "<unk>"
    assert description["vocab_size"] == len(vocab)
    assert description["model_file"] == model_file.name
    assert (description["format"], description["mode"]) == (fmt, cfg.mode)
    assert (description["impl"], description["cell"]) == ("torch", "gru")
    assert (description["layers"], description["hidden"]) == (1, 8)
    assert description["inputs"] == ["ids", "h"]
    assert description["outputs"] == ["logits", "h_out"]
    assert description["dtypes"] == {
        "ids": "int64",
        "h": "float32",
        "logits": "float32",
        "h_out": "float32",
    }
    assert description["logits"] == "logits"
    assert description["checkpoint"]["generation"] == ckpt.generation


def test_an_adaptive_softmax_exports_log_probabilities(exported):
    model_file, vocab_file = exported("torch-rnn-1-adaptive", "torchscript")
    assert json.loads(vocab_file.read_text(encoding="utf-8"))["logits"] == "log-probabilities"
    module = torch.jit.load(str(model_file))
    logits, _ = module(torch.tensor([1, 2]), torch.zeros(1, 2, 16))
    assert torch.allclose(logits.exp().sum(1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
@pytest.mark.slow
def test_exported_files_run_in_a_process_without_rnnlab(exported, run_of, fmt):
    """Only the runtime (onnxruntime; torch for TorchScript) and the two files are needed."""
    model_file, vocab_file = exported("scratch-lstm-1", fmt)
    blocked = ["rnnlab"] + (["torch"] if fmt == "onnx" else [])
    program = f"""
import json, sys
for name in {blocked!r}:
    sys.modules[name] = None  # importing it now fails
import numpy as np
d = json.load(open(sys.argv[2], encoding="utf-8"))
ids = [d["idx_to_token"].index(t) for t in "the time"]
state = [np.zeros([1 if s == "B" else s for s in d["shapes"][n]], d["dtypes"][n])
         for n in d["inputs"][1:]]
if d["format"] == "onnx":
    import onnxruntime
    session = onnxruntime.InferenceSession(sys.argv[1])
    step = lambda *x: session.run(d["outputs"], dict(zip(d["inputs"], x)))
else:
    import torch
    module = torch.jit.load(sys.argv[1])
    step = lambda *x: [t.numpy() for t in module(*map(torch.from_numpy, x))]
for i in ids:
    logits, *state = step(np.array([i], dtype=np.int64), *state)
print(json.dumps(logits[0].tolist()))
"""
    result = subprocess.run(
        [sys.executable, "-c", program, str(model_file), str(vocab_file)],
        capture_output=True,
        text=True,
        env=COMMAND_ENV,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    description = json.loads(vocab_file.read_text(encoding="utf-8"))
    ids = torch.tensor([[description["idx_to_token"].index(t)] for t in "the time"])  # (T, 1)
    want = reference_steps(run_of("scratch-lstm-1"), ids)
    np.testing.assert_allclose(json.loads(result.stdout), want[-1][0][0], atol=TOLERANCE)


def test_the_command_writes_both_files(run_of, tmp_path, capsys):
    out = tmp_path / "model.pt"
    command = ["export", str(run_of("scratch-rnn-1")), "--format", "torchscript"]
    assert main([*command, "--out", str(out), "--checkpoint", "latest"]) == 0
    assert str(out) in capsys.readouterr().out
    assert json.loads((tmp_path / "model.pt.vocab.json").read_text())["checkpoint"]["which"] == (
        "latest"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "model.pt.vocab.json"]


# ---------------------------------------------------------------- mistakes a user can make


def refused(tmp_path: Path, run: Path, fmt: str, out: Path, *words: str) -> None:
    """export_run raises a one-line RnnlabError naming ``words`` and writes nothing."""
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(RnnlabError) as error:
        export_run(run, fmt, out)
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)
    assert sorted(tmp_path.rglob("*")) == before


def test_an_unknown_format_is_refused(run_of, tmp_path):
    refused(tmp_path, run_of("scratch-rnn-1"), "tflite", tmp_path / "m", "tflite", "onnx")


def test_a_missing_run_is_refused(tmp_path):
    refused(tmp_path, tmp_path / "nope", "torchscript", tmp_path / "m.pt", "nope")


def test_a_missing_or_unusable_out_folder_is_refused(run_of, tmp_path):
    run = run_of("scratch-rnn-1")
    refused(tmp_path, run, "onnx", tmp_path / "missing" / "m.onnx", "missing", "does not exist")
    (tmp_path / "file").write_text("x")
    refused(tmp_path, run, "onnx", tmp_path / "file" / "m.onnx", "not a folder")
    (tmp_path / "folder").mkdir()
    refused(tmp_path, run, "onnx", tmp_path / "folder", "is a folder")


def test_the_runs_own_files_are_not_replaced(run_of, tmp_path):
    run = run_of("scratch-rnn-1")
    refused(run, run, "torchscript", run / "vocab.json", "vocab.json", "outside the run")
    refused(run, run, "onnx", run / "model.safetensors", "model.safetensors", "outside the run")


def test_an_unwritable_out_folder_is_refused(run_of, tmp_path, monkeypatch):
    """A folder this user may not write to (as the system says: root may write anywhere,
    so the answer is given from outside where the tests run as root)."""
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    if os.geteuid() == 0:
        real_access = os.access
        monkeypatch.setattr(
            os, "access", lambda path, mode: mode != os.W_OK and real_access(path, mode)
        )
    refused(tmp_path, run_of("scratch-rnn-1"), "torchscript", folder / "m.pt", "not writable")


def test_a_failed_write_leaves_no_file(run_of, tmp_path, monkeypatch):
    real_write = files._write_temporary

    def disk_full_at_the_vocab(path, data):
        if path.name.endswith(".vocab.json"):
            raise OSError(28, "No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(files, "_write_temporary", disk_full_at_the_vocab)
    out = tmp_path / "m.pt"
    refused(
        tmp_path, run_of("scratch-rnn-1"), "torchscript", out, "No space left", "m.pt.vocab.json"
    )


def test_onnx_without_onnxscript_is_refused(run_of, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # importing it fails
    refused(
        tmp_path, run_of("scratch-rnn-1"), "onnx", tmp_path / "m.onnx", "pip install onnxscript"
    )


def test_a_model_too_large_for_an_onnx_file_is_refused(run_of, tmp_path, monkeypatch):
    monkeypatch.setattr("rnnlab.export.ONNX_WEIGHTS_LIMIT", 1000)
    refused(tmp_path, run_of("scratch-rnn-1"), "onnx", tmp_path / "m.onnx", "--format torchscript")


def test_onnx_with_a_torch_before_its_new_exporter_is_refused(run_of, tmp_path, monkeypatch):
    def old_export(model, args, f, export_params=True, verbose=False, input_names=None):
        raise AssertionError("not called")

    monkeypatch.setattr(torch.onnx, "export", old_export)
    refused(tmp_path, run_of("scratch-rnn-1"), "onnx", tmp_path / "m.onnx", "torch 2.5 or later")

"""The package's modules import one way: from their own layer or the layers before it.

Every import counts, lazy ones inside functions too; only those under ``if TYPE_CHECKING:``
do not (they never run). ``from .models import build_model`` counts as importing the
package ``rnnlab.models`` (its ``__init__`` runs); ``from .models.layout import GATES`` as
importing ``rnnlab.models.layout`` alone. A new module fails the first test until it is
given its place in LAYERS.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "rnnlab"

# In the order data flows (README's layout): a module may import from its own layer and the
# layers above it in this list, never from one below.
LAYERS = (
    # what everything uses: the error, safe files, the options, the process' resources
    ("", "errors", "files", "options", "heap", "threads", "plot"),
    # text -> tokens -> ids -> batches
    ("corpus", "tokenize", "vocab", "batches", "data"),
    # the models; the experimental Triton model is one of them
    ("models.cells", "models.layout", "models.scratch", "models.fused.cpu", "models.fused",
     "models.torchnn",
     "experimental", "experimental.triton_rnn", "experimental.triton_model", "models"),
    # one process using a model: a training step and epoch, its schedule, generation
    ("train", "schedule", "average", "generate", "experimental.cuda_graph"),
    # what a run is, and what it writes: config, run directory, checkpoints, curves, export
    ("config", "command_config", "rundir", "run_state", "checkpoint", "trained", "restore", "board",
     "export"),
    # training a run directory: the processes, the loop, opening the run; choosing options
    ("world", "stopping", "trainer", "fit", "recipes", "auto"),
    # reading a trained run, timing, and the book's own functions
    ("scoring", "lens", "report", "web", "serve_checks", "serve", "bench", "d2l_plot", "d2l"),
    # the command
    ("cli", "launch", "__main__"),
)  # fmt: skip
LAYER_OF = {f"{PACKAGE}.{m}" if m else PACKAGE: i for i, layer in enumerate(LAYERS) for m in layer}


def modules() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own name)."""
    found = {}
    for path in sorted((SOURCE / PACKAGE).rglob("*.py")):
        parts = path.relative_to(SOURCE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> dict[str, int]:
    """The package's modules that ``name`` imports at run time -> the first line doing so."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            # "from . import files" imports rnnlab.files; "from .models import X", the package
            targets = [t for t in targets[1:] if t in known] or targets[:1]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.setdefault(target, node.lineno)
    return found


def graph() -> dict[str, dict[str, int]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def test_every_module_has_its_place_in_the_layers():
    assert set(modules()) == set(LAYER_OF), "add a new module to LAYERS (tests/test_layers.py)"


def test_no_module_imports_from_a_layer_below_its_own():
    upward = [
        f"{name} (layer {LAYER_OF[name]}) imports {target} (layer {LAYER_OF[target]}) at line "
        f"{line}"
        for name, targets in graph().items()
        for target, line in targets.items()
        if LAYER_OF[target] > LAYER_OF[name]
    ]
    assert upward == []


def test_no_modules_import_each_other_in_a_cycle():
    edges = graph()
    cycles = []
    state: dict[str, str] = {}  # name -> "open" while on the path, "done" after

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in edges[name]:
            if state.get(target) == "open":
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in edges:
        if name not in state:
            visit(name, [name])
    assert cycles == []


@pytest.mark.parametrize(
    "source, imported",
    [
        ("from .models import build_model", {"rnnlab.models"}),
        ("from .models.layout import GATES", {"rnnlab.models.layout"}),
        ("from . import files", {"rnnlab.files"}),
        ("def f():\n    from .trainer import fit", {"rnnlab.trainer"}),
        ("import typing\nif typing.TYPE_CHECKING:\n    from .trainer import fit", set()),
        ("import torch", set()),
    ],
)  # fmt: skip
def test_the_walk_counts_lazy_imports_and_skips_type_checking_ones(tmp_path, source, imported):
    path = tmp_path / "probe.py"
    path.write_text(source + "\n", encoding="utf-8")
    known = {"rnnlab", "rnnlab.models", "rnnlab.models.layout", "rnnlab.files", "rnnlab.trainer"}
    assert set(imports_of("rnnlab.probe", path, known)) == imported

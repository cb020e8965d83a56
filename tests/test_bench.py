"""The benchmark returns well-formed rows (no timing assertions: the machine is shared)."""

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

from rnnlab import bench
from rnnlab.command_config import BenchConfig
from rnnlab.errors import RnnlabError
from rnnlab.models import EXPERIMENTAL_IMPLS, IMPLS

KEYS = {
    "impl",
    "cell",
    "hidden",
    "layers",
    "batch",
    "steps",
    "device",
    "tokens_per_s",
    "vs_scratch",
    "vs_torch",
    "floor_tokens_per_s",
    "floor_fraction",
    "peak_mem_mb",
}
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
# The command's options for the smallest run: one cell, one size, one timed batch.
TINY = (
    "--cells",
    "rnn",
    "--hidden",
    "8",
    "--batches",
    "1",
    "--warmup",
    "0",
    "--batch-size",
    "2",
    "--num-steps",
    "3",
)


def tiny_corpus() -> torch.Tensor:
    return torch.randint(0, 7, (500,), generator=torch.Generator().manual_seed(0))


def test_run_bench_gives_one_row_per_implementation_and_cell(one_thread):
    cfg = BenchConfig(
        cells=("lstm",), hidden=(16,), batch_size=(4,), num_steps=(5,), batches=2, warmup=1
    )
    rows = bench.run_bench(cfg, corpus_ids=tiny_corpus())
    stable = [i for i in IMPLS if i not in EXPERIMENTAL_IMPLS]  # triton only when named
    assert [(r["cell"], r["impl"]) for r in rows] == [("lstm", i) for i in stable]
    for r in rows:
        assert set(r) == KEYS
        assert (r["hidden"], r["layers"], r["batch"], r["steps"]) == (16, 1, 4, 5)
        assert r["device"] == "cpu"
        assert r["tokens_per_s"] > 0
        assert r["floor_tokens_per_s"] == rows[0]["floor_tokens_per_s"] > 0  # one floor per size
        assert r["floor_fraction"] == pytest.approx(r["tokens_per_s"] / r["floor_tokens_per_s"])
    speed = {r["impl"]: r["tokens_per_s"] for r in rows}
    for r in rows:
        assert r["vs_scratch"] == pytest.approx(r["tokens_per_s"] / speed["scratch"])
        assert r["vs_torch"] == pytest.approx(r["tokens_per_s"] / speed["torch"])
    table = bench.format_table(rows).splitlines()
    assert len(table) == 2 + len(rows)
    assert table[0].split()[:3] == ["impl", "cell", "hidden"]
    assert "of floor" in table[0]


def test_every_batch_size_is_timed_with_every_step_count(one_thread):
    cfg = BenchConfig(
        impls=("fused",),
        cells=("gru",),
        hidden=(8,),
        batch_size=(2, 4),
        num_steps=(3, 6),
        batches=1,
        warmup=0,
        no_floor=True,
    )
    rows = bench.run_bench(cfg, corpus_ids=tiny_corpus())
    assert [(r["batch"], r["steps"]) for r in rows] == [(2, 3), (2, 6), (4, 3), (4, 6)]
    assert all(r["floor_tokens_per_s"] is None and r["floor_fraction"] is None for r in rows)
    assert all(r["peak_mem_mb"] is None for r in rows)  # no warm-up steps to measure


@pytest.mark.skipif(
    bench._start_rss_peak() is None, reason="needs Linux's /proc/self/clear_refs and glibc"
)
def test_peak_resident_memory_grows_with_the_activations(one_thread):
    """The CPU's peak-RSS measurement sees a training step's activations: a step with 32
    times the tokens and 8 times the width needs more memory than a tiny one."""
    sizes = {}
    for hidden, batch in ((64, 64), (8, 2)):
        cfg = BenchConfig(
            impls=("scratch",),
            cells=("lstm",),
            hidden=(hidden,),
            batch_size=(batch,),
            num_steps=(6,),
            batches=1,
            warmup=3,
            no_floor=True,
        )
        (row,) = bench.run_bench(cfg, corpus_ids=tiny_corpus())
        sizes[hidden] = row["peak_mem_mb"]
    assert sizes[8] is not None and sizes[8] >= 0
    assert sizes[64] > sizes[8]


def test_the_floor_runs_every_product_of_a_deep_model(monkeypatch):
    """Per layer 2T step products and dW_h, 3 input products above the first, 3 output ones."""
    shapes = []
    real_mm = torch.mm
    monkeypatch.setattr(
        torch,
        "mm",
        lambda a, b, out: shapes.append((*a.shape, b.shape[1])) or real_mm(a, b, out=out),
    )
    floor = bench._Floor("gru", V=7, H=8, layers=2, B=3, T=4, device=torch.device("cpu"))
    assert floor.run() > 0
    step, back, dW = (3, 8, 24), (3, 24, 8), (8, 12, 24)
    layer0 = [step] * 4 + [back] * 4 + [dW]
    layer1 = layer0 + [(12, 8, 24), (12, 24, 8), dW]
    output = [(12, 8, 7), (12, 7, 8), (8, 12, 7)]
    assert shapes == layer0 + layer1 + output


def test_ratios_are_none_without_the_reference_and_threads_are_put_back():
    threads = torch.get_num_threads()
    cfg = BenchConfig(
        impls=("fused",),
        cells=("rnn",),
        hidden=(8,),
        batch_size=(2,),
        num_steps=(3,),
        batches=1,
        warmup=0,
        threads=1,
    )
    rows = bench.run_bench(cfg, corpus_ids=tiny_corpus())
    assert rows[0]["vs_scratch"] is None and rows[0]["vs_torch"] is None
    assert " - " in bench.format_table(rows).splitlines()[2] + " "
    assert torch.get_num_threads() == threads


def test_save_rows_writes_the_rows_with_what_was_run(tmp_path):
    out = tmp_path / "rows.json"
    cfg = BenchConfig(cells=("gru",), hidden=(8,), threads=1, out=str(out))
    rows = [{"impl": "scratch", "cell": "gru", "tokens_per_s": 1.0}]
    bench.save_rows(cfg, rows)
    saved = json.loads(out.read_text())
    assert saved["rows"] == rows
    assert saved["meta"]["torch"] == torch.__version__ and saved["meta"]["threads"] == 1
    assert saved["meta"]["config"]["cells"] == ["gru"] and "date" in saved["meta"]


@pytest.mark.slow
def test_bench_command_prints_json_and_writes_out(tmp_path, cli):
    out = tmp_path / "rows.json"
    result = cli("bench", "--json", "--out", out, "--impls", "scratch,fused", *TINY)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    saved = json.loads(out.read_text())
    assert printed == saved["rows"]
    assert [(r["cell"], r["impl"], r["hidden"]) for r in printed] == [
        ("rnn", "scratch", 8),
        ("rnn", "fused", 8),
    ]
    assert saved["meta"]["config"]["impls"] == ["scratch", "fused"]


def test_benchmark_script_is_the_bench_command(monkeypatch, capsys):
    """benchmarks/bench.py passes its arguments to ``rnnlab bench``."""
    monkeypatch.setattr(bench, "_time_machine_ids", tiny_corpus)
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--json", "--impls", "torch", *TINY])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert done.value.code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["impl"], r["cell"], r["batch"], r["steps"]) for r in rows] == [
        ("torch", "rnn", 2, 3)
    ]


def test_unknown_implementation_is_a_user_error(cli, clean_error):
    with pytest.raises(RnnlabError, match="--impls 'numpy' is not known"):
        BenchConfig(impls=("numpy",))
    clean_error(cli("bench", "--impls", "scratch,numpy"), "--impls", "numpy")

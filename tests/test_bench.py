"""The benchmark returns well-formed rows (no timing assertions: the machine is shared)."""
import json

import pytest
import torch

from rnnlab import bench
from rnnlab.errors import RnnlabError

KEYS = {"impl", "model", "hidden", "layers", "batch", "steps", "device", "tokens_per_s",
        "vs_scratch", "vs_torch", "peak_mem_mb"}


def tiny_corpus() -> torch.Tensor:
    return torch.randint(0, 7, (500,), generator=torch.Generator().manual_seed(0))


def test_run_bench_gives_one_row_per_implementation_and_model():
    rows = bench.run_bench(kinds=("lstm",), hidden_sizes=(16,), batch_size=4, num_steps=5,
                           batches=2, warmup=1, corpus_ids=tiny_corpus())
    assert [(r["model"], r["impl"]) for r in rows] == [
        (k, i) for k in ("lstm",) for i in ("scratch", "torch", "fused")]
    for r in rows:
        assert set(r) == KEYS
        assert (r["hidden"], r["layers"], r["batch"], r["steps"]) == (16, 1, 4, 5)
        assert r["device"] == "cpu"
        assert r["tokens_per_s"] > 0
        assert r["peak_mem_mb"] is None  # not measured on the CPU
    speed = {r["impl"]: r["tokens_per_s"] for r in rows}
    for r in rows:
        assert r["vs_scratch"] == pytest.approx(r["tokens_per_s"] / speed["scratch"])
        assert r["vs_torch"] == pytest.approx(r["tokens_per_s"] / speed["torch"])
    table = bench.format_table(rows).splitlines()
    assert len(table) == 2 + len(rows)
    assert table[0].split()[:3] == ["impl", "model", "hidden"]


def test_ratios_are_none_without_the_reference():
    rows = bench.run_bench(impls=("fused",), kinds=("rnn",), hidden_sizes=(8,), batch_size=2,
                           num_steps=3, batches=1, warmup=0, corpus_ids=tiny_corpus())
    assert rows[0]["vs_scratch"] is None and rows[0]["vs_torch"] is None
    assert " - " in bench.format_table(rows).splitlines()[2] + " "


def test_main_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "_time_machine_ids", tiny_corpus)
    out = tmp_path / "rows.json"
    assert bench.main(["--kinds", "rnn", "--hidden", "8", "--batches", "1", "--warmup", "0",
                       "--batch-size", "2", "--num-steps", "3", "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert printed == saved["rows"] and len(printed) == 3
    assert "date" in saved["meta"]


def test_unknown_implementation_is_a_user_error():
    with pytest.raises(RnnlabError, match="unknown implementation"):
        bench.run_bench(impls=("numpy",), corpus_ids=tiny_corpus())

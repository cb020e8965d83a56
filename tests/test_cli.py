"""The rnnlab command: each subcommand end to end, --help, and one-line errors for bad input.

Most checks drive the installed ``rnnlab`` command as a subprocess; the long list of
bad inputs goes through ``cli.main`` in this process (the same code, without paying
torch's start-up for each), with a few repeated as subprocesses to see that no
traceback reaches the terminal.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import TINY_RUN, run_cli, save_run_state
from rnnlab import cli

TINY = [*TINY_RUN, "--hidden", "32", "--sample-every", "1"]


@pytest.fixture(autouse=True)
def one_thread_here(one_thread):
    """Every test of this module runs the library on one thread."""


def rnnlab(*args, check: int | None = 0):
    """The command, which must succeed unless ``check`` says otherwise."""
    return run_cli(*args, check=check)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run of two epochs, trained through the command."""
    out = tmp_path_factory.mktemp("cli") / "run"
    result = rnnlab("train", "timemachine", "--out", out, "--epochs", "2", *TINY)
    prefix = json.loads((out / "config.json").read_text())["prefix"]
    assert result.stdout.count("epoch ") == 2
    assert result.stdout.count("\n" + prefix) == 1 and result.stdout.count("  " + prefix) == 1
    return out


def test_data_json_reports_the_d2l_facts():
    facts = json.loads(rnnlab("data", "timemachine", "--mode", "d2l", "--json").stdout)
    assert (facts["tokens"], facts["vocab_size"]) == (170580, 28)
    assert facts["top"][0] == [" ", 29927] and facts["top"][1] == ["e", 17838]


@pytest.mark.slow
def test_train_writes_a_complete_run_directory(run):
    names = {p.name for p in run.iterdir()}
    assert {
        "config.json",
        "vocab.json",
        "model.safetensors",
        "checkpoint.json",
        "metrics.jsonl",
        "perplexity.png",
        "checkpoints",
    } <= names
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["hidden"] == 32 and config["epochs"] == 2 and "version" in config
    assert config["threads"] == 1
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert {"epoch", "train_ppl", "val_ppl", "val_bpt", "tokens_per_s", "seconds"} <= set(r)
        assert 1 < r["train_ppl"] < 30 and 1 < r["val_ppl"] < 30 and r["tokens_per_s"] > 0
    assert (run / "perplexity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_generate_echoes_the_prefix_and_generates_length_tokens(run):
    sampled = [
        "--prefix",
        "time traveller",
        "--length",
        "25",
        "--temperature",
        "0.8",
        "--top-k",
        "5",
        "--seed",
        "1",
    ]
    result = rnnlab("generate", run, *sampled)
    text = result.stdout.rstrip("\n")
    assert text.startswith("time traveller") and len(text) == len("time traveller") + 25
    assert rnnlab("generate", run, *sampled).stdout == result.stdout  # seeded sampling repeats


@pytest.mark.slow
def test_generate_streams_several_samples_each_from_the_prompt(run):
    """--stream prints the same text as a whole print does; --num-samples N prints N of them
    (seeds SEED, SEED+1, ...), separated by a line of dashes."""
    sampled = ["--prefix", "time ", "--length", "30", "--temperature", "1", "--seed", "4"]
    streamed = rnnlab("generate", run, *sampled, "--num-samples", "3", "--stream").stdout
    whole = rnnlab("generate", run, *sampled, "--num-samples", "3", "--no-stream").stdout
    assert streamed == whole
    samples = whole.rstrip("\n").split("\n" + "-" * 40 + "\n")
    assert len(samples) == 3 and len(set(samples)) == 3
    assert all(s.startswith("time ") and len(s) == len("time ") + 30 for s in samples)
    second = rnnlab("generate", run, *sampled[:-1], "5").stdout  # seed 5 is the second sample
    assert second.rstrip("\n") == samples[1]


@pytest.mark.slow
def test_inspect_writes_one_page_and_export_a_step_model(run, tmp_path):
    page = tmp_path / "page.html"
    assert f"wrote {page}" in rnnlab("inspect", run, "--html", page).stdout
    assert page.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html>")
    model = tmp_path / "step.pt"
    rnnlab("export", run, "--format", "torchscript", "--out", model)
    assert model.is_file() and (tmp_path / "step.pt.vocab.json").is_file()
    missing = rnnlab("inspect", run, check=2)
    assert (
        missing.stderr.strip()
        == "rnnlab: error: give --html OUT.html, the file to write the page to"
    )


def test_generate_warns_about_prefix_characters_outside_the_vocabulary(tmp_path, capsys):
    from rnnlab import rundir
    from rnnlab.config import ModelConfig, TrainConfig
    from rnnlab.models import build_model
    from rnnlab.train import EpochProgress, make_optimizer
    from rnnlab.vocab import Vocab

    cfg = TrainConfig(mode="chars", model=ModelConfig(impl="scratch", hidden=8), prefix="ab")
    vocab = Vocab(list("abc \n"))
    model = build_model(cfg.model, len(vocab))
    rundir.create(tmp_path / "run", cfg, vocab)
    save_run_state(
        tmp_path / "run",
        model,
        make_optimizer("sgd", model.parameters(), 1),
        1,
        EpochProgress(),
        [],
        cfg,
    )
    assert cli.main(["generate", str(tmp_path / "run"), "--prefix", "ab?!", "--length", "4"]) == 0
    out, err = capsys.readouterr()
    # print() adds one line break; an untrained model may say <unk> (or line breaks)
    generated = out[:-1][len("ab?!") :].replace("<unk>", "?")
    assert out.startswith("ab?!") and len(generated) == 4
    assert err.count("\n") == 1 and "warning" in err and "'?', '!'" in err


@pytest.mark.slow
def test_eval_json_on_the_run_and_on_a_held_out_file(run, tmp_path):
    result = json.loads(rnnlab("eval", run, "--json").stdout)
    assert set(result) >= {"ppl", "bpt", "loss", "tokens", "checkpoint", "epoch", "batch_size"}
    assert result["tokens"] > 0 and result["checkpoint"] == "best"
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    lowest = min(metrics, key=lambda m: m["val_loss"])
    assert result["epoch"] == lowest["epoch"]
    assert result["ppl"] == pytest.approx(lowest["val_ppl"], rel=1e-9)
    latest = json.loads(rnnlab("eval", run, "--json", "--checkpoint", "latest").stdout)
    assert latest["ppl"] == pytest.approx(metrics[-1]["val_ppl"], rel=1e-9)
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("the time traveller smiled and said nothing at all " * 5)
    assert cli.main(["eval", str(run), str(held_out), "--json"]) == 0


@pytest.mark.slow
def test_resume_continues_from_the_saved_epoch(run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    result = rnnlab("train", "--out", copy, "--resume", "--epochs", "3")
    assert "epoch 3/3" in result.stdout and "epoch 1/" not in result.stdout
    records = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert json.loads((copy / "config.json").read_text())["epochs"] == 3
    assert cli.main(["train", "--out", str(copy), "--resume"]) == 0
    assert "already trained 3 epoch" in capsys.readouterr().out


def test_a_run_trained_with_a_cuda_graph_resumes_on_the_cpu_without_one(run, tmp_path):
    """--cuda-graph is a speed setting of the GPU a run was trained on: a resume on the
    CPU that does not ask for it again leaves it off, and says so in config.json."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "cuda_graph": True}))
    assert cli.main(["train", "--out", str(copy), "--resume", "--epochs", "3", "--quiet"]) == 0
    assert json.loads((copy / "config.json").read_text())["cuda_graph"] is False


def option_strings(parser):
    """The options a parser shows (hidden ones, such as the old --model, are left out)."""
    return [
        s
        for a in parser._actions
        for s in a.option_strings
        if s.startswith("--") and a.help != argparse.SUPPRESS
    ]


def test_every_help_mentions_every_option_and_its_default():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
    assert set(sub.choices) == {
        "data", "train", "generate", "eval", "bench", "recipes", "serve", "inspect", "export"
    }  # fmt: skip
    train_help = rnnlab("train", "--help").stdout
    for name, subparser in sub.choices.items():
        text = train_help if name == "train" else subparser.format_help()
        options = option_strings(subparser)
        for option in options:
            assert option in text, (name, option)
        if set(options) - {"-h", "--help"}:  # `recipes` has none
            assert "default" in text
    for option in [
        "--mode",
        "--cell",
        "--impl",
        "--hidden",
        "--layers",
        "--dropout",
        "--embedding",
        "--tie-weights",
        "--batch-size",
        "--num-steps",
        "--sampling",
        "--epochs",
        "--lr",
        "--optimizer",
        "--clip",
        "--val-frac",
        "--max-tokens",
        "--device",
        "--seed",
        "--prefix",
        "--sample-every",
        "--checkpoint-every",
        "--schedule",
        "--warmup",
        "--min-lr-frac",
        "--patience",
        "--time-limit MINUTES",
        "--eval-batch-size",
        "--quiet",
        "--resume",
        "--out",
    ]:
        assert option in train_help
    flowed = " ".join(train_help.split())  # argparse wraps lines where the help's length says
    assert "(default: 512)" in flowed and "(default: fused)" in flowed
    assert "(default: constant)" in flowed and "(default: no limit)" in flowed
    for name in ("generate", "eval"):
        text = " ".join(sub.choices[name].format_help().split())
        assert "--checkpoint {best,latest}" in text and "(default: best)" in text


def bad_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    folder = tmp_path / "no_text"
    folder.mkdir()
    (folder / "image.png").write_bytes(b"\x89PNG")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"abc\x00\x01\x02")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    short = tmp_path / "short.txt"
    short.write_text("the time machine " * 3)
    return empty, folder, binary, latin1, short


def test_bad_input_is_one_line_and_exit_status_2(tmp_path, run, capsys):
    empty, folder, binary, latin1, short = bad_files(tmp_path)
    no_run = tmp_path / "nothing"
    small = ["--hidden", "8", "--epochs", "1", "--impl", "scratch", "--device", "cpu", "--quiet"]
    cases = [
        (["data", str(tmp_path / "missing.txt")], "no such file"),
        (["data", str(empty)], "empty"),
        (["data", str(folder)], "no .txt files"),
        (["data", str(binary)], "binary"),
        (["data", str(latin1)], "byte offset 3"),
        (["data", "timemachin"], "timemachine, tinyshakespeare, ptb"),
        (["data", "timemachine", "--max-tokens", "0"], "--max-tokens"),
        (
            ["train", str(short), "--out", str(tmp_path / "r1"), *small],
            "has 45 tokens, and batch_size 32 x num_steps 35 needs at least 1121",
        ),
        (["train", "--out", str(tmp_path / "r2"), "--hidden", "0"], "--hidden"),
        (["train", "--out", str(tmp_path / "r2"), "--batch-size", "-1"], "--batch-size"),
        (["train", "--out", str(tmp_path / "r2"), "--num-steps", "0"], "--num-steps"),
        (["train", "--out", str(tmp_path / "r2"), "--lr", "0"], "--lr"),
        (["train", "--out", str(tmp_path / "r2"), "--lr", "-0.5"], "--lr"),
        (["train", "--out", str(tmp_path / "r2"), "--val-frac", "0"], "--val-frac"),
        (["train", "--out", str(tmp_path / "r2"), "--val-frac", "1.2"], "--val-frac"),
        (["train", "--out", str(no_run), "--resume"], "nothing to resume"),
        (["train", "--out", str(run), "--resume", "--hidden", "64"], "--hidden 64 conflicts"),
        (["train", "--out", str(run), "--resume", "--mode", "chars"], "--mode 'chars' conflicts"),
        (["train", "--out", str(run)], "--resume"),
        (["train", "--out", str(run), "--resume", "--epochs", "0"], "--epochs"),
        (["generate", str(run), "--length", "0"], "--length"),
        (["generate", str(run), "--length", "10000000"], "--length"),
        (["generate", str(no_run)], "no run directory"),
        (["generate", str(tmp_path)], "not a run directory"),
        (["eval", str(run), "--split", "test"], "no 'test' split"),
        (["bench", "--cells", "rnn,cnn"], "cnn"),
        (["bench", "--hidden", "256,0"], "--hidden"),
        (
            ["train", "--out", str(tmp_path / "r4"), "--impl", "triton", "--device", "cpu"],
            "--impl triton runs its kernels only on a CUDA GPU",
        ),
        (
            ["train", "--out", str(tmp_path / "r4"), "--cuda-graph", "--device", "cpu"],
            "--cuda-graph needs --device cuda",
        ),
        (["train", "--out", str(run), "--resume", "--cuda-graph"], "--cuda-graph needs"),
        (["train", "--out", str(tmp_path / "r5"), "--time-limit", "0"], "--time-limit"),
        (["train", "--out", str(tmp_path / "r5"), "--warmup", "100"], "--schedule cosine"),
        (
            ["train", "--out", str(tmp_path / "r5"), "--schedule", "cosine", "--min-lr-frac", "1"],
            "--min-lr-frac",
        ),
        (["train", "--out", str(tmp_path / "r5"), "--patience", "-1"], "--patience"),
        (["train", "--out", str(tmp_path / "r5"), "--eval-batch-size", "-2"], "--eval-batch-size"),
        (
            ["train", "--out", str(run), "--resume", "--schedule", "plateau"],
            "--schedule 'plateau' conflicts",
        ),
        (["eval", str(run), "--batch-size", "-1"], "--batch-size"),
    ]
    if not torch.cuda.is_available():  # auto is the CPU here
        cases.append((["train", "--out", str(tmp_path / "r4"), "--impl", "triton"], "triton"))
    if not torch.cuda.is_available():
        cases.append((["train", "--out", str(tmp_path / "r3"), "--device", "cuda"], "no CUDA"))
    for argv, words in cases:
        assert cli.main(argv) == 2, argv
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rnnlab: error: "), (argv, err)
        assert words in lines[0], (argv, words, lines[0])
    assert not (tmp_path / "r1").exists() or not (tmp_path / "r1" / "checkpoint.json").exists()
    assert not (tmp_path / "r4").exists()  # refused before anything was written
    assert not (tmp_path / "r5").exists()


def test_run_without_a_checkpoint_is_a_clear_error(run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "checkpoint.json").unlink()
    shutil.rmtree(copy / "checkpoints")
    assert cli.main(["eval", str(copy), "--checkpoint", "latest"]) == 2
    assert "has no checkpoint" in capsys.readouterr().err
    assert cli.main(["eval", str(copy)]) == 0  # the best checkpoint is still there
    (copy / "best.json").unlink()
    shutil.rmtree(copy / "best")
    capsys.readouterr()
    assert cli.main(["eval", str(copy)]) == 2
    assert "has no checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_errors_from_the_real_command_have_no_traceback(tmp_path, clean_error):
    clean_error(rnnlab("data", tmp_path / "missing.txt", check=None), "no such file")
    clean_error(rnnlab("train", "--out", tmp_path / "r", "--lr", "0", check=None), "--lr")
    triton_on_cpu = rnnlab("train", "--out", tmp_path / "t", "--impl", "triton", "--device", "cpu",
                           check=None)  # fmt: skip
    clean_error(triton_on_cpu, "--impl triton", "--device cuda", "--impl fused")
    usage = rnnlab("train", "--hidden", "lots", check=None)  # argparse: usage error
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


def test_progress_bar_only_on_a_terminal_and_quiet_silences_everything(tmp_path):
    import io

    from rnnlab.config import TrainConfig
    from rnnlab.fit import fit

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    cfg = TrainConfig.from_options(
        dict(
            impl="scratch",
            max_tokens=3000,
            hidden=16,
            batch_size=8,
            num_steps=10,
            epochs=1,
            device="cpu",
        )
    )
    for quiet, name in ((False, "loud"), (True, "quiet")):
        out, err = io.StringIO(), Terminal()
        assert fit(cfg, tmp_path / name, quiet=quiet, out=out, err=err) == 0
        assert ("batch/s" in err.getvalue()) == (not quiet)
        assert ("epoch 1/1" in out.getvalue()) == (not quiet)
    plain = io.StringIO()  # not a terminal: log lines, no bar
    assert fit(cfg, tmp_path / "plain", out=io.StringIO(), err=plain) == 0
    assert plain.getvalue() == ""


def test_help_and_version_answer_without_importing_torch():
    code = (
        "import sys; from rnnlab.cli import main\n"
        "for argv in (['--version'], ['--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.splitlines()[0].startswith("rnnlab ")
    assert "COMMAND" in result.stdout and "train" in result.stdout
    assert result.stdout.splitlines()[-1] == "False"


def test_python_dash_m_is_the_same_command():
    result = subprocess.run(
        [sys.executable, "-m", "rnnlab", "--version"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout == rnnlab("--version").stdout


@pytest.mark.slow
def test_default_prompt_comes_from_the_runs_own_text(tmp_path):
    source = tmp_path / "code.txt"
    source.write_text("int main(void) {\n    return 0;\n}\n" * 200)
    out = tmp_path / "run"
    result = rnnlab("train", source, "--out", out, "--mode", "chars", "--epochs", "1", *TINY)
    assert json.loads((out / "config.json").read_text())["prefix"] == "int main(void) {\n"
    assert "time traveller" not in result.stdout
    assert rnnlab("generate", out, "--length", "5").stdout.startswith("int main(void) {\n")


@pytest.mark.slow
def test_the_old_model_option_still_names_the_cell(tmp_path):
    out = tmp_path / "run"
    rnnlab("train", "--out", out, "--model", "gru", "--epochs", "1", *TINY)
    assert json.loads((out / "config.json").read_text())["model"]["cell"] == "gru"

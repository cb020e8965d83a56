"""The sweep behind ``--recipe auto``: candidates × texts × budgets, pruned as it goes.

    python benchmarks/sweep.py run                      # everything not yet in the rows
    python benchmarks/sweep.py run --texts ptb --budgets 2 5
    python benchmarks/sweep.py plan                     # what run would train next, and its time
    python benchmarks/sweep.py table                    # rows -> src/rnnlab/auto_table.json
    python benchmarks/sweep.py markdown                 # rows -> the table of docs/results.md

Texts (each with its kind): The Time Machine and Tiny Shakespeare as characters, Penn
Treebank as words (its own valid and test files), and Python source code as characters
(``python-source``: the first 600,000 characters of this interpreter's standard library
modules, in name order, built by ``code_text``; its SHA-256 is recorded, nothing is
committed). The others hold out nanoGPT's last 10 %.

Budgets (minutes of training, ``--time-limit``): 2, 5 and 15, and 30 for Tiny
Shakespeare and Penn Treebank. At the first budget every candidate of the text's kind
(``rnnlab.auto.CANDIDATES``, the fixed recipes among them) is trained; at each later
budget only the best ``--carry`` (2) of the budget before it, and the fixed recipes made for
about that budget (``made_for``: ``shakespeare``, ``ptb-small`` and ``ptb-bf16``, 30-minute
recipes, at 15 and 30 minutes; ``ptb-bf16``, added later, there only: ``LATE_RECIPES``).
Each run is
``rnnlab train TEXT --time-limit M`` with the candidate's options, then ``rnnlab eval``
(the best checkpoint; validation, in rnnlab's carried-state protocol), and for
characters also nanoGPT's block protocol at 64 and 256, for Penn Treebank the test split.
Candidates are ranked by ``rnnlab.auto.METRIC``: characters by the 256-character blocks,
words by the carried-state loss. Before each run, ``rnnlab.auto.reference_speed`` measures the
machine (3 s) and ``rnnlab.auto.candidate_speed`` times the candidate's own step (3 s; rows
from 2026-12-05 on), as ``--recipe auto`` times them, so that the table can convert a budget
on another day or machine, a step's timing compared with a step's.

One JSON line per run is appended to benchmarks/results/sweep.jsonl as soon as it
ends; ``run`` skips what the rows hold already, so a stopped sweep resumes where it
stopped. Run it with nothing else on the machine, and with RNNLAB_DATA_DIR naming the
folder that holds Penn Treebank (../shared/data here). ``--stop-after MINUTES`` starts no
run after that many minutes, for a sweep spread over several sessions.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import torch

from rnnlab import auto
from rnnlab.recipes import RECIPES, command_line

HERE = Path(__file__).parent
ROWS = HERE / "results" / "sweep.jsonl"
TABLE = HERE.parent / "src" / "rnnlab" / "auto_table.json"
BUDGETS = (2.0, 5.0, 15.0, 30.0)
THIRTY_MINUTE_TEXTS = ("tinyshakespeare", "ptb")
TEXTS = {  # name -> (kind, --mode)
    "timemachine": ("chars", "chars"),
    "tinyshakespeare": ("chars", "chars"),
    "ptb": ("words", "words"),
    "python-source": ("chars", "chars"),
}
CODE_CHARACTERS = 600_000
# Fixed recipes added after the short budgets were measured: they join only the budgets
# they are made for (``made_for``), not the first, since a model sized for 30 minutes cannot
# show its worth in 2, and a late row there would be compared with rows of another day (a
# day's speed moved a word model's tokens/s by 1.8 times). Where they join a budget measured
# earlier, that budget's rows come from two sessions: docs/results.md says so of each.
LATE_RECIPES = ("ptb-bf16",)


def code_text(folder: Path) -> Path:
    """Python source code as a text: the standard library's top-level modules in name
    order, concatenated, cut at CODE_CHARACTERS characters; written once into ``folder``."""
    path = folder / "python-source.txt"
    if not path.exists():
        lib = Path(sysconfig.get_paths()["stdlib"])
        parts, size = [], 0
        for module in sorted(lib.glob("*.py")):
            text = module.read_text(encoding="utf-8", errors="replace")
            parts.append(text)
            size += len(text)
            if size >= CODE_CHARACTERS:
                break
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(parts)[:CODE_CHARACTERS], encoding="utf-8")
    return path


def source_of(text: str, folder: Path) -> str:
    return str(code_text(folder)) if text == "python-source" else text


def read_rows(rows: Path) -> list[dict]:
    if not rows.exists():
        return []
    return [json.loads(line) for line in rows.read_text().splitlines() if line.strip()]


def ranking(rows: list[dict], text: str, minutes: float) -> list[dict]:
    """The rows of ``text`` at ``minutes``, lowest loss (rnnlab.auto.METRIC) first."""
    here = [r for r in rows if r["text"] == text and r["minutes"] == minutes]
    return sorted(here, key=lambda r: r[auto.METRIC[TEXTS[text][0]]])


def budgets_of(text: str, budgets) -> list[float]:
    return [b for b in budgets if b < 30 or text in THIRTY_MINUTE_TEXTS]


def candidates_at(rows: list[dict], text: str, minutes: float, budgets, carry: int) -> list[str]:
    """Which candidates ``text`` trains at ``minutes``: all at its first budget (but
    LATE_RECIPES); after that, the best ``carry`` of the budget before (none until that
    budget is done) and the fixed recipes made for ``minutes``."""
    kind = TEXTS[text][0]
    order = budgets_of(text, budgets)
    at = order.index(minutes)
    if at == 0:
        wanted = [name for name in auto.CANDIDATES[kind] if name not in LATE_RECIPES]
    else:
        before = ranking(rows, text, order[at - 1])
        wanted_before = candidates_at(rows, text, order[at - 1], budgets, carry)
        if {r["candidate"] for r in before} < set(wanted_before):
            return []  # the budget before is not finished: nothing to carry yet
        carried = [r["candidate"] for r in before[:carry]]
        wanted = carried + [name for name in made_for(kind, minutes) if name not in carried]
    return wanted


def made_for(kind: str, minutes: float) -> list[str]:
    """The fixed recipes of ``kind`` made for about this budget (their own time limit within
    a factor of 2 of ``minutes``): they join a long budget whatever they did at the short
    ones, since a model sized for 30 minutes cannot show its worth in 2."""
    near = []
    for name in auto.RECIPE_CANDIDATES[kind]:
        limit = RECIPES[name].options.get("time_limit")
        if limit and limit / 2 <= minutes <= 2 * limit:
            near.append(name)
    return near


def plan(rows: list[dict], texts, budgets, carry: int) -> list[tuple[str, float, str]]:
    """The runs still to do, budget by budget, so that a partial sweep covers every text
    at the short budgets first."""
    todo = []
    for minutes in budgets:
        for text in texts:
            if minutes not in budgets_of(text, budgets):
                continue
            done = {r["candidate"] for r in ranking(rows, text, minutes)}
            for name in candidates_at(rows, text, minutes, budgets, carry):
                if name not in done:
                    todo.append((text, minutes, name))
    return todo


def stamp() -> dict:
    """What every benchmark row records of when and where it ran."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
    }


def call(cmd: list[str]) -> subprocess.CompletedProcess:
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, capture_output=True, text=True)


def scored(run_dir: Path, *options: str) -> dict:
    cmd = [sys.executable, "-m", "rnnlab", "eval", str(run_dir), "--json", *options]
    return json.loads(call(cmd).stdout)


def speeds(options: dict, vocab: int) -> tuple[float, float]:
    """The machine's reference speed and the candidate's step speed (tokens/s), each
    timed as `rnnlab train --recipe auto` times them, in a fresh process (this one has
    tokenized whole corpora, and measured lower)."""
    code = (
        "import json, sys; from rnnlab import auto; "
        "options, vocab = json.loads(sys.argv[1]); "
        "print(json.dumps([auto.reference_speed(), auto.candidate_speed(options, vocab)]))"
    )
    out = call([sys.executable, "-c", code, json.dumps([options, vocab])]).stdout
    reference, step = json.loads(out)
    return reference, step


def train_one(text: str, minutes: float, name: str, out: Path, data: Path) -> dict:
    kind, mode = TEXTS[text]
    options = {
        "source": source_of(text, data),
        "mode": mode,
        "epochs": auto.EPOCHS,
        **auto.CANDIDATES[kind][name],
        "time_limit": minutes,
    }
    run_dir = out / f"{text}-{name}-{minutes:g}min-{time.strftime('%Y%m%d-%H%M%S')}"
    reference, step = speeds(auto.CANDIDATES[kind][name], _sizes(options)["vocab"])
    cmd = [sys.executable, "-m", "rnnlab", "train", *command_line(options).split(),
           "--out", str(run_dir), "--quiet"]  # fmt: skip
    start = time.monotonic()
    call(cmd)
    wall = time.monotonic() - start
    # Read from the files (not with this process' rnnlab, which may be older than the code
    # the run was trained by, when the sweep runs while the source changes).
    latest = json.loads((run_dir / json.loads((run_dir / "checkpoint.json").read_text())[
        "current"] / "trainer.json").read_text())  # fmt: skip
    clock = latest["schedule"]
    cfg = json.loads((run_dir / "config.json").read_text())
    tokens = clock["batches"] * cfg["batch_size"] * cfg["num_steps"]
    val = scored(run_dir)
    row = {
        "text": text,
        "kind": kind,
        "minutes": minutes,
        "candidate": name,
        "command": "rnnlab train " + " ".join(cmd[4:]),
        **stamp(),
        "reference_tokens_per_s": reference,
        "step_tokens_per_s": step,
        "wall_s": wall,
        "trained_s": clock["seconds"],
        "batches": clock["batches"],
        "tokens_per_s": tokens / max(clock["seconds"], 1e-9),
        "epochs_trained": latest["epoch"],
        "stopped_at_batch": latest["progress"]["batch"],
        "best_epoch": clock["best_epoch"],
        "best_batch": clock.get("best_batch", 0),
        "val_loss": val["loss"],
        "val_tokens": val["tokens"],
    }
    if kind == "chars":
        for block in (64, 256):
            row[f"val_loss_block{block}"] = scored(run_dir, "--block-size", str(block))["loss"]
    if text == "ptb":
        test = scored(run_dir, "--split", "test")
        row["test_loss"], row["test_ppl"] = test["loss"], math.exp(test["loss"])
    sizes = _sizes(options)
    row.update(sizes)
    if text == "python-source":
        row["text_sha256"] = hashlib.sha256(Path(options["source"]).read_bytes()).hexdigest()
        row["python"] = sys.version.split()[0]
    return row


@functools.cache
def _sizes_of(source: str, mode: str) -> tuple[int, int]:
    from rnnlab.config import TrainConfig
    from rnnlab.data import prepare

    data = prepare(source, mode, None, TrainConfig().val_frac, 1, 1)
    return len(data.train_ids), len(data.vocab)


def _sizes(options: dict) -> dict:
    """The text's training tokens and vocabulary, as --recipe auto counts them (once per
    text: tokenizing a whole corpus in this process is what slowed its readings)."""
    tokens, vocab = _sizes_of(options["source"], options["mode"])
    return {"train_tokens": tokens, "vocab": vocab}


def _rounded(row: dict, key: str) -> dict:
    """``{key: row[key]}`` rounded, or nothing where the row lacks it (an older row)."""
    return {key: round(row[key])} if key in row else {}


def write_table(rows: list[dict], path: Path) -> None:
    """auto_table.json: each text's sizes, and each (text, budget)'s candidates ranked."""
    texts, cells = {}, []
    for text in TEXTS:
        mine = [r for r in rows if r["text"] == text]
        if not mine:
            continue
        texts[text] = {
            "kind": mine[0]["kind"],
            "train_tokens": mine[0]["train_tokens"],
            "vocab": mine[0]["vocab"],
        }
        for minutes in sorted({r["minutes"] for r in mine}):
            ranked = ranking(rows, text, minutes)
            cells.append(
                {
                    "text": text,
                    "minutes": minutes,
                    "reference_tokens_per_s": round(
                        sum(r["reference_tokens_per_s"] for r in ranked) / len(ranked)
                    ),
                    "ranking": [
                        {
                            "candidate": r["candidate"],
                            "loss": round(r[auto.METRIC[r["kind"]]], 4),
                            "tokens_per_s": round(r["tokens_per_s"]),
                            **_rounded(r, "step_tokens_per_s"),
                        }
                        for r in ranked
                    ],
                }
            )
    about = "written by benchmarks/sweep.py table from benchmarks/results/sweep.jsonl"
    path.write_text(json.dumps({"about": about, "texts": texts, "cells": cells}, indent=1) + "\n")


def markdown(rows: list[dict]) -> str:
    lines = [
        "| text | budget | candidate | validation loss | block 64 / 256 | test ppl | "
        "tokens/s | reference tokens/s | date |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for text in TEXTS:
        for minutes in sorted({r["minutes"] for r in rows if r["text"] == text}):
            for i, r in enumerate(ranking(rows, text, minutes)):
                blocks = (
                    f"{r['val_loss_block64']:.4f} / {r['val_loss_block256']:.4f}"
                    if "val_loss_block64" in r
                    else ""
                )
                loss = f"{r['val_loss']:.4f}"
                if i == 0:  # the best by the metric that ranks (rnnlab.auto.METRIC)
                    if blocks:
                        blocks = blocks.replace(" / ", " / **") + "**"
                    else:
                        loss = f"**{loss}**"
                test = f"{r['test_ppl']:.2f}" if "test_ppl" in r else ""
                lines.append(
                    f"| {text} | {minutes:g} min | {r['candidate']} | {loss} | {blocks} | "
                    f"{test} | {r['tokens_per_s']:,.0f} | {r['reference_tokens_per_s']:,.0f} | "
                    f"{r['date'][:16]} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("run", "plan", "table", "markdown"))
    parser.add_argument("--texts", nargs="+", choices=list(TEXTS), default=list(TEXTS))
    parser.add_argument("--budgets", nargs="+", type=float, default=list(BUDGETS))
    parser.add_argument("--carry", type=int, default=2, help="candidates kept per budget")
    parser.add_argument("--rows", type=Path, default=ROWS)
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"))
    parser.add_argument("--data", type=Path, default=Path("runs/sweep-texts"))
    parser.add_argument("--stop-after", type=float, default=None,
                        help="start no run after this many minutes of the sweep")  # fmt: skip
    args = parser.parse_args(argv)
    rows = read_rows(args.rows)
    if args.action == "table":
        write_table(rows, TABLE)
        print(f"wrote {TABLE}")
        return 0
    if args.action == "markdown":
        print(markdown(rows))
        return 0
    todo = plan(rows, args.texts, args.budgets, args.carry)
    if args.action == "plan":
        for text, minutes, name in todo:
            print(f"{text:16} {minutes:4g} min  {name}")
        print(f"{len(todo)} runs, {sum(m for _, m, _ in todo):g} minutes of training (more "
              f"follow as budgets finish and carry their best)")  # fmt: skip
        return 0
    start = time.monotonic()
    while todo:
        if args.stop_after and time.monotonic() - start > args.stop_after * 60:
            print("--stop-after reached; run again to go on")
            break
        text, minutes, name = todo[0]
        row = train_one(text, minutes, name, args.out, args.data)
        args.rows.parent.mkdir(parents=True, exist_ok=True)
        with args.rows.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        print(f"  {text} {minutes:g} min {name}: val loss {row['val_loss']:.4f} "
              f"({row['tokens_per_s']:,.0f} tokens/s)", flush=True)  # fmt: skip
        rows.append(row)
        todo = plan(rows, args.texts, args.budgets, args.carry)
    return 0


if __name__ == "__main__":
    sys.exit(main())

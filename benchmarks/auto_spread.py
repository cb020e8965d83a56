"""How close ``--recipe auto`` comes to the best the sweep found, run after run.

    python benchmarks/auto_spread.py --texts tinyshakespeare ptb --budgets 2 5 --repeats 2

For each text of the sweep and each budget B of its table (minutes at the table's speed),
the minutes given to auto are B scaled to this machine today as auto converts them: B x
the cell's best candidate's speed in the table (``rnnlab.auto.step_speed``: its step timed
before its run, or in older rows the run's speed) / ``rnnlab.auto.candidate_speed`` of that
candidate now (timed as auto times it: ``sweep.speeds``), so that auto's own conversion
lands on B. Then ``rnnlab train TEXT --recipe auto
--time-limit M`` and ``rnnlab eval`` of the best checkpoint in the table's metric
(``rnnlab.auto.METRIC``: characters in 256-character blocks, words carried). The row holds
what auto said, the best loss the table holds for B and for any budget up to B (what B can
buy, since auto may train a shorter budget's best), and auto's loss less that best (nats;
for words also the ratio of the perplexities). Rows go to
benchmarks/results/auto_spread.jsonl; run it with nothing else on the machine and with
RNNLAB_DATA_DIR naming the folder that holds the Penn Treebank.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import sweep
from targets import trained

from rnnlab import auto

HERE = Path(__file__).parent
ROWS = HERE / "results" / "auto_spread.jsonl"


def measure(text: str, minutes: float, out: Path, data: Path) -> dict:
    kind, mode = sweep.TEXTS[text]
    table = auto.load_table()
    cells = {c.minutes: c for c in table.cells if c.text == text}
    cell = cells[minutes]
    best = cell.ranking[0]
    _, today = sweep.speeds(auto.CANDIDATES[kind][best["candidate"]], table.texts[text]["vocab"])
    given = round(minutes * auto.step_speed(best) / today, 2)
    run_dir = out / f"{text}-auto-{minutes:g}min-{time.strftime('%Y%m%d-%H%M%S')}"
    cmd = [sys.executable, "-m", "rnnlab", "train", sweep.source_of(text, data), "--mode", mode,
           "--recipe", "auto", "--time-limit", str(given), "--sample-every", "0",
           "--out", str(run_dir)]  # fmt: skip
    start = time.monotonic()
    printed = sweep.call(cmd).stdout
    wall = time.monotonic() - start
    options = ("--block-size", "256") if kind == "chars" else ()
    loss = sweep.scored(run_dir, *options)["loss"]
    best_up_to = min(c.ranking[0]["loss"] for m, c in cells.items() if m <= minutes)
    row = {
        "text": text,
        "table_minutes": minutes,
        "minutes_given": given,
        "command": "rnnlab " + " ".join(cmd[3:]),
        **sweep.stamp(),
        "candidate_tokens_per_s": today,
        "table_candidate_tokens_per_s": best["tokens_per_s"],
        "compared_with_tokens_per_s": auto.step_speed(best),  # what `today` is compared with
        "wall_s": wall,
        "auto_said": next(line for line in printed.splitlines() if line.startswith("--recipe")),
        "metric": auto.METRIC[kind],
        "loss": loss,
        "table_best_at_budget": best["loss"],
        "table_best_up_to_budget": best_up_to,
        "above_best": loss - best_up_to,
        **{k: v for k, v in trained(run_dir).items() if k != "config"},
    }
    if kind == "words":
        row["ppl_ratio"] = math.exp(loss - best_up_to)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", nargs="+", choices=list(sweep.TEXTS), required=True)
    parser.add_argument("--budgets", nargs="+", type=float, default=[2.0, 5.0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rows", type=Path, default=ROWS)
    parser.add_argument("--out", type=Path, default=Path("runs/auto-spread"))
    parser.add_argument("--data", type=Path, default=Path("runs/sweep-texts"))
    args = parser.parse_args(argv)
    for _ in range(args.repeats):
        for text in args.texts:
            for minutes in args.budgets:
                row = measure(text, minutes, args.out, args.data)
                args.rows.parent.mkdir(parents=True, exist_ok=True)
                with args.rows.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"  {text} {minutes:g} min: {row['loss']:.4f}, "
                      f"{row['above_best']:+.4f} from the table's best", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

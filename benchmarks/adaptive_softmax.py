"""Training speed of a word-level LSTM with and without an adaptive softmax, on Penn Treebank.

    python benchmarks/adaptive_softmax.py                          # 200 timed batches each
    python benchmarks/adaptive_softmax.py --batches 3 --warmup 1 --val-tokens 2000  # smoke test

Two ``--impl torch`` models over ptb's 10,000 words (words mode), with the same embedding,
recurrent layers and initial weights, batches and optimizer, differ only in their output
layer: a full softmax (an H x V matrix) or an adaptive softmax (Grave et al. 2017; cutoffs
V//20, V//4 = 500, 2500 unless --cutoffs is given). For each it prints the parameters,
the training tokens per second over ``--batches`` timed batches (after ``--warmup``
untimed ones) and the validation perplexity after them (on the first ``--val-tokens`` of
ptb's valid file, or all of it). ptb is read from $RNNLAB_DATA_DIR or rnnlab's cache
(downloaded once). Run it on a quiet machine, with ``--threads`` fixed.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from rnnlab import batches, train
from rnnlab.config import ModelConfig
from rnnlab.data import prepare
from rnnlab.models import build_model
from rnnlab.options import OPTIMIZERS


def comma_ints(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(",") if p.strip())


def measure(config: ModelConfig, data, args, device: torch.device) -> dict:
    """Train ``config`` for warmup + batches steps; its speed and validation perplexity."""
    V = len(data.vocab)
    torch.manual_seed(args.seed)  # the same initial embedding and recurrent weights for both
    model = build_model(config, V).to(device)
    optimizer = train.make_optimizer(args.optimizer, model.parameters(), args.lr)
    step = train.make_step(model, optimizer, args.clip)
    X_all, Y_all = batches.epoch_batches(
        data.train_ids, args.batch_size, args.num_steps, "sequential", args.seed, 0
    )
    needed = args.warmup + args.batches
    if needed > len(X_all):
        raise SystemExit(f"ptb has {len(X_all)} batches of this size; ask for at most that many")
    X_all, Y_all = X_all[:needed].to(device), Y_all[:needed].to(device)
    model.train()
    state = model.begin_state(args.batch_size, device)
    # Only the last loss is kept. Holding every step's loss tensor grew the process by
    # about 25 MB a step on the CPU (about one (T*B, V) buffer of logits; holding a copy
    # made after the step did not), most likely because each small tensor allocated in
    # the middle of a step keeps glibc from reusing the step's freed buffers.
    loss, start = torch.zeros(()), time.perf_counter()
    for i in range(needed):
        if i == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        loss, _, state = step(X_all[i], Y_all[i], state)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    val_ids = data.val_ids[: args.val_tokens] if args.val_tokens else data.val_ids
    VX, VY = batches.eval_batches(val_ids, args.batch_size, args.num_steps)
    val_loss = train.evaluate(model, VX.to(device), VY.to(device))
    return {
        "output": "adaptive softmax" if config.adaptive_softmax else "full softmax",
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokens_per_s": args.batches * args.batch_size * args.num_steps / seconds,
        "last_train_loss": float(loss),
        "val_ppl": train.perplexity(val_loss),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=200, help="timed batches per model")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches before timing")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--num-steps", type=int, default=35)
    parser.add_argument("--cell", default="lstm", choices=("rnn", "gru", "lstm"))
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--embedding", type=int, default=256)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--cutoffs", type=comma_ints, default=(), help="e.g. 2000,5000")
    parser.add_argument("--optimizer", default="adam", choices=OPTIMIZERS)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--clip", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--val-tokens", type=int, default=0, help="0: all of ptb's valid file")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    if args.batches < 1 or args.warmup < 0:
        parser.error("--batches must be at least 1 and --warmup at least 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = train.resolve_device(args.device)
    data = prepare("ptb", "words", None, 0.1, args.batch_size, args.num_steps)
    full = ModelConfig(
        cell=args.cell,
        impl="torch",
        hidden=args.hidden,
        layers=args.layers,
        embedding=args.embedding,
    )
    configs = [full, replace(full, adaptive_softmax=True, cutoffs=args.cutoffs)]
    rows = [measure(config, data, args, device) for config in configs]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(
        f"ptb, V={len(data.vocab):,}, {args.cell} H={args.hidden} E={args.embedding} "
        f"L={args.layers}, B={args.batch_size} T={args.num_steps}, {args.batches} timed batches, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(f"{'output':<18}{'parameters':>12}{'tokens/s':>12}{'val ppl':>10}")
    for row in rows:
        print(
            f"{row['output']:<18}{row['parameters']:>12,}{row['tokens_per_s']:>12,.0f}"
            f"{row['val_ppl']:>10.1f}"
        )
    print(f"speed-up: {rows[1]['tokens_per_s'] / rows[0]['tokens_per_s']:.2f} x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

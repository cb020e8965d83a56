"""The rnnlab command line: parse, call the library, report.

    rnnlab data timemachine --mode d2l
    rnnlab train --out runs/tm                      # timemachine, the notes' 512-unit RNN
    rnnlab generate runs/tm --prefix "time traveller " --length 100
    rnnlab eval runs/tm --json
    rnnlab bench --device cpu

Exit status: 0 success; 2 a problem with the input, options or files, including a
loss that stopped being finite (one line "rnnlab: error: ..." on stderr, no
traceback); 130/143 training stopped by SIGINT/SIGTERM after saving a checkpoint.
Anything else (a traceback, status 1) is a bug in rnnlab.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import List, Optional

from . import __version__
from .errors import RnnlabError

KNOWN_CORPORA = ("timemachine", "tinyshakespeare", "ptb")
SOURCE_HELP = (f"a built-in corpus ({', '.join(KNOWN_CORPORA)}) or the path of a UTF-8 text "
               f"file or of a folder of .txt files")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, and keeps the description's line breaks."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default:" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text  # already says it, or a flag/optional value whose help explains it
        return super()._get_help_string(action)


# ------------------------------------------------------------------ train options
# (name, type, choices, help); defaults come from TrainConfig so they are written once.
TRAIN_OPTIONS = [
    ("mode", str, ("d2l", "letters", "chars", "words"),
     "tokenization: d2l (the book's letters, lines joined), letters (a-z and space), chars "
     "(every character), words (whitespace words + <eos>)"),
    ("model", str, ("rnn", "gru", "lstm"), "recurrent cell"),
    ("impl", str, ("scratch", "torch", "fused"),
     "implementation: scratch (the book's loops), torch (torch.nn), fused (fast, same function "
     "as scratch)"),
    ("hidden", int, None, "hidden units H"),
    ("layers", int, None, "stacked recurrent layers L"),
    ("dropout", float, None, "dropout on layer outputs (--impl torch)"),
    ("embedding", int, None, "embedding size; 0 feeds one-hot vectors (--impl torch)"),
    ("tie-weights", bool, None, "share the embedding and output matrices (--impl torch; needs "
     "--embedding equal to --hidden)"),
    ("batch-size", int, None, "minibatch size B (parallel streams)"),
    ("num-steps", int, None, "time steps T per minibatch (truncated backpropagation length)"),
    ("sampling", str, ("sequential", "random"),
     "sequential: state carried from batch to batch; random: shuffled subsequences, fresh state"),
    ("epochs", int, None, "epochs to train (on --resume, a larger number trains longer)"),
    ("lr", float, None, "learning rate"),
    ("optimizer", str, ("sgd", "adam", "adamw"), "optimizer"),
    ("clip", float, None, "clip the gradient to this global L2 norm"),
    ("val-frac", float, None, "fraction of the text, at its end, held out for validation "
     "(ptb uses its own valid file)"),
    ("max-tokens", int, None, "use only the first N tokens of the corpus"),
    ("device", str, ("auto", "cpu", "cuda"), "where to train; auto picks cuda when a GPU is "
     "available"),
    ("seed", int, None, "random seed (initialization, batch order, dropout)"),
    ("prefix", str, None, "prompt of the greedy samples printed during training"),
    ("sample-every", int, None, "print a greedy sample every N epochs (0: only at the end)"),
    ("checkpoint-every", int, None, "also checkpoint every N batches (0: at the end of each "
     "epoch only)"),
    ("threads", int, None, "CPU threads for torch (0: torch's default, one per core); 1 is "
     "often faster on a machine whose cores are busy with other work"),
]


def add_train_options(parser: argparse.ArgumentParser) -> None:
    from .config import TrainConfig

    defaults = {f.name: f.default for f in fields(TrainConfig)}
    parser.add_argument("source", nargs="?", default=argparse.SUPPRESS, metavar="SOURCE",
                        help=SOURCE_HELP + f" (default: {defaults['source']})")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", default=argparse.SUPPRESS,
                        help="the run directory: config, vocabulary, checkpoints, metrics, plot")
    for name, kind, choices, text in TRAIN_OPTIONS:
        key = name.replace("-", "_")
        default = defaults[key]
        shown = "all" if default is None else default
        # Defaults are SUPPRESSed so that the options given explicitly can be told apart
        # (they are the ones --resume compares with the run's config.json).
        if kind is bool:
            parser.add_argument(f"--{name}", action="store_true", default=argparse.SUPPRESS,
                                help=f"{text} (default: off)")
        else:
            parser.add_argument(f"--{name}", type=kind, choices=choices,
                                default=argparse.SUPPRESS, metavar=None if choices else
                                {int: "N", float: "X", str: "TEXT"}[kind],
                                help=f"{text} (default: {shown})")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in RUN_DIR from its last checkpoint; options given "
                             "must agree with its config.json (except --epochs, --device, "
                             "--prefix, --sample-every, --checkpoint-every, --threads)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar and no per-epoch log lines (default: off)")


# ------------------------------------------------------------------ the parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnlab", formatter_class=HelpFormatter,
        description="Recurrent neural network language models (d2l's RNN chapter as a tool).")
    parser.add_argument("--version", action="version", version=f"rnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("data", formatter_class=HelpFormatter,
                       help="show a corpus' token count, vocabulary and a sample",
                       description="Tokenize a corpus and show its token count, vocabulary size, "
                                   "most frequent tokens and a sample.")
    p.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("--mode", default="letters", choices=("d2l", "letters", "chars", "words"),
                   help="tokenization mode")
    p.add_argument("--max-tokens", type=int, default=None, metavar="N",
                   help="use only the first N tokens (default: all)")
    p.add_argument("--top", type=int, default=10, metavar="K", help="how many frequent tokens to list")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text (default: text)")

    p = sub.add_parser("train", formatter_class=HelpFormatter, help="train a language model",
                       description="Train a language model into a run directory; --resume "
                                   "continues it. Ctrl-C (SIGINT) or SIGTERM stops after the "
                                   "current batch and saves a checkpoint.")
    add_train_options(p)

    p = sub.add_parser("generate", formatter_class=HelpFormatter,
                       help="continue a prompt with a trained model",
                       description="Print the prefix followed by text generated by a trained run "
                                   "(greedy by default; --temperature > 0 samples).")
    p.add_argument("run", metavar="RUN_DIR", help="the --out folder of a train run")
    p.add_argument("--prefix", default=None, metavar="TEXT",
                   help="the prompt (default: the run's --prefix)")
    p.add_argument("--length", type=int, default=100, metavar="N", help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.0, metavar="T",
                   help="0: greedy (most likely token); > 0: sample from softmax(logits / T)")
    p.add_argument("--top-k", type=int, default=0, metavar="K",
                   help="sample only among the K most likely tokens (0: all)")
    p.add_argument("--seed", type=int, default=None, metavar="S",
                   help="random seed for sampling (default: unseeded)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"),
                   help="where to run the model")

    p = sub.add_parser("eval", formatter_class=HelpFormatter,
                       help="perplexity and bits per token on held-out text",
                       description="Report perplexity and bits per token of a trained run on its "
                                   "validation split (default), on a built-in corpus' split, or "
                                   "on a held-out file.")
    p.add_argument("run", metavar="RUN_DIR", help="the --out folder of a train run")
    p.add_argument("source", nargs="?", default=None, metavar="SOURCE",
                   help="held-out text: " + SOURCE_HELP + " (default: the run's own validation "
                        "split)")
    p.add_argument("--split", default=None, choices=("valid", "test"),
                   help="for a built-in corpus with splits (ptb): which one (default: the run's "
                        "validation split)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"),
                   help="where to run the model")
    p.add_argument("--json", action="store_true", help="print one JSON object (ppl, bpt, tokens) (default: text)")

    p = sub.add_parser("bench", formatter_class=HelpFormatter,
                       help="time the implementations (tokens per second)",
                       description="Time training steps of each implementation and cell.")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to time")
    p.add_argument("--impls", default="scratch,torch,fused", metavar="LIST",
                   help="comma-separated implementations")
    p.add_argument("--kinds", default="rnn,gru,lstm", metavar="LIST",
                   help="comma-separated cells")
    p.add_argument("--hidden", default="256,512", metavar="LIST",
                   help="comma-separated hidden sizes")
    p.add_argument("--batches", type=int, default=20, metavar="N",
                   help="timed batches per configuration")
    p.add_argument("--json", action="store_true", help="print the rows as JSON (default: a table)")
    return parser


# ------------------------------------------------------------------ commands

def cmd_data(args) -> int:
    from .data import read_tokens
    from .tokenize import detokenize
    from .vocab import Vocab

    if args.max_tokens is not None and args.max_tokens <= 0:
        raise RnnlabError(f"--max-tokens must be a positive whole number, got {args.max_tokens}")
    if args.top < 0:
        raise RnnlabError(f"--top must be 0 or more, got {args.top}")
    tokens = read_tokens(args.source, args.mode, args.max_tokens)
    vocab = Vocab(tokens)
    top = [[token, count] for token, count in vocab.token_freqs[:args.top]]
    sample = detokenize(tokens[:200 if args.mode != "words" else 40], args.mode)
    if args.json:
        print(json.dumps({"source": args.source, "mode": args.mode, "tokens": len(tokens),
                          "vocab_size": len(vocab), "top": top, "sample": sample},
                         ensure_ascii=False))
        return 0
    print(f"{args.source} (mode {args.mode}): {len(tokens):,} tokens, vocabulary of "
          f"{len(vocab):,} (with <unk>)")
    print("most frequent: " + ", ".join(f"{t!r} {c:,}" for t, c in top))
    print(f"sample: {sample!r}")
    return 0


def cmd_train(args) -> int:
    from .config import TrainConfig
    from .corpus import is_builtin
    from .runner import fit

    given = {k: v for k, v in vars(args).items() if k not in ("command", "out", "resume", "quiet",
                                                              "func")}
    if "source" in given and not is_builtin(given["source"]) and Path(given["source"]).exists():
        # Record where the text is, so that --resume and eval work from any folder.
        given["source"] = str(Path(given["source"]).expanduser().resolve())
    # On --resume, fit() starts from the run's config.json and validates the allowed changes.
    cfg = None if args.resume else TrainConfig(**given)
    return fit(cfg, Path(args.out), resume=args.resume, given=given, quiet=args.quiet)


def cmd_generate(args) -> int:
    import torch

    from .checkpoint import load_run
    from .data import prefix_tokens
    from .generate import MAX_LENGTH, generate_ids
    from .runner import resolve_device
    from .tokenize import detokenize

    if not 1 <= args.length <= MAX_LENGTH:
        raise RnnlabError(f"--length must be between 1 and {MAX_LENGTH:,}, got {args.length}")
    if args.temperature < 0 or args.temperature != args.temperature:
        raise RnnlabError(f"--temperature must be 0 (greedy) or positive, got {args.temperature}")
    if args.top_k < 0:
        raise RnnlabError(f"--top-k must be 0 (all tokens) or positive, got {args.top_k}")
    device = resolve_device(args.device)
    cfg, vocab, model, _ = load_run(Path(args.run), device)
    prefix = cfg.prefix if args.prefix is None else args.prefix
    tokens = prefix_tokens(prefix, cfg.mode)
    if not tokens:
        raise RnnlabError(f"the prefix {prefix!r} has no tokens in mode {cfg.mode!r}; give "
                         f"--prefix with some text")
    missing = vocab.unknown(tokens)
    if missing:
        print(f"rnnlab: warning: prefix token(s) not in the run's vocabulary are read as <unk>: "
              f"{', '.join(repr(t) for t in missing)}", file=sys.stderr)
    with torch.no_grad():
        ids = generate_ids(model, vocab[tokens], args.length, temperature=args.temperature,
                           top_k=args.top_k, seed=args.seed, device=device)
    generated = detokenize(vocab.to_tokens(ids[len(tokens):]), cfg.mode)
    if cfg.mode == "words":
        print(prefix.rstrip() + " " + generated)
    else:
        print(prefix + generated)
    return 0


def cmd_eval(args) -> int:
    from .batches import eval_batches
    from .checkpoint import load_run
    from .corpus import is_builtin
    from .data import has_split, held_out_ids, prepare
    from .runner import resolve_device
    from .train import bits_per_token, evaluate, perplexity

    device = resolve_device(args.device)
    cfg, vocab, model, _ = load_run(Path(args.run), device)
    if args.source is None and args.split is None:
        ids = prepare(cfg.source, cfg.mode, cfg.max_tokens, cfg.val_frac, cfg.batch_size,
                      cfg.num_steps, vocab=vocab).val_ids
        what = f"the validation split of {cfg.source}"
    else:
        source = args.source if args.source is not None else cfg.source
        split = args.split or "train"
        if args.split and not has_split(source, args.split):
            raise RnnlabError(f"{source!r} has no {args.split!r} split (only built-in ptb has "
                             f"valid/test files); leave out --split, or give a held-out file")
        if is_builtin(source) and split == "train" and source == cfg.source:
            raise RnnlabError(f"{source} is the run's training text; leave out SOURCE for its "
                             f"validation split, or give --split or a held-out file")
        ids = held_out_ids(source, cfg.mode, vocab, split)
        what = f"{source}" + (f" ({args.split})" if args.split else "")
    X, Y = eval_batches(ids, cfg.batch_size, cfg.num_steps)
    loss = evaluate(model, X.to(device), Y.to(device))
    result = {"ppl": perplexity(loss), "bpt": bits_per_token(loss), "tokens": int(Y.numel()),
              "loss": loss, "source": what}
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(f"{what}: perplexity {result['ppl']:.3f}, {result['bpt']:.4f} bits per token "
              f"over {result['tokens']:,} tokens")
    return 0


def _list(text: str, name: str, convert=str) -> tuple:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise RnnlabError(f"--{name} is empty; give a comma-separated list")
    try:
        return tuple(convert(t) for t in items)
    except ValueError:
        raise RnnlabError(f"--{name} {text!r} is not a comma-separated list of numbers") from None


def cmd_bench(args) -> int:
    from .models import IMPLS, KINDS
    from .runner import resolve_device

    impls, kinds = _list(args.impls, "impls"), _list(args.kinds, "kinds")
    hidden = _list(args.hidden, "hidden", int)
    for name, values, allowed in (("impls", impls, IMPLS), ("kinds", kinds, KINDS)):
        bad = [v for v in values if v not in allowed]
        if bad:
            raise RnnlabError(f"--{name}: unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
    if any(h <= 0 for h in hidden) or args.batches <= 0:
        raise RnnlabError("--hidden sizes and --batches must be positive")
    resolve_device(args.device)
    try:
        from .bench import format_table, run_bench
    except ImportError as e:
        raise RnnlabError(f"the benchmark module is not available in this installation ({e})") \
            from None
    rows = run_bench(device=args.device, impls=impls, kinds=kinds, hidden_sizes=hidden,
                     batches=args.batches)
    print(json.dumps(rows) if args.json else format_table(rows))
    return 0


COMMANDS = {"data": cmd_data, "train": cmd_train, "generate": cmd_generate, "eval": cmd_eval,
            "bench": cmd_bench}


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``rnnlab`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except RnnlabError as e:
        print(f"rnnlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rnnlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `rnnlab generate ... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())

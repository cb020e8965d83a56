"""A nanoGPT checkpoint scored as ``rnnlab eval --block-size N`` scores ours: every
non-overlapping N-character block of its val.bin, each from an empty context, every target.

    python benchmarks/nanogpt_blocks.py NANOGPT_DIR OUT_DIR VAL_BIN [N]

NANOGPT_DIR is a checkout of karpathy/nanoGPT (its model.py is imported from there, not
copied), OUT_DIR the folder its train.py wrote ckpt.pt to (the best evaluation's weights),
N the block size (default: the model's own). nanoGPT's printed "val loss" is an estimate
from ``eval_iters`` random batches; this is the whole held-out text, as our figure is.
Used for the side-by-side run of docs/results.md section 6.
"""

import sys

import numpy as np
import torch
import torch.nn.functional as F


def main() -> None:
    folder, out_dir, val_bin = sys.argv[1:4]
    sys.path.insert(0, folder)
    from model import GPT, GPTConfig  # nanoGPT's, from its own checkout

    ckpt = torch.load(f"{out_dir}/ckpt.pt", map_location="cpu")
    model = GPT(GPTConfig(**ckpt["model_args"]))
    weights = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    model.load_state_dict(weights)
    model.eval()
    data = torch.from_numpy(np.fromfile(val_bin, dtype=np.uint16).astype(np.int64))
    size = int(sys.argv[4]) if len(sys.argv) > 4 else ckpt["model_args"]["block_size"]
    blocks = (len(data) - 1) // size
    x = data[: blocks * size].view(blocks, size)  # (blocks, N): the inputs
    y = data[1 : blocks * size + 1].view(blocks, size)  # (blocks, N): the next characters
    total = 0.0
    with torch.no_grad():
        for i in range(0, blocks, 64):
            logits, _ = model(x[i : i + 64], y[i : i + 64])  # (b, N, vocab)
            total += F.cross_entropy(
                logits.flatten(0, 1), y[i : i + 64].flatten(), reduction="sum"
            ).item()
    print(
        f"{blocks} blocks of {size}: loss {total / (blocks * size):.4f} nats per character; "
        f"nanoGPT's own estimate {ckpt['best_val_loss']:.4f} at iteration {ckpt['iter_num']}"
    )


if __name__ == "__main__":
    main()

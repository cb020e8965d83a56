"""Training speed of the scratch, torch.nn and fused models on The Time Machine.

    python benchmarks/bench.py --device cpu --hidden 256,512
    python benchmarks/bench.py --cells lstm --hidden 256 --batches 40 --out results.json

The same as ``rnnlab bench`` (it calls it); see benchmarks/README.md for what it
measures and how.
"""

import sys

from rnnlab.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))

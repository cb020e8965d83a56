"""Training speed of the scratch, torch.nn and fused models on The Time Machine.

    RNNLAB_DATA_DIR=/path/to/data python benchmarks/bench.py --device cpu --hidden 256,512
    python benchmarks/bench.py --kinds lstm --hidden 256 --batches 40 --out results.json

The same as ``rnnlab bench``; see benchmarks/README.md for what it measures and how.
"""
import sys

from rnnlab.bench import main
from rnnlab.errors import RnnlabError

if __name__ == "__main__":
    try:
        sys.exit(main())
    except RnnlabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)

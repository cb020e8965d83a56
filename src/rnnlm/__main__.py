"""python -m rnnlm: the same as the rnnlm command."""
import sys

from .cli import main

sys.exit(main())

"""python -m rnnlab: the same as the rnnlab command."""

import sys

from .launch import main

sys.exit(main())

"""The ``rnnlab`` command's entry point: quiet on Ctrl-C from its first instant.

Until training installs its own handling (which finishes the batch and saves a
checkpoint), a SIGINT ends the process at once with status 130 and no traceback.
At once: a KeyboardInterrupt raised while torch imports its native extensions can
abort the process with a C++ error instead, so none is raised while starting.
"""

import os
import signal
import sys


def _stop_at_once(signum, frame):
    os._exit(128 + signum)


signal.signal(signal.SIGINT, _stop_at_once)


def main() -> int:
    """Run the command line (see :func:`rnnlab.cli.main`)."""
    from .cli import main as run_command

    return run_command()


if __name__ == "__main__":
    sys.exit(main())

"""Keep freed memory in the process, so that each training step reuses its buffers.

glibc's malloc hands allocations above its mmap threshold (which never exceeds
32 MiB) fresh pages from the system and returns them when they are freed. A
training step whose activations exceed that size then pays one page fault per
4 KiB page touched, every step; at large batches that halved the fused model's
speed (measured in docs/fused-cpu.md, "Page faults at large batches").

:func:`keep_freed_memory` tells malloc to serve every allocation from its heap
and to keep freed memory there, so the next step finds its pages already mapped.
The process's resident size then stays at its peak instead of falling between
steps. It changes nothing where the C library is not glibc.

The library's entry points that train or score call it (``rnnlab.fit.fit``,
``rnnlab.scoring.score_run``, ``rnnlab.bench.run_bench``, and ``--recipe auto``'s
timings of a step), so that a notebook trains as fast as the command line: a word model's
output layer alone makes blocks of about 28 MB a step (Penn Treebank, batch 20 x 35),
and ``ptb-bf16`` trained through ``rnnlab.fit.fit`` in a plain process at 12,143 and
14,776 tokens/s against 18,225 and 18,921 with freed memory kept (docs/results.md §4).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# mallopt's parameter numbers (glibc's malloc.h)
M_TRIM_THRESHOLD = -1  # free memory at the heap's top kept before returning it
M_MMAP_MAX = -4  # how many allocations may be served by mmap at once
KEEP_UP_TO = 2**31 - 1  # bytes of free heap top kept (mallopt takes an int)


def libc():
    """The C library (ctypes), or None where it cannot be found or loaded."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


@functools.cache
def keep_freed_memory() -> bool:
    """Serve allocations from the heap and keep freed memory; whether glibc accepted it.
    Once per process: the setting lasts, and each call would look for the C library again."""
    mallopt = getattr(libc(), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_UP_TO))

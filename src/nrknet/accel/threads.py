"""Intra-op thread limits for memory-bound stretches of work.

PyTorch runs every large elementwise operation on all intra-op threads. For
copies, paddings and the 3-tap atom filters a second thread adds little (they
are limited by memory bandwidth), but every parallel region makes the threads
meet at a barrier; when other processes share the cores, a descheduled thread
turns each of those meetings into a wait of milliseconds, which for long chains
of small operations costs more than the work. The fast paths therefore run
such chains on one thread and leave the compute-bound convolutions and matrix
products on all of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

#: Threads for memory-bound chains of operations (``None``: PyTorch's setting).
MEMORY_BOUND_THREADS: int | None = 1


@contextmanager
def limit_threads(threads: int | None = MEMORY_BOUND_THREADS) -> Iterator[None]:
    """Run the block with at most ``threads`` intra-op threads (restored afterwards)."""
    previous = torch.get_num_threads()
    if threads is None or previous <= threads:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)

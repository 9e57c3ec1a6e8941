"""How many threads torch's CPU ops use, for one block of code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block on ``count`` torch threads (None or 0: torch's setting as it is).

    Small ops lose on several threads on a busy machine: each op waits for the others to
    be scheduled, and that wait is most of the time. A head's step is a handful of small
    ops (a 1280 x 512 matmul, Adam over its weights): measured 8x slower on 2 threads than
    on 1 for a group of 3 heads, 20x for a probe's L-BFGS fits, on 2 cores at load 6-9;
    the bootstrap's counting 5-50x (benchmarks/metric_kernel.py, load 12).
    """
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)

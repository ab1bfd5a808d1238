"""Process-wide settings of the torch runtime."""

from __future__ import annotations

import os


def set_threads() -> None:
    """One intra-op thread unless CATS_THREADS says otherwise: the models are small, and two
    processes each spinning two OpenMP threads on a two-core machine run ~30x slower."""
    import torch

    torch.set_num_threads(int(os.environ.get("CATS_THREADS", "1")))

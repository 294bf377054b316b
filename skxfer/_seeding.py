"""Seeds from ``random_state``, applied without touching the caller's RNGs."""

from contextlib import contextmanager

import numpy as np
import torch
from sklearn.utils import check_random_state


def derive_seed(random_state):
    """One int32 seed drawn from ``check_random_state(random_state)``."""
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


@contextmanager
def seeded(seed, device="cpu"):
    """Run a block under torch seed ``seed`` without touching the caller's RNGs.

    The CPU generator (and the CUDA generator of ``device``) are forked, seeded,
    and restored on exit, so fitting never changes what the user's own
    ``torch.rand`` calls return.
    """
    device = torch.device(device)
    cuda_devices = []
    if device.type == "cuda":
        cuda_devices = [
            device.index if device.index is not None else torch.cuda.current_device()
        ]
    with torch.random.fork_rng(devices=cuda_devices):
        torch.random.default_generator.manual_seed(seed)
        for index in cuda_devices:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield

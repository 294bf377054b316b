"""Test configuration: one torch thread, seeded RNGs, small real data."""

import numpy as np
import pytest
import torch

# Two shared cores: torch's one-thread-per-core default can run many times
# slower when another process is busy, so the whole suite runs on one thread.
torch.set_num_threads(1)
torch.set_num_interop_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def digits():
    """load_digits scaled to [0, 1], as float64 like scikit-learn returns it."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X / 16.0, y

"""Predictions of a fitted network: rows in bit-stable blocks, streamed images."""

import numpy as np
import torch

from ._mlp import TransferNet
from ._threads import largest_product, sized_threads
from ._validation import check_magnitude, validate_table

# rows per matrix product at prediction (see infer_rows)
ROW_BLOCK = 16
# feature rows up to this size move to the GPU at once for prediction
_DEVICE_ROWS_BYTES = 1 << 28


def validate_rows(estimator, X):
    """``validate_data`` for prediction, with a fast path for plain arrays.

    A float ndarray of the fitted width, all finite, fitted without feature
    names, is what ``validate_data`` would return (cast to float32) -- at a
    fraction of its cost for one row. Anything else goes through
    ``validate_data`` and gets scikit-learn's checks and messages.
    """
    if (
        type(X) is np.ndarray and X.ndim == 2 and X.dtype.kind == "f"
        and X.shape[1] == estimator.n_features_in_ and len(X)
        and not hasattr(estimator, "feature_names_in_")
        and np.isfinite(X).all()
    ):
        X = X.astype(np.float32, copy=False)
    else:
        X = validate_table(estimator, X, dtype=np.float32, reset=False)
    check_magnitude(X)
    return X


def infer_rows(module, X, device):
    """Outputs of the trained ``module`` for feature rows ``X``, on the CPU.

    Rows run in blocks of exactly ``ROW_BLOCK`` (the last one padded with
    zeros): every row goes through matrix products of one shape, so its
    prediction is the same, bit for bit, alone or in any batch -- float32
    products of other shapes can differ in the last bits. The block is small,
    so one row costs little (``benchmarks/bench_predict.py``).
    """
    if module.training:
        module.eval()
    device = torch.device(device)
    rows = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    n, block = len(rows), ROW_BLOCK
    outputs = []
    with torch.inference_mode(), sized_threads(largest_product(module, block),
                                               device):
        if device.type != "cpu" and rows.numel() * 4 <= _DEVICE_ROWS_BYTES:
            rows = rows.to(device)
        for start in range(0, n, block):
            chunk = rows[start : start + block].to(device, non_blocking=True)
            m = len(chunk)
            if m < block:
                chunk = torch.cat([chunk, chunk.new_zeros((block - m,)
                                                          + chunk.shape[1:])])
            outputs.append(module(chunk)[:m].float())
    if not outputs:
        raise ValueError("Found array with 0 sample(s); pass at least one row.")
    return torch.cat(outputs).cpu()


def stream_images(module, extractor, X, device):
    """Outputs of the whole trained network for images ``X``, batch by batch.

    The extractor decodes and preprocesses; memory holds a few batches.
    """
    module.eval()
    with torch.inference_mode(), sized_threads(None, device):
        return torch.cat([
            module(batch.to(device, non_blocking=True)).float().cpu()
            for batch in extractor.iter_preprocessed(X)
        ])


def network_of(plan, extractor, net_module):
    """The trained network as one torch module, by the model's plan.

    Features then head: skorch trained the head on the extractor's features,
    so the network is the two together (the same modules, not copies), in
    eval mode. Otherwise the module skorch trained.
    """
    if plan.features_first:
        return TransferNet(extractor.backbone_, net_module).eval()
    return net_module

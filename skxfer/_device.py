"""Resolve the ``device`` parameter of skxfer estimators."""

import multiprocessing
import re

import torch

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def device_is_valid(device):
    """Whether ``device`` has a form skxfer understands (checked before fit)."""
    if isinstance(device, torch.device):
        return True
    return isinstance(device, str) and bool(_DEVICE_PATTERN.match(device))


def resolve_device(device, owner="estimator"):
    """Turn the ``device`` parameter into a concrete torch device string.

    ``"auto"`` is CUDA when available (see :func:`auto_device`), else CPU.
    Asking for an accelerator that is not there is an error that says what to
    pass instead.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return auto_device()
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"{owner} was given device={device!r}, but CUDA is not available "
                "on this machine. Use device='auto' (CUDA when present, else CPU) "
                "or device='cpu'."
            )
        if ":" in device:
            index = int(device.split(":")[1])
            if index >= torch.cuda.device_count():
                raise ValueError(
                    f"{owner} was given device={device!r}, but this machine has "
                    f"{torch.cuda.device_count()} CUDA device(s). Use 'cuda:0' .. "
                    f"'cuda:{torch.cuda.device_count() - 1}' or device='auto'."
                )
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"{owner} was given device='mps', but MPS is not available on this "
            "machine. Use device='auto' or device='cpu'."
        )
    return device


def auto_device():
    """The device ``device="auto"`` means in this process.

    The CPU without CUDA. With CUDA, ``"cuda"``: the first GPU this process
    sees, which is the one an engine assigned when it restricts
    ``CUDA_VISIBLE_DEVICES`` per worker (Ray's ``num_gpus``, dask-cuda). In a
    worker of joblib's default (loky) pool, which assigns nothing, workers
    spread over the GPUs they see: worker ``k`` (its process name
    ``LokyProcess-k``) takes ``cuda:(k - 1) % n_gpus``.
    """
    if not torch.cuda.is_available():
        return "cpu"
    index = loky_worker_index()
    count = torch.cuda.device_count()
    if index is None or count < 2:
        return "cuda"
    return f"cuda:{index % count}"


_LOKY_NAME = re.compile(r"^Loky\w*Process-(?:\d+:)*(\d+)$")


def loky_worker_index():
    """This process's 0-based index in a loky pool, or None outside one.

    loky names its workers ``LokyProcess-1``, ``LokyProcess-2``, ... in the
    order it starts them (a replaced worker takes the next number).
    """
    match = _LOKY_NAME.match(multiprocessing.current_process().name)
    return None if match is None else int(match.group(1)) - 1


def cpu_module(module):
    """``module`` itself when it is on the CPU, else a CPU copy (for pickling).

    A pickle that holds CUDA tensors cannot be loaded on a machine without a
    GPU; fitted skxfer objects therefore pickle their networks from the CPU.
    """
    if module is None:
        return None
    tensors = list(module.parameters()) + list(module.buffers())
    if all(t.device.type == "cpu" for t in tensors):
        return module
    import copy

    return copy.deepcopy(module).cpu()


def usable_device(device, owner):
    """The fitted ``device`` if this machine has it, else 'cpu' with a warning."""
    import warnings

    if str(device).startswith("cuda") and not torch.cuda.is_available():
        warnings.warn(
            f"This {owner} was fitted on {device!r}, which this machine does not "
            "have; it runs on the CPU.",
            UserWarning,
            stacklevel=3,
        )
        return "cpu"
    return device

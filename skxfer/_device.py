"""Resolve the ``device`` parameter of skxfer estimators."""

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

    ``"auto"`` is CUDA when available, else CPU. Asking for an accelerator that
    is not there is an error that says what to pass instead.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
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

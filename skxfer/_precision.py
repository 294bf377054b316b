"""Mixed precision: what a ``mixed_precision`` setting means on a device.

One rule for the extractor and the transfer estimators: False is float32;
True is float16 on CUDA and bfloat16 elsewhere; 'bf16' and 'fp16' choose.
The network runs under ``torch.autocast`` with that type; weights stay
float32. Training in float16 scales the loss (``torch.amp.GradScaler``) so
that small gradients do not vanish.
"""

import torch

from ._validation import is_bool

_NAMES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# the autocast type a net trains under, by name (a net keeps the name: it pickles
# and compares as a plain string)
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}

SETTINGS = "a bool, 'bf16' or 'fp16'"


def is_precision(value):
    """Whether ``value`` is a ``mixed_precision`` setting."""
    return is_bool(value) or (isinstance(value, str) and value in _NAMES)


def autocast_dtype(setting, device_type):
    """The autocast type ``setting`` means on ``device_type``, or None (float32)."""
    if isinstance(setting, str):
        return _NAMES[setting]
    if not setting:
        return None
    return torch.float16 if device_type == "cuda" else torch.bfloat16


def training_precision(setting, device):
    """The autocast type a net trains under on ``device``, by name, or None.

    A setting the device cannot train in is refused, naming the fix.
    """
    device = torch.device(device)
    dtype = autocast_dtype(setting, device.type)
    if dtype is None:
        return None
    if (dtype is torch.bfloat16 and device.type == "cuda"
            and not torch.cuda.is_bf16_supported()):
        raise ValueError(
            f"mixed_precision={setting!r}: this GPU has no bfloat16 support. Use "
            "mixed_precision=True ('fp16', with gradient scaling), or False."
        )
    if dtype is torch.float16 and device.type != "cuda" and not hasattr(
            torch.amp, "GradScaler"):  # torch < 2.3: gradient scaling on CUDA only
        raise ValueError(
            f"mixed_precision={setting!r} on {device.type}: this torch scales "
            "float16 gradients on CUDA only. Use 'bf16' (or True), or a newer torch."
        )
    return str(dtype).rpartition(".")[2]


def grad_scaler(device_type):
    """A new gradient scaler for float16 training on ``device_type``."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(device_type)
    return torch.cuda.amp.GradScaler()  # pragma: no cover - torch < 2.3

"""Images in any form a user has -> batches of tensors, decoded lazily.

Accepted: uint8 or float arrays in NHWC or NCHW (float in [0, 1]), grayscale
arrays (N, H, W), lists of PIL images, of arrays (sizes may differ), or of file
paths (also a numpy array or pandas Series of paths). In-memory arrays are
converted and transformed a whole batch at a time; lists are decoded one image
at a time inside a ``Dataset``, so a ``DataLoader`` with workers overlaps the
decoding with the model and memory holds one batch, not the collection.
"""

import os
import warnings

import numpy as np
import torch
from torch.utils.data import Dataset

_CHANNELS = (1, 3, 4)


class ImageReadError(ValueError):
    """An image could not be read; the message names its index and path."""


def is_path(item):
    return isinstance(item, (str, os.PathLike))


def _is_pil(item):
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        return False
    return isinstance(item, Image.Image)


def as_image_collection(X):
    """Normalise ``X`` to an ndarray batch or a list of single images.

    Returns ``("array", ndarray NCHW)`` or ``("list", list)``.
    """
    if hasattr(X, "iloc") and getattr(X, "ndim", 1) == 1:  # pandas Series
        X = X.tolist()
    elif hasattr(X, "iloc"):  # a DataFrame with one column of paths
        if X.shape[1] != 1:
            raise ValueError(
                "A DataFrame of images must have one column (of file paths); "
                f"got {X.shape[1]} columns. Pass df['path_column']."
            )
        X = X.iloc[:, 0].tolist()
    if isinstance(X, np.ndarray) and X.dtype.kind in "biuf":
        return "array", array_to_nchw(X)
    if isinstance(X, np.ndarray):
        X = X.tolist()
    if is_path(X) or _is_pil(X):
        raise ValueError(
            "Expected a collection of images, got a single "
            f"{type(X).__name__}. Wrap it in a list: [image]."
        )
    if not isinstance(X, (list, tuple)):
        raise ValueError(
            "Images must be an array (N, H, W[, C]) or (N, C, H, W), or a list of "
            f"PIL images, arrays or file paths; got {type(X).__name__}."
        )
    if len(X) == 0:
        raise ValueError("Found an empty collection of images; pass at least one.")
    for i, item in enumerate(X):
        if not (is_path(item) or _is_pil(item) or isinstance(item, np.ndarray)):
            raise ValueError(
                f"Image {i} is a {type(item).__name__}; expected a PIL image, an "
                "array or a file path."
            )
    return "list", list(X)


def array_to_nchw(X):
    """An (N, H, W), (N, H, W, C) or (N, C, H, W) array -> (N, C, H, W).

    When both layouts fit (a (N, 3, 4, 4) batch: 3 channels of 4x4, or 3x4
    images of 4 channels?) the square images win; a shape that stays
    ambiguous is refused rather than guessed.
    """
    if X.ndim == 3:
        X = X[:, None, :, :]
    elif X.ndim != 4:
        raise ValueError(
            f"Found an image array with dim {X.ndim}; expected (n_images, height, "
            "width) for grayscale or 4 dimensions (n_images, height, width, "
            "channels) or (n_images, channels, height, width)."
        )
    if 0 in X.shape[1:]:
        raise ValueError(
            f"Found an image array of shape {X.shape}: images must have at least "
            "one pixel and one channel."
        )
    nhwc, nchw = X.shape[-1] in _CHANNELS, X.shape[1] in _CHANNELS
    if nhwc and nchw:
        square_nhwc = X.shape[1] == X.shape[2]
        square_nchw = X.shape[2] == X.shape[3]
        if square_nhwc == square_nchw:
            raise ValueError(
                f"Cannot tell the channel axis of an image array of shape "
                f"{X.shape}: both (N, H, W, C) and (N, C, H, W) fit. Pass a list "
                "of PIL images, or move the channels last with "
                "np.moveaxis(X, 1, -1) (they are then read as NHWC)."
            )
        nhwc, nchw = square_nhwc, square_nchw
    if nhwc:
        return np.moveaxis(X, -1, 1)
    if nchw:
        return X
    raise ValueError(
        f"Cannot tell the channel axis of an image array of shape {X.shape}: "
        "images need 1 (grayscale), 3 (RGB) or 4 (RGBA) channels on the last "
        "axis (NHWC) or the second (NCHW). For another number of channels, "
        "pass a module of your own with preprocessing= that handles them."
    )


def check_array_values(X):
    """Refuse NaN/inf and warn about float images outside [0, 1]."""
    if X.dtype.kind == "f":
        if not np.isfinite(X).all():
            raise ValueError("Input images contain NaN or infinity.")
        if X.size and (X.max() > 1.5 or X.min() < -0.5):
            warnings.warn(
                f"Float images are expected in [0, 1], but the values span "
                f"[{X.min():.4g}, {X.max():.4g}]. Divide by 255 (for 0-255), "
                "map [-1, 1] with (X + 1) / 2, or pass uint8 arrays.",
                UserWarning,
                stacklevel=3,
            )
    elif X.dtype.kind not in "ub":
        raise ValueError(
            f"Image arrays must be uint8 or float; got dtype {X.dtype}. Convert "
            "with X.astype(np.uint8) (0-255) or X.astype(np.float32) / 255."
        )


def to_tensor_batch(X):
    """A numpy NCHW batch -> a torch tensor (uint8 kept; floats as float32)."""
    X = np.ascontiguousarray(X)
    if X.dtype == np.bool_:
        X = X.astype(np.uint8) * 255
    elif X.dtype.kind == "f" and X.dtype != np.float32:
        X = X.astype(np.float32)
    elif not X.flags.writeable:  # a read-only memmap: torch wants its own copy
        X = X.copy()
    return torch.from_numpy(X)


def match_channels(x, channels):
    """Make the channel axis (-3) ``channels`` wide: gray -> RGB, RGBA -> RGB."""
    c = x.shape[-3]
    if channels is None or c == channels:
        return x
    if c == 4:  # drop alpha
        x = x[..., :3, :, :]
        c = 3
    if c == channels:
        return x
    if c == 1:
        return x.expand(*x.shape[:-3], channels, *x.shape[-2:])
    if c == 3 and channels == 1:  # ITU-R 601 luma, as PIL's convert("L")
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32)
        gray = (x.float() * weights.view(3, 1, 1)).sum(-3, keepdim=True)
        return gray.round().to(x.dtype) if x.dtype == torch.uint8 else gray
    raise ValueError(f"Cannot turn images of {c} channels into {channels}.")


def load_image(item, index, channels):
    """One item (path, PIL image or array) -> a CHW tensor."""
    try:
        if is_path(item):
            from PIL import Image

            with Image.open(item) as img:
                img.load()
                tensor = pil_to_tensor(img)
        elif _is_pil(item):
            tensor = pil_to_tensor(item)
        else:
            arr = np.asarray(item)
            if arr.ndim == 2:
                arr = arr[None]
            elif arr.ndim == 3 and arr.shape[-1] in _CHANNELS:
                arr = np.moveaxis(arr, -1, 0)
            elif arr.ndim != 3:
                raise ValueError(f"an image array of shape {arr.shape}")
            if arr.ndim == 3 and arr.shape[0] not in _CHANNELS and (
                arr.shape[-1] not in _CHANNELS
            ):
                raise ValueError(
                    f"an image array of shape {arr.shape}: images need 1, 3 or 4 "
                    "channels, on the first or the last axis"
                )
            check_array_values(arr)
            tensor = to_tensor_batch(arr)
    except Exception as err:
        where = f" ({str(item)!r})" if is_path(item) else ""
        raise ImageReadError(
            f"Could not read image {index}{where}: {err}"
        ) from err
    return match_channels(tensor, channels)


# PIL modes of more than 8 bits per pixel (16-bit PNGs open as 'I;16', or
# 'I' in older Pillow): scaled to float [0, 1] instead of clipped to 255
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def pil_to_tensor(img):
    """A PIL image -> a CHW tensor, upright (EXIF orientation applied).

    8-bit images give uint8; 16-bit ones give float32 in [0, 1].
    """
    from PIL import ImageOps

    if img.getexif().get(0x0112, 1) != 1:  # EXIF Orientation: not upright
        img = ImageOps.exif_transpose(img)
    if img.mode in _WIDE_MODES:
        arr = np.array(img, dtype=np.float32) / 65535.0
        return torch.from_numpy(np.clip(arr, 0.0, 1.0)[None])
    if img.mode == "F":
        return torch.from_numpy(np.array(img, dtype=np.float32)[None])
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
    arr = np.array(img)  # a writable copy (asarray of a PIL image is read-only)
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = np.moveaxis(arr, -1, 0)
    return torch.from_numpy(np.ascontiguousarray(arr))


def preprocess(x, transform):
    """Apply ``transform``; without one, scale uint8 to [0, 1] floats."""
    if transform is not None:
        return transform(x)
    if x.dtype == torch.uint8:
        return x.float() / 255
    return x


class ImageList(Dataset):
    """A list of images decoded (and transformed) one at a time."""

    def __init__(self, items, transform=None, channels=None):
        self.items = items
        self.transform = transform
        self.channels = channels

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return preprocess(load_image(self.items[i], i, self.channels), self.transform)


class ArrayImages(Dataset):
    """An in-memory NCHW array, served one transformed image per item."""

    def __init__(self, X, transform=None, channels=None):
        self.X = X
        self.transform = transform
        self.channels = channels

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return self._prepare(self.X[i])

    def _prepare(self, arr):
        """An image (CHW) or a batch (NCHW) of the array, as the network takes it."""
        return preprocess(match_channels(to_tensor_batch(arr), self.channels),
                          self.transform)


class Labelled(Dataset):
    """Pairs the items of an image dataset with targets: ``(image, y[i])``.

    With per-sample ``extras`` (e.g. ``{"sample_weight": w}``) the target is
    the dict ``{"y": y[i], name: extra[i], ...}``, as for in-memory data.
    """

    def __init__(self, images, y, extras=None):
        self.images = images
        self.y = y
        self.extras = extras or {}

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        if not self.extras:
            return self.images[i], self.y[i]
        return self.images[i], {
            "y": self.y[i], **{k: v[i] for k, v in self.extras.items()}
        }

    def subset(self, indices):
        from torch.utils.data import Subset

        indices = [int(i) for i in indices]
        return Labelled(Subset(self.images, indices), self.y[indices],
                        {k: v[indices] for k, v in self.extras.items()})


class ArrayBatches(ArrayImages):
    """An in-memory NCHW array, served one transformed batch per item."""

    def __init__(self, X, batch_size, transform=None, channels=None):
        super().__init__(X, transform, channels)
        self.batch_size = batch_size

    def __len__(self):
        return -(-len(self.X) // self.batch_size)

    def __getitem__(self, i):
        return self._prepare(self.X[i * self.batch_size : (i + 1) * self.batch_size])


def stack_images(batch):
    """``collate_fn`` for :class:`ImageList` with a clear error for mixed sizes."""
    shapes = {tuple(x.shape) for x in batch}
    if len(shapes) > 1:
        raise ValueError(
            f"Images of different sizes reached the model ({sorted(shapes)[:3]}"
            "...). Pass a transform that resizes them, e.g. "
            "preprocessing=torchvision.transforms.v2.Resize((224, 224))."
        )
    return torch.stack(batch)


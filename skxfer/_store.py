"""The feature store: outputs of frozen backbones, computed once per input.

A grid search over a pipeline with a frozen backbone sends every image through
the backbone once per fold and candidate; the store keeps each image's
features, keyed on content, so that every later request for the same image
through the same network is a look-up.

Keys never go stale:

- the network: a hash of its weights and buffers (the bytes), its class, and
  everything else that changes the numbers (layer, pooling, preprocessing,
  mixed precision, memory layout, device type);
- each input: the bytes of an array image (with dtype and shape), the pixels
  of a PIL image, or a file's absolute path with its size and modification
  time (nanoseconds).

The store lives once per process (never in a pickle: estimators only hold a
flag), holds at most ``max_bytes`` (least recently used entries go first), and
can mirror its entries to a folder so that another process, or the same
notebook after a restart, reads them instead of computing them; files are
written under a temporary name and renamed, so two processes writing the same
entry are safe.
"""

import hashlib
import os
import tempfile
import threading
from collections import OrderedDict

import numpy as np

_DEFAULTS = {"feature_store": True, "feature_store_bytes": 512 << 20,
             "feature_store_dir": None}
_config = dict(_DEFAULTS)


def set_config(feature_store=None, feature_store_bytes=None, feature_store_dir=None):
    """Configure the process-wide feature store.

    Parameters
    ----------
    feature_store : bool, default=None
        Switch the store on (the default) or off for every extractor whose
        ``feature_store`` parameter is ``"auto"``. None leaves it as it is.
    feature_store_bytes : int, default=None
        Memory budget of the store in bytes (default 512 MiB); the least
        recently used features go first. None leaves it as it is.
    feature_store_dir : str, path-like or False, default=None
        A folder to mirror the store to, so that other processes and later
        sessions read features instead of computing them. False: memory only.
        None leaves it as it is.

    Examples
    --------
    >>> import skxfer
    >>> skxfer.set_config(feature_store_bytes=256 << 20)
    >>> skxfer.get_config()["feature_store_bytes"]
    268435456
    >>> skxfer.set_config(feature_store_bytes=512 << 20)
    """
    if feature_store is not None:
        if not isinstance(feature_store, bool):
            raise ValueError(
                f"feature_store must be True or False; got {feature_store!r}.")
        _config["feature_store"] = feature_store
    if feature_store_bytes is not None:
        if not isinstance(feature_store_bytes, int) or feature_store_bytes < 0:
            raise ValueError("feature_store_bytes must be an int >= 0 (bytes); "
                             f"got {feature_store_bytes!r}.")
        _config["feature_store_bytes"] = feature_store_bytes
        STORE.trim()
    if feature_store_dir is not None:
        if feature_store_dir is False:
            _config["feature_store_dir"] = None
        else:
            os.makedirs(feature_store_dir, exist_ok=True)
            _config["feature_store_dir"] = os.fspath(feature_store_dir)


def get_config():
    """The feature store's settings, as :func:`set_config` takes them.

    Returns
    -------
    config : dict
        ``feature_store``, ``feature_store_bytes``, ``feature_store_dir``.
    """
    return dict(_config)


class FeatureStore:
    """Features by (network key, input key), within a memory budget."""

    def __init__(self):
        self._entries = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        # per network key: whether its output is pooled, so that a fit whose
        # first input is stored needs no probe forward
        self.meta = {}

    @property
    def nbytes(self):
        """Bytes of features held in memory."""
        return self._bytes

    def __len__(self):
        return len(self._entries)

    def clear(self):
        """Forget every feature held in memory (the folder, if any, stays)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self.meta.clear()

    def trim(self):
        with self._lock:
            self._trim()

    def _trim(self):
        budget = _config["feature_store_bytes"]
        while self._entries and self._bytes > budget:
            _, value = self._entries.popitem(last=False)
            self._bytes -= value.nbytes

    def get_many(self, net_key, keys):
        """Features for ``keys`` (None where missing), from memory or folder."""
        out = []
        folder = _config["feature_store_dir"]
        with self._lock:
            for key in keys:
                value = self._entries.get((net_key, key))
                if value is not None:
                    self._entries.move_to_end((net_key, key))
                out.append(value)
        if folder is not None:
            for i, key in enumerate(keys):
                if out[i] is None:
                    out[i] = _read(folder, net_key, key)
                    if out[i] is not None:
                        self._put(net_key, key, out[i])
        return out

    def put_many(self, net_key, keys, rows):
        folder = _config["feature_store_dir"]
        for key, row in zip(keys, rows, strict=True):
            row = np.array(row, dtype=np.float32)  # its own copy, read-only
            row.setflags(write=False)
            self._put(net_key, key, row)
            if folder is not None:
                _write(folder, net_key, key, row)

    def _put(self, net_key, key, row):
        with self._lock:
            old = self._entries.pop((net_key, key), None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[(net_key, key)] = row
            self._bytes += row.nbytes
            self._trim()


STORE = FeatureStore()


def clear_feature_store():
    """Empty the process-wide feature store (memory; a folder stays).

    Examples
    --------
    >>> import skxfer
    >>> skxfer.clear_feature_store()
    >>> skxfer.feature_store_info()["entries"]
    0
    """
    STORE.clear()


def feature_store_info():
    """How much the feature store holds.

    Returns
    -------
    info : dict
        ``entries`` (images held), ``bytes`` (their size in memory),
        ``max_bytes`` (the budget) and ``dir`` (the folder mirrored to, or
        None).
    """
    return {"entries": len(STORE), "bytes": STORE.nbytes,
            "max_bytes": _config["feature_store_bytes"],
            "dir": _config["feature_store_dir"]}


# ---- keys -----------------------------------------------------------------------


def digest(*parts):
    """A hex digest of byte strings and reprs."""
    h = hashlib.blake2b(digest_size=20)
    for part in parts:
        h.update(part if isinstance(part, bytes) else repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def module_digest(module):
    """A digest of a module's class and of every parameter's and buffer's bytes."""
    h = hashlib.blake2b(digest_size=20)
    h.update(type(module).__qualname__.encode())
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(repr((t.dtype, tuple(t.shape))).encode())
        h.update(t.view(-1).view(dtype=_byte_dtype()).numpy().tobytes()
                 if t.numel() else b"")
    return h.hexdigest()


def _byte_dtype():
    import torch

    return torch.uint8


def item_key(item):
    """The content key of one image: array bytes, PIL pixels, or file identity."""
    from ._images import _is_pil, is_path

    if is_path(item):
        path = os.path.abspath(os.fspath(item))
        try:
            stat = os.stat(path)
        except OSError:
            return None  # let the loader report the missing file
        return digest("file", path, stat.st_size, stat.st_mtime_ns)
    if _is_pil(item):
        palette = item.getpalette() if item.mode in ("P", "PA") else None
        return digest("pil", item.mode, item.size, palette,
                      item.info.get("transparency"), item.getexif().get(0x0112),
                      item.tobytes())
    arr = np.ascontiguousarray(item)
    return digest("array", arr.dtype.str, arr.shape, arr.tobytes())


def _path(folder, net_key, key):
    return os.path.join(folder, net_key[:2], net_key, key + ".npy")


def _read(folder, net_key, key):
    try:
        return np.load(_path(folder, net_key, key), allow_pickle=False)
    except (OSError, ValueError):
        return None


def _write(folder, net_key, key, row):
    path = _path(folder, net_key, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, row, allow_pickle=False)
        os.replace(tmp, path)  # atomic: a reader sees the old file or the new
    except OSError:
        if os.path.exists(tmp):
            os.remove(tmp)

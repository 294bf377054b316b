"""The feature store: outputs of frozen backbones, computed once per input.

A grid search over a pipeline with a frozen backbone sends every image through
the backbone once per fold and candidate; the store keeps each image's
features, keyed on content, so that every later request for the same image
through the same network is a look-up.

Keys are content (see ``_keys``):

- the network: for a torchvision model a hash of its weights and buffers
  (the bytes); for a module of the user's, everything that decides its
  output (``_keys.module_key``: structure, weights, attributes, code, the
  globals the code reads, hooks); and everything else that changes the
  numbers (layer, pooling, preprocessing, mixed precision, memory layout,
  device type, torch's global forward hooks);
- each input: the bytes of an array image (with dtype and shape), the pixels
  of a PIL image, or the bytes of a file.

The store lives once per process (never in a pickle: estimators only hold a
flag), holds at most ``feature_store_bytes`` (least recently used entries go
first), and can mirror its entries to a folder so that other processes, or
the same notebook after a restart, read them instead of computing them.

A folder entry is one file, ``<folder>/v2/<network key>/<ab>/<input key>``:
a header (format, dtype, width, checksum) and the float32 row. Files are
written under a temporary name and renamed (two processes writing the same
entry are safe); what is read back is checked -- format, dtype, the width the
network gives, and a checksum over the row and the two keys -- and anything
that fails is recomputed and rewritten. The checksum detects damage (a torn
write, flipped bits, a file copied under another name), not tampering: a
folder shared with people you do not trust is not safe.

Settings (:func:`set_config`) are per process; :func:`config_context` changes
them for a block. An object pickled by skxfer carries the settings in force
where it was pickled, and applies them while it works in a process that has
set none of its own (a joblib, Dask or Ray worker): see :func:`settings_applied`.
"""

import contextlib
import contextvars
import errno
import hashlib
import os
import struct
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from numbers import Integral

import numpy as np

from ._keys import digest, item_key, module_digest  # noqa: F401 (re-exported)

_DEFAULTS = {"feature_store": True, "feature_store_bytes": 512 << 20,
             "feature_store_dir": None}
_global = dict(_DEFAULTS)
# whether this process chose its settings (set_config): then they win over
# the settings a pickled object carries
_explicit = [False]
# (settings, explicit, carried) of a config_context or of an object's carried
# settings, for the running thread
_context = contextvars.ContextVar("skxfer_feature_store", default=None)
_WARNED = set()  # (kind, folder): warnings given once per process
_WARNED_LOCK = threading.Lock()


# ---- settings -----------------------------------------------------------------------


def _check_store(value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"feature_store must be True or False; got {value!r}.")
    return bool(value)


def _check_bytes(value, name="feature_store_bytes"):
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral)
            or value < 0):
        raise ValueError(f"{name} must be an int >= 0 (bytes); got {value!r}.")
    return int(value)


def _check_dir(value, create=True):
    """A folder setting -> an absolute path (created when missing) or None."""
    if value is False:
        return None
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes):
        raise ValueError(
            "feature_store_dir must be a folder path (a non-empty str or "
            f"os.PathLike) or False (memory only); got {value!r}.")
    path = os.fspath(value)
    if not isinstance(path, str) or not path.strip():
        raise ValueError(
            "feature_store_dir must be a folder path (a non-empty str or "
            f"os.PathLike) or False (memory only); got {value!r}.")
    path = os.path.abspath(path)  # a later os.chdir changes nothing
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            f"feature_store_dir={os.fspath(value)!r} is a file, not a folder. "
            "Pass a folder path (created when missing) or False.")
    if create:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as err:
            raise ValueError(
                f"feature_store_dir={os.fspath(value)!r}: the folder could not "
                f"be created ({type(err).__name__}: {err.strerror or err}). Pass "
                "a folder you can write to, or False.") from err
    return path


def _validated(feature_store, feature_store_bytes, feature_store_dir):
    """The given settings, checked, as a dict (None: left as it is)."""
    updates = {}
    if feature_store is not None:
        updates["feature_store"] = _check_store(feature_store)
    if feature_store_bytes is not None:
        updates["feature_store_bytes"] = _check_bytes(feature_store_bytes)
    if feature_store_dir is not None:
        updates["feature_store_dir"] = _check_dir(feature_store_dir)
    return updates


def _active():
    """The settings in force for the running thread (a live dict)."""
    current = _context.get()
    return current[0] if current is not None else _global


def set_config(feature_store=None, feature_store_bytes=None, feature_store_dir=None):
    """Configure the feature store of this process.

    Settings are per process, as :func:`sklearn.set_config` is per thread;
    inside :func:`config_context` they last until the block ends. A fitted or
    unfitted skxfer object carries the settings in force when it is pickled
    and applies them while it works in a process that never called
    ``set_config`` (a joblib, Dask or Ray worker); a process that called
    ``set_config`` keeps its own.

    Parameters
    ----------
    feature_store : bool, default=None
        Switch the store on (the default) or off for every extractor whose
        ``feature_store`` parameter is ``"auto"``. None leaves it as it is.
    feature_store_bytes : int, default=None
        Memory budget of the store in bytes (default 512 MiB); the least
        recently used features go first. None leaves it as it is.
    feature_store_dir : str, path-like or False, default=None
        A folder to mirror the store to (created when missing; a relative
        path is made absolute now), so that worker processes and later
        sessions read features instead of computing them. A folder shared
        between machines must be on a filesystem they share. False: memory
        only. None leaves it as it is.

    Examples
    --------
    >>> import skxfer
    >>> skxfer.set_config(feature_store_bytes=256 << 20)
    >>> skxfer.get_config()["feature_store_bytes"]
    268435456
    >>> skxfer.set_config(feature_store_bytes=512 << 20)
    """
    updates = _validated(feature_store, feature_store_bytes, feature_store_dir)
    current = _context.get()
    target = current[0] if current is not None else _global
    target.update(updates)
    if current is None:
        _explicit[0] = True
    if "feature_store_dir" in updates:
        _forget_warnings(updates["feature_store_dir"])
    if "feature_store_bytes" in updates:
        STORE.trim()


def get_config():
    """The feature store's settings in force, as :func:`set_config` takes them.

    Returns
    -------
    config : dict
        ``feature_store``, ``feature_store_bytes``, ``feature_store_dir``.

    Examples
    --------
    >>> import skxfer
    >>> sorted(skxfer.get_config())
    ['feature_store', 'feature_store_bytes', 'feature_store_dir']
    """
    return dict(_active())


@contextlib.contextmanager
def config_context(*, feature_store=None, feature_store_bytes=None,
                   feature_store_dir=None):
    """Feature-store settings for a block of code, in the running thread.

    Takes the parameters of :func:`set_config`; the settings before the block
    come back after it. Objects pickled inside the block carry these
    settings to the processes they are sent to.

    Examples
    --------
    >>> import skxfer
    >>> with skxfer.config_context(feature_store=False):
    ...     skxfer.get_config()["feature_store"]
    False
    >>> skxfer.get_config()["feature_store"]
    True
    """
    settings = dict(_active())
    settings.update(_validated(feature_store, feature_store_bytes,
                               feature_store_dir))
    if feature_store_dir:
        _forget_warnings(settings["feature_store_dir"])
    token = _context.set((settings, True, None))
    try:
        yield
    finally:
        _context.reset(token)
        STORE.trim()


# ---- settings that travel with objects -------------------------------------------

CARRIED = "_skxfer_store_settings"


def _carried(obj):
    carried = getattr(obj, "__dict__", {}).get(CARRIED)
    return carried if isinstance(carried, dict) else None


def settings_for(obj):
    """The settings ``obj`` works under here: a context's, this process's own,
    or those it carries (in that order)."""
    current = _context.get()
    if current is not None:
        return dict(current[2] if current[2] is not None else current[0])
    carried = _carried(obj)
    if _explicit[0] or carried is None:
        return dict(_global)
    return dict(carried)


def capture_settings(obj, state):
    """Record in ``state`` (``obj``'s pickle) the store settings it works under.

    Called by ``__getstate__``: the settings travel with the pickle, and
    :func:`settings_applied` applies them where it is loaded.
    """
    state[CARRIED] = settings_for(obj)
    return state


def carry_settings(source, target):
    """Give ``target`` the settings ``source`` carries, if it carries any.

    For an object built inside another's ``fit`` (the extractor of a transfer
    estimator) or by ``clone``: it works under the settings its maker came
    with.
    """
    carried = _carried(source)
    if carried is not None:
        target.__dict__[CARRIED] = dict(carried)
    return target


@contextlib.contextmanager
def settings_applied(obj):
    """Apply the settings ``obj`` carries while it works, where they should win.

    They apply in a process that never called :func:`set_config` and
    outside any :func:`config_context` (or another object's carried
    settings): a worker. A carried folder that does not exist here is not
    created: the store works in memory, with one warning per folder.
    """
    carried = _carried(obj)
    if carried is None or _explicit[0] or _context.get() is not None:
        yield
        return
    token = _context.set((_resolved(carried), False, dict(carried)))
    try:
        yield
    finally:
        _context.reset(token)


def _resolved(carried):
    """Carried settings as this process can use them (checked; folder exists)."""
    settings = dict(_DEFAULTS)
    try:
        settings["feature_store"] = _check_store(
            carried.get("feature_store", True))
        settings["feature_store_bytes"] = _check_bytes(
            carried.get("feature_store_bytes", _DEFAULTS["feature_store_bytes"]))
        folder = carried.get("feature_store_dir")
        if folder is not None:
            folder = _check_dir(folder, create=False)
    except ValueError:  # a pickle from elsewhere with nonsense in it
        return dict(_global)
    if folder is not None and not os.path.isdir(folder):
        _warn_once(
            "missing", folder,
            f"The feature store folder {folder!r}, set where this object was "
            "pickled, does not exist here; it is not created, and features are "
            "kept in memory only. (A folder shared between machines must be on "
            "a filesystem they share.)")
        folder = None
    settings["feature_store_dir"] = folder
    return settings


def _warn_once(kind, folder, message):
    with _WARNED_LOCK:
        if (kind, folder) in _WARNED:
            return
        _WARNED.add((kind, folder))
    warnings.warn(message, UserWarning, stacklevel=4)


def _forget_warnings(folder):
    """A folder set anew is tried anew (and warned about anew)."""
    with _WARNED_LOCK:
        for kind in ("missing", "unwritable"):
            _WARNED.discard((kind, folder))
        _UNWRITABLE.discard(folder)


# ---- folder entries ---------------------------------------------------------------

LAYOUT = "v2"  # the folder's format version: entries live under <folder>/v2/
_MAGIC = b"SKXF"
_VERSION = 2
_DTYPE = b"<f4\0"
# magic, format version, reserved, dtype, width, checksum
_HEADER = struct.Struct("<4sHH4sI16s")
_UNWRITABLE = set()


def entry_path(folder, net_key, key):
    return os.path.join(folder, LAYOUT, net_key, key[:2], key)


def _checksum(net_key, key, width, payload):
    h = hashlib.blake2b(digest_size=16)
    for part in (net_key.encode(), key.encode(), str(width).encode()):
        h.update(part)
        h.update(b"\0")
    h.update(payload)
    return h.digest()


def encode_entry(net_key, key, row):
    """The bytes of a folder entry for one row of features."""
    payload = np.ascontiguousarray(row, dtype="<f4").tobytes()
    width = len(payload) // 4
    return _HEADER.pack(_MAGIC, _VERSION, 0, _DTYPE, width,
                        _checksum(net_key, key, width, payload)) + payload


def decode_entry(data, net_key, key, width=None):
    """The row in an entry's bytes, or None when it is not exactly what was
    written for ``(net_key, key)`` with ``width`` features."""
    if len(data) < _HEADER.size:
        return None
    magic, version, _, dtype, n, checksum = _HEADER.unpack_from(data)
    if (magic != _MAGIC or version != _VERSION or dtype != _DTYPE or n == 0
            or (width is not None and n != width)
            or len(data) != _HEADER.size + 4 * n):
        return None
    payload = memoryview(data)[_HEADER.size:]
    if checksum != _checksum(net_key, key, n, payload):
        return None
    row = np.frombuffer(data, dtype="<f4", offset=_HEADER.size).astype(
        np.float32, copy=False)
    row.setflags(write=False)
    return row


def _read(folder, net_key, key, width):
    """``(row, damaged)``: the entry's row, or None (missing or damaged)."""
    path = entry_path(folder, net_key, key)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:  # missing, or unreadable: a miss
        return None, False
    row = decode_entry(data, net_key, key, width)
    if row is None:
        return None, True
    try:  # the modification time says when an entry was last used (pruning)
        os.utime(path)
    except OSError:
        pass
    return row, False


def _write(folder, net_key, key, row):
    """Write one entry atomically; OSError when the folder cannot take it."""
    path = entry_path(folder, net_key, key)
    parent = os.path.dirname(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=".", suffix=".tmp")
    except FileNotFoundError:
        if not os.path.isdir(folder):  # the folder itself is gone: not recreated
            raise
        os.makedirs(parent, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(encode_entry(net_key, key, row))
        os.replace(tmp, path)  # atomic: a reader sees the old file or the new
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


# ---- the store --------------------------------------------------------------------


class FeatureStore:
    """Features by (network key, input key), within a memory budget."""

    def __init__(self):
        self._entries = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        # per network key: (pooled, width), so that a fit whose first input is
        # stored needs neither a network nor a probe forward
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
            self._trim(_active()["feature_store_bytes"])

    def _trim(self, budget):
        while self._entries and self._bytes > budget:
            _, value = self._entries.popitem(last=False)
            self._bytes -= value.nbytes

    def get_many(self, net_key, keys, width=None):
        """Features for ``keys`` (None where missing or where the key is None),
        from memory or the folder; each row ``width`` wide."""
        out = [None] * len(keys)
        settings = _active()
        folder = settings["feature_store_dir"]
        with self._lock:
            for i, key in enumerate(keys):
                if key is None:
                    continue
                value = self._entries.get((net_key, key))
                if value is not None and (width is None or len(value) == width):
                    self._entries.move_to_end((net_key, key))
                    out[i] = value
        if folder is None:
            return out
        damaged = 0
        for i, key in enumerate(keys):
            if out[i] is None and key is not None:
                out[i], bad = _read(folder, net_key, key, width)
                damaged += bad
                if out[i] is not None:
                    self._put(net_key, key, out[i], settings)
        if damaged:
            warnings.warn(
                f"{damaged} entr{'y' if damaged == 1 else 'ies'} of the feature "
                f"store folder {folder!r} did not hold what was written for "
                "them (damaged, empty, or of another shape or format); their "
                "features are computed again and rewritten.",
                UserWarning, stacklevel=4)
        return out

    def put_many(self, net_key, keys, rows):
        settings = _active()
        folder = settings["feature_store_dir"]
        for key, row in zip(keys, rows, strict=True):
            if key is None:
                continue
            row = np.array(row, dtype=np.float32)  # its own copy, read-only
            row.setflags(write=False)
            self._put(net_key, key, row, settings)
            if folder is not None and folder not in _UNWRITABLE:
                try:
                    _write(folder, net_key, key, row)
                except OSError as err:
                    _UNWRITABLE.add(folder)
                    reason = (errno.errorcode.get(err.errno, type(err).__name__)
                              if err.errno else type(err).__name__)
                    _warn_once(
                        "unwritable", folder,
                        f"The feature store folder {folder!r} cannot be written "
                        f"({reason}: {err.strerror or err}); features are kept "
                        "in memory only for the rest of this session (set "
                        "feature_store_dir again to retry).")

    def _put(self, net_key, key, row, settings):
        with self._lock:
            old = self._entries.pop((net_key, key), None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[(net_key, key)] = row
            self._bytes += row.nbytes
            self._trim(settings["feature_store_bytes"])


STORE = FeatureStore()


def clear_feature_store():
    """Empty the feature store of this process (a folder stays).

    Forgets the features held in memory, the model registry (the networks
    kept per process), and which files this process has hashed: everything
    is read and hashed again.

    Examples
    --------
    >>> import skxfer
    >>> skxfer.clear_feature_store()
    >>> skxfer.feature_store_info()["entries"]
    0
    """
    from ._backbones import clear_registry
    from ._keys import FILES

    STORE.clear()
    FILES.clear()
    clear_registry()


def feature_store_info():
    """How much the feature store holds.

    Returns
    -------
    info : dict
        ``entries`` (images held), ``bytes`` (their size in memory),
        ``max_bytes`` (the budget) and ``dir`` (the folder mirrored to, or
        None).
    """
    settings = _active()
    return {"entries": len(STORE), "bytes": STORE.nbytes,
            "max_bytes": settings["feature_store_bytes"],
            "dir": settings["feature_store_dir"]}


def prune_feature_store(max_bytes=0, *, folder=None):
    """Shrink a feature-store folder to at most ``max_bytes``.

    Entries go least recently used first (written, or read from the folder).
    Entries in the layout of earlier skxfer versions (never read by this
    one) and temporary files left by interrupted writes more than an hour
    old are removed whatever the size. Safe while other processes use the
    folder: an entry removed under a reader is a miss, computed again.

    Parameters
    ----------
    max_bytes : int, default=0
        The most bytes of entries to keep; 0 empties the folder.
    folder : str or path-like, default=None
        The folder; None: the ``feature_store_dir`` in force.

    Returns
    -------
    info : dict
        ``removed`` (entries removed), ``freed_bytes``, ``entries`` and
        ``bytes`` (what is left).

    Examples
    --------
    >>> import tempfile, skxfer
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     skxfer.prune_feature_store(0, folder=folder)
    {'removed': 0, 'freed_bytes': 0, 'entries': 0, 'bytes': 0}
    """
    max_bytes = _check_bytes(max_bytes, "max_bytes")
    if folder is None:
        folder = _active()["feature_store_dir"]
        if folder is None:
            raise ValueError(
                "prune_feature_store needs a folder: pass folder=, or set one "
                "with skxfer.set_config(feature_store_dir=...).")
    else:
        folder = _check_dir(folder, create=False)
    if not os.path.isdir(folder):
        raise ValueError(f"folder={folder!r} is not a folder.")
    removed = freed = 0
    stale = time.time() - 3600
    entries = []
    for dirpath, _, files in os.walk(folder):
        rel = os.path.relpath(dirpath, folder).split(os.sep)
        ours = rel[0] == LAYOUT and len(rel) == 3
        old = (len(rel) == 2 and len(rel[0]) == 2 and _is_hex(rel[0])
               and _is_hex(rel[1]))  # <ab>/<network key>/<input key>.npy
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue
            if name.endswith(".tmp") and (ours or old) and stat.st_mtime < stale:
                pass  # an interrupted write
            elif old and name.endswith(".npy") and _is_hex(name[:-4]):
                pass  # an entry of the old layout
            elif ours and not name.startswith("."):
                entries.append((stat.st_mtime_ns, stat.st_size, path))
                continue
            else:
                continue
            if _remove(path):
                removed += 1
                freed += stat.st_size
    entries.sort()
    total = sum(size for _, size, _ in entries)
    kept = len(entries)
    for _, size, path in entries:
        if total <= max_bytes:
            break
        if _remove(path):
            removed += 1
            freed += size
            total -= size
            kept -= 1
    for dirpath, _, _ in sorted(os.walk(folder), key=lambda w: -len(w[0])):
        rel = os.path.relpath(dirpath, folder).split(os.sep)
        if rel[0] == LAYOUT or (len(rel) <= 2 and all(
                _is_hex(part) for part in rel) and len(rel[0]) == 2):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)  # only empty ones go, and only the store's
    return {"removed": removed, "freed_bytes": freed, "entries": kept,
            "bytes": total}


def _is_hex(text):
    return bool(text) and all(c in "0123456789abcdef" for c in text)


def _remove(path):
    try:
        os.remove(path)
        return True
    except OSError:
        return False

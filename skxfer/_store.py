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
them for a block: in the thread that opens it, and in threads that have no
block of their own while it is the only thread with one (the threads of a
joblib threading backend, and those that prepare the tasks of a search). An
object pickled by skxfer carries the settings in force where it was pickled,
and applies them while it works in a process that has set none of its own (a
joblib, Dask or Ray worker): see :func:`settings_applied`. Settings a block
gave a copy or a pickle stay in the block: in this process they apply only
while it is open.
"""

import contextlib
import contextvars
import errno
import hashlib
import io
import itertools
import os
import re
import stat as stat_
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


class _Block:
    """Settings in force for a while: a ``config_context`` block (``tag``
    names it: ``"<pid>.<token>:<n>"``), or the settings an object carries, applied
    while it works (``carried``: what it carries, passed on as it is)."""

    __slots__ = ("settings", "tag", "carried")

    def __init__(self, settings, tag=None, carried=None):
        self.settings = settings
        self.tag = tag
        self.carried = carried


# the innermost block of the running thread (its own, or an object's carried
# settings applied while it works)
_context = contextvars.ContextVar("skxfer_feature_store", default=None)
# config_context blocks open in this process: by tag, and per thread
_OPEN = {}
_OPEN_BY_THREAD = {}
# the innermost block of the one thread that has blocks open (None when no
# thread or several have): what threads without a block of their own see
_SHARED = [None]
_OPEN_LOCK = threading.Lock()
_BLOCK_NUMBERS = itertools.count(1)
# with the process id, what tells this process's blocks from those of a
# process elsewhere with the same id (another machine, another container)
_TOKEN = os.urandom(8).hex()
_TAG = "block"  # the key that ties carried settings to the block they came from
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


def _check_dir(value, create=True, name="feature_store_dir",
               otherwise="False (memory only)"):
    """A folder setting -> an absolute path (created when missing) or None."""
    if value is False and name == "feature_store_dir":
        return None
    shown = (f"{name} must be a folder path (a non-empty str or os.PathLike) or "
             f"{otherwise}; got {value!r}")
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes):
        raise ValueError(shown + ".")
    path = os.fspath(value)
    if not isinstance(path, str) or not path.strip():
        raise ValueError(shown + ".")
    if "\0" in path:
        raise ValueError(shown + ", which holds a null byte.")
    path = os.path.abspath(path)  # a later os.chdir changes nothing
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            f"{name}={os.fspath(value)!r} is a file, not a folder. "
            + ("Pass a folder path (created when missing) or False."
               if create else "Pass a folder."))
    if create:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as err:
            raise ValueError(
                f"{name}={os.fspath(value)!r}: the folder could not "
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


def _visible():
    """The block in force for the running thread: its own innermost, else
    the one thread's that has blocks open, else None."""
    return _context.get() or _SHARED[0]


def _active():
    """The settings in force for the running thread (a live dict)."""
    block = _visible()
    return block.settings if block is not None else _global


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
    target = current.settings if current is not None else _global
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
    """Feature-store settings for a block of code.

    Takes the parameters of :func:`set_config`; the settings before the block
    come back after it. They apply in the thread that opens the block, and
    in threads that have no block of their own while it is the only thread
    with one open: the work a search dispatches to joblib's threading
    backend, and the tasks it pickles for worker processes, run under them.
    Objects pickled inside the block carry them to the processes they are
    sent to; in this process, settings a copy or a pickle took from a block
    apply only while the block is open.

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
    block = _Block(settings, tag=f"{_process()}:{next(_BLOCK_NUMBERS)}")
    token = _context.set(block)
    _open(block)
    try:
        yield
    finally:
        _close(block)
        _context.reset(token)
        STORE.trim()


def _process():
    """This process, as block tags name it (a forked child is another)."""
    return f"{os.getpid()}.{_TOKEN}"


def _open(block):
    with _OPEN_LOCK:
        _OPEN[block.tag] = block
        _OPEN_BY_THREAD.setdefault(threading.get_ident(), []).append(block)
        _share()


def _close(block):
    with _OPEN_LOCK:
        _OPEN.pop(block.tag, None)
        for thread, blocks in list(_OPEN_BY_THREAD.items()):
            if block in blocks:
                blocks.remove(block)
            if not blocks:
                del _OPEN_BY_THREAD[thread]
        _share()


def _share():
    owners = list(_OPEN_BY_THREAD.values())
    _SHARED[0] = owners[0][-1] if len(owners) == 1 else None


# ---- settings that travel with objects -------------------------------------------

CARRIED = "_skxfer_store_settings"


def _carried(obj):
    carried = getattr(obj, "__dict__", {}).get(CARRIED)
    return carried if isinstance(carried, dict) else None


def _carried_here(obj):
    """What ``obj`` carries, as it applies in this process: a block still
    open (settings taken from a block of this process), the settings
    themselves (from another process), or None (nothing, or the settings of
    a block of this process that has ended: they stay in it)."""
    carried = _carried(obj)
    if carried is None:
        return None
    tag = carried.get(_TAG)
    if isinstance(tag, str) and tag.rpartition(":")[0] == _process():
        return _OPEN.get(tag)
    return carried


def settings_for(obj):
    """The settings ``obj`` works under here: a block's (the thread's own, or
    the one visible to it), this process's own, or those it carries (in that
    order). Settings from a block name it (``"block"``)."""
    block = _visible()
    if block is None:
        here = _carried_here(obj)
        if isinstance(here, _Block):
            block = here
        elif _explicit[0] or here is None:
            return dict(_global)
        else:
            return dict(here)
    if block.carried is not None:  # an object's, applied: passed on as it is
        return dict(block.carried)
    return {**block.settings, _TAG: block.tag}


def capture_settings(obj, state):
    """Record in ``state`` (``obj``'s pickle) the store settings it works under.

    Called by ``__getstate__``: the settings travel with the pickle, and
    :func:`settings_applied` applies them where it is loaded. Settings of a
    ``config_context`` block are tied to it: a copy or a pickle made inside
    the block applies them in this process only while the block is open.
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

    They apply outside any :func:`config_context` (or another object's
    carried settings) and, unless they come from a block of this process
    that is still open, in a process that never called :func:`set_config`:
    a worker. A carried folder that does not exist here is not created: the
    store works in memory, with one warning per folder.
    """
    here = None if _visible() is not None else _carried_here(obj)
    if here is None or (not isinstance(here, _Block) and _explicit[0]):
        yield
        return
    if not isinstance(here, _Block):
        here = _Block(_resolved(here), carried=dict(here))
    token = _context.set(here)
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
    """A folder set anew is warned about anew."""
    with _WARNED_LOCK:
        _WARNED.discard(("missing", folder))


# ---- folder entries ---------------------------------------------------------------

LAYOUT = "v2"  # the folder's format version: entries live under <folder>/v2/
_MAGIC = b"SKXF"
_VERSION = 2
_DTYPE = b"<f4\0"
# magic, format version, reserved (zero), dtype, width, checksum
_HEADER = struct.Struct("<4sHH4sI16s")


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


def _width_in(header, width=None):
    """The width an entry's header gives, or None when it is not a header of
    this format (with ``width`` features, when given)."""
    if len(header) < _HEADER.size:
        return None
    magic, version, reserved, dtype, n, _ = _HEADER.unpack_from(header)
    if (magic != _MAGIC or version != _VERSION or reserved != 0
            or dtype != _DTYPE or n == 0 or (width is not None and n != width)):
        return None
    return n


def decode_entry(data, net_key, key, width=None):
    """The row in an entry's bytes, or None when it is not exactly what was
    written for ``(net_key, key)`` with ``width`` features."""
    n = _width_in(data, width)
    if n is None or len(data) != _HEADER.size + 4 * n:
        return None
    checksum = _HEADER.unpack_from(data)[-1]
    payload = memoryview(data)[_HEADER.size:]
    if checksum != _checksum(net_key, key, n, payload):
        return None
    row = np.frombuffer(data, dtype="<f4", offset=_HEADER.size).astype(
        np.float32, copy=False)
    row.setflags(write=False)
    return row


def _read(folder, net_key, key, width):
    """``(row, damaged)``: the entry's row, or None (missing or damaged).

    The header and the file's size are checked before the row is read: an
    entry of any other size costs a read of its header only.
    """
    path = entry_path(folder, net_key, key)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            header = f.read(_HEADER.size)
            n = _width_in(header, width)
            if n is None or size != _HEADER.size + 4 * n:
                return None, True
            data = header + f.read(4 * n)
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
    """Write one entry atomically; OSError when the folder cannot take it.

    Its folder is made when missing (the store's root never is), and made
    again once if it goes before the entry is in it (a prune in another
    process removes empty folders).
    """
    path = entry_path(folder, net_key, key)
    parent = os.path.dirname(path)
    for attempt in range(3):
        try:
            fd, tmp = tempfile.mkstemp(dir=parent, prefix=".", suffix=".tmp")
            break
        except FileNotFoundError:
            if attempt == 2 or not os.path.isdir(folder):
                raise  # the folder itself is gone: not recreated
            os.makedirs(parent, exist_ok=True)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(encode_entry(net_key, key, row))
        os.replace(tmp, path)  # atomic: a reader sees the old file or the new
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


# errors after which a call writes no more entries: the folder is full or
# read-only (other errors cost the entry they happen to)
_FOLDER_ERRORS = frozenset(getattr(errno, name) for name in (
    "EROFS", "ENOSPC", "EDQUOT") if hasattr(errno, name))


def _unwritable_warning(folder, err):
    reason = (errno.errorcode.get(err.errno, type(err).__name__)
              if err.errno else type(err).__name__)
    warnings.warn(
        f"The feature store folder {folder!r} cannot be written ({reason}: "
        f"{err.strerror or err}); the features it could not take are kept in "
        "memory only. It is tried again at the next call.",
        UserWarning, stacklevel=5)


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

    def get_many(self, net_key, keys, width=None, folder=True):
        """Features for ``keys`` (None where missing or where the key is None),
        from memory or (unless ``folder`` is False) the folder; each row
        ``width`` wide."""
        out = [None] * len(keys)
        settings = _active()
        folder = settings["feature_store_dir"] if folder else None
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
        damaged_warning(folder, damaged, stacklevel=5)
        return out

    def put_many(self, net_key, keys, rows, folder=True):
        """Keep ``rows`` under ``keys`` in memory and, unless ``folder`` is
        False, in the folder. A folder that cannot take an entry costs that
        entry (one warning per call); nothing is remembered for the next."""
        settings = _active()
        folder = settings["feature_store_dir"] if folder else None
        error = None
        for key, row in zip(keys, rows, strict=True):
            if key is None:
                continue
            row = np.array(row, dtype=np.float32)  # its own copy, read-only
            row.setflags(write=False)
            self._put(net_key, key, row, settings)
            if folder is None:
                continue
            try:
                _write(folder, net_key, key, row)
            except OSError as err:
                error = error or err
                if err.errno in _FOLDER_ERRORS or not os.path.isdir(folder):
                    folder = None  # no entry will go in: none tried
        if error is not None:
            _unwritable_warning(settings["feature_store_dir"], error)

    def _put(self, net_key, key, row, settings):
        with self._lock:
            old = self._entries.pop((net_key, key), None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[(net_key, key)] = row
            self._bytes += row.nbytes
            self._trim(settings["feature_store_bytes"])


def damaged_warning(folder, damaged, stacklevel=4):
    """The one warning of a call that found ``damaged`` entries in ``folder``."""
    if damaged:
        warnings.warn(
            f"{damaged} entr{'y' if damaged == 1 else 'ies'} of the feature "
            f"store folder {folder!r} did not hold what was written for "
            "them (damaged, empty, or of another shape or format); their "
            "features are computed again and rewritten.",
            UserWarning, stacklevel=stacklevel)


def read_entry(folder, net_key, key, width):
    """``(row, damaged)`` for one entry of ``folder`` (for a process that
    looks entries up where it reads the files: a DataLoader worker)."""
    return _read(folder, net_key, key, width)


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
    """How much the feature store holds, and what it keeps besides.

    Returns
    -------
    info : dict
        ``entries`` (images held), ``bytes`` (their size in memory),
        ``max_bytes`` (the budget) and ``dir`` (the folder mirrored to, or
        None); ``files`` and ``files_bytes``: the files this process has
        hashed and the memory that takes (one entry per file, at most
        262,144, about 200 bytes each); ``models`` and ``models_bytes``: the
        networks kept per process so that later fits need not read or draw
        their weights again (the most recent one, and others up to 256 MiB),
        and the size of their tensors. Only ``bytes`` counts against
        ``max_bytes``.

    Examples
    --------
    >>> import skxfer
    >>> sorted(skxfer.feature_store_info())
    ['bytes', 'dir', 'entries', 'files', 'files_bytes', 'max_bytes', 'models',
     'models_bytes']
    """
    from ._backbones import registry_info
    from ._keys import FILES

    settings = _active()
    models, models_bytes = registry_info()
    return {"entries": len(STORE), "bytes": STORE.nbytes,
            "max_bytes": settings["feature_store_bytes"],
            "dir": settings["feature_store_dir"],
            "files": len(FILES), "files_bytes": FILES.nbytes,
            "models": models, "models_bytes": models_bytes}


def prune_feature_store(max_bytes=0, *, folder=None):
    """Shrink a feature-store folder to at most ``max_bytes``.

    Entries go least recently used first (written, or read from the folder).
    Entries in the layout of earlier skxfer versions (never read by this
    one) and temporary files left by interrupted writes more than an hour
    old are removed whatever the size. Safe while other processes use the
    folder: an entry removed under a reader is a miss, computed again.

    Only files that are provably entries are removed: at an entry's place
    in the layout (``v2/<network key>/<ab>/<input key>``, hexadecimal keys of
    their length), and with an entry's header and size -- read before the
    file is removed. Of the earlier layout, ``<ab>/<network key>/<input
    key>.npy`` files holding one row of float32. Links are never followed,
    other files and folders never touched: a folder that holds other data
    keeps it.

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
        folder = _check_dir(folder, create=False, name="folder",
                            otherwise="None (the feature_store_dir in force)")
    if not os.path.isdir(folder):
        raise ValueError(f"folder={folder!r} is not a folder.")
    removed = freed = 0
    stale = time.time() - 3600
    entries, emptied = [], set()
    for path, stat, kind in _store_files(folder):
        if kind == "entry":
            entries.append((stat.st_mtime_ns, stat.st_size, path))
        elif (kind == "old" or stat.st_mtime < stale) and _remove(path):
            removed += 1  # an old layout's entry, or an interrupted write
            freed += stat.st_size
            emptied.add(os.path.dirname(path))
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
            emptied.add(os.path.dirname(path))
    _remove_empty_folders(folder, emptied)
    return {"removed": removed, "freed_bytes": freed, "entries": kept,
            "bytes": total}


_KEY = re.compile(r"[0-9a-f]{40}\Z")  # a network's or an input's key
_TMP = re.compile(r"\.[a-z0-9_]{8}\.tmp\Z")  # mkstemp(prefix=".", suffix=".tmp")
_OLD_TMP = re.compile(r"tmp[a-z0-9_]{8}\.tmp\Z")  # the earlier layout's


def _subfolders(path, pattern, first=None):
    """Folders (not links) in ``path`` whose names match ``pattern`` (and
    start with ``first``)."""
    try:
        with os.scandir(path) as it:
            found = [e.path for e in it if pattern.match(e.name)
                     and (first is None or e.name[:2] == first)
                     and e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    return sorted(found)


def _plain_files(path):
    """``(name, path, lstat)`` of the regular files in ``path`` (not links)."""
    try:
        with os.scandir(path) as it:
            names = [(e.name, e.path) for e in it]
    except OSError:
        return
    for name, full in names:
        try:
            st = os.lstat(full)
        except OSError:
            continue
        if stat_.S_ISREG(st.st_mode):
            yield name, full, st


_AB = re.compile(r"[0-9a-f]{2}\Z")


def _store_files(folder):
    """``(path, lstat, kind)`` of the files of ``folder`` that are provably
    the store's: ``entry`` (this layout), ``tmp`` (an interrupted write) or
    ``old`` (the earlier layout's entry or temporary file)."""
    for net in _subfolders(os.path.join(folder, LAYOUT), _KEY):
        for shard in _subfolders(net, _AB):
            ab = os.path.basename(shard)
            for name, path, st in _plain_files(shard):
                if _KEY.match(name) and name[:2] == ab:
                    if _is_entry(path, st):
                        yield path, st, "entry"
                elif _TMP.match(name) and _starts_like(path, st, _MAGIC):
                    yield path, st, "tmp"
    for shard in _subfolders(folder, _AB):
        ab = os.path.basename(shard)
        for net in _subfolders(shard, _KEY, first=ab):
            for name, path, st in _plain_files(net):
                if name.endswith(".npy") and _KEY.match(name[:-4]):
                    if _is_old_entry(path, st):
                        yield path, st, "old"
                elif _OLD_TMP.match(name) and _starts_like(path, st, b"\x93NUMPY"):
                    yield path, st, "tmp"


def _head(path, n):
    """The first ``n`` bytes of ``path``, never through a link."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read(n)


def _is_entry(path, st):
    n = _width_in(_head(path, _HEADER.size) or b"")
    return n is not None and st.st_size == _HEADER.size + 4 * n


def _starts_like(path, st, magic):
    """A temporary file of a write: empty, or begun as ``magic`` begins."""
    if st.st_size == 0:
        return True
    head = _head(path, len(magic))
    return bool(head) and magic.startswith(head)


def _is_old_entry(path, st):
    """An entry of the earlier layout: a .npy file of one row of float32."""
    head = _head(path, 256)
    if not head or not head.startswith(b"\x93NUMPY"):
        return False
    f = io.BytesIO(head)
    try:
        version = np.lib.format.read_magic(f)
        read = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}[version]
        shape, fortran, dtype = read(f)
    except Exception:  # not a .npy header numpy reads
        return False
    return (len(shape) == 1 and not fortran and dtype == np.dtype("<f4")
            and st.st_size == f.tell() + 4 * shape[0])


def _remove_empty_folders(folder, emptied):
    """Remove the store's folders that removals emptied, and their store
    folders above, deepest first (only empty ones go: another process may be
    writing into one)."""
    parents = set()
    for path in emptied:
        while path.startswith(folder + os.sep):
            parents.add(path)
            path = os.path.dirname(path)
    for path in sorted(parents, key=lambda p: -len(p)):
        with contextlib.suppress(OSError):
            os.rmdir(path)


def _remove(path):
    try:
        os.remove(path)
        return True
    except OSError:
        return False

"""Content keys: hashes of bytes, and which files this process has hashed.

A key is a BLAKE2b digest of what is hashed: a file's bytes, an array's dtype,
shape and bytes, a module's class and tensors. Files are the one thing worth
not hashing twice: a process remembers, per file, the digest of the bytes it
read, under the file's *signature* -- absolute path, size, modification and
status-change times (nanoseconds), inode and device. A signature only ever
skips re-hashing a file this process has already hashed; it is never a key
itself, never written to a folder and never sent to another process.

The limit: a file rewritten, within one process, with the same size, the same
modification time, the same status-change time and the same inode is not
seen. The status-change time (``st_ctime``) cannot be set by users -- every
write, ``chmod`` or ``os.utime`` moves it to the present -- so a rewrite with
restored timestamps (``cp -p``, ``rsync -a``, ``tar x``, ``unzip``,
``os.utime``) is seen; only a filesystem whose clock does not advance
between two writes could hide one.
"""

import hashlib
import os
import threading
from collections import OrderedDict

import numpy as np

DIGEST_SIZE = 20


def digest(*parts):
    """A hex digest of byte strings and reprs."""
    h = hashlib.blake2b(digest_size=DIGEST_SIZE)
    for part in parts:
        h.update(part if isinstance(part, (bytes, memoryview)) else
                 repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def module_digest(module):
    """A digest of a module's class and of every parameter's and buffer's bytes."""
    import torch

    h = hashlib.blake2b(digest_size=DIGEST_SIZE)
    h.update(type(module).__qualname__.encode())
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(repr((t.dtype, tuple(t.shape))).encode())
        if t.numel():
            h.update(memoryview(t.view(-1).view(dtype=torch.uint8).numpy()))
    return h.hexdigest()


def file_key(data):
    """The key of a file's content (its bytes)."""
    return digest("file", data)


class _FileDigests:
    """File signature -> digest of the bytes read, for the files hashed here."""

    def __init__(self, max_entries=1 << 18):
        self._entries = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def get(self, signature):
        with self._lock:
            key = self._entries.get(signature)
            if key is not None:
                self._entries.move_to_end(signature)
            return key

    def put(self, signature, key):
        with self._lock:
            self._entries[signature] = key
            self._entries.move_to_end(signature)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self):
        with self._lock:
            self._entries.clear()

    def __len__(self):
        return len(self._entries)


FILES = _FileDigests()


def signature(path, stat):
    """What identifies one state of a file within this process (not content)."""
    return (path, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino,
            stat.st_dev)


def known_file_key(path):
    """The key of ``path``'s bytes if this process has hashed them as they are.

    None when it has not (or the file changed since). ``OSError`` from
    ``os.stat`` propagates (a missing file), with ``path`` as given.
    """
    stat = os.stat(path)
    return FILES.get(signature(os.path.abspath(os.fspath(path)), stat))


def read_file(path):
    """``(bytes, key, signature)`` of a file, read once.

    The key is the hash of exactly the bytes returned; the signature (None
    when the file changed while it was read) lets a process that did not read
    the file itself -- the parent of a ``DataLoader`` worker -- record the key
    with :func:`remember`. The reading process records it here.
    """
    with open(path, "rb") as f:
        before = os.fstat(f.fileno())
        data = f.read()
        after = os.fstat(f.fileno())
    key = file_key(data)
    sig = signature(os.path.abspath(os.fspath(path)), after)
    if sig != signature(sig[0], before):
        sig = None  # written to while read: remember nothing
    remember(sig, key)
    return data, key, sig


def remember(sig, key):
    """Record that the file with signature ``sig`` holds bytes of key ``key``."""
    if sig is not None and key is not None:
        FILES.put(sig, key)


def file_content_key(path):
    """The key of ``path``'s bytes: remembered, or read and hashed now."""
    key = known_file_key(path)
    if key is None:
        key = read_file(path)[1]
    return key


def item_key(item, files="read"):
    """The content key of one input: an array's bytes, PIL pixels, a file's bytes.

    For a file path, ``files="read"`` reads and hashes it unless this process
    already has (``OSError`` propagates); ``files="known"`` gives the key only
    when this process has hashed the file as it is now, else None.
    """
    from ._images import _is_pil, is_path

    if is_path(item):
        if files == "known":
            return known_file_key(item)
        return file_content_key(item)
    if _is_pil(item):
        palette = item.getpalette() if item.mode in ("P", "PA") else None
        return digest("pil", item.mode, item.size, palette,
                      item.info.get("transparency"), item.getexif().get(0x0112),
                      item.tobytes())
    arr = np.ascontiguousarray(item)
    try:
        data = memoryview(arr).cast("B")  # no copy
    except (TypeError, ValueError):  # a dtype the buffer protocol cannot cast
        data = arr.tobytes()
    return digest("array", arr.dtype.str, arr.shape, data)

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

import builtins
import dis
import enum
import functools
import hashlib
import importlib.machinery
import importlib.util
import logging
import os
import sys
import sysconfig
import threading
import types
import weakref
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


# ---- networks of the user's own: keyed on everything that decides the output --------


class Unkeyable(Exception):
    """A part of a network that cannot be keyed by its content (``str`` names it)."""


def module_key(module):
    """The content key of a user's ``torch.nn.Module``: what decides its output.

    The key covers the module's structure (its classes and every submodule);
    its parameters and buffers (their bytes); every plain attribute (numbers,
    strings, tuples, lists, dicts, tensors and arrays by content, objects of
    plain Python classes by their attributes); the code of its classes'
    methods (bytecode, constants, closures' contents, default arguments)
    and, recursively, the functions, classes, values and modules that code
    reads from its globals or imports; its hooks (forward, pre-forward,
    backward, state-dict), keyed the same way. Classes and functions of
    installed packages (the standard library, site-packages) are keyed by
    their name and the package's version. No address or ``id()`` is part of
    it: the same network built the same way has the same key in every
    process. Nothing of the user's is called to compute it.

    Raises :class:`Unkeyable`, naming the first part that cannot be keyed
    (a lock, an open file, an object of a C extension that does not pickle,
    an object whose pickling is code of the user's). Left out: the
    ``training`` flags (the network runs in eval mode) and ``__init__``
    methods (a network is keyed by what its construction built; it is never
    constructed again to compute).
    """
    return _key(module, "model")


def value_key(obj, name):
    """The content key of any object (``name`` shows it in messages), by the
    rules of :func:`module_key`."""
    return _key(obj, name)


def global_hooks_key():
    """The key of torch's global forward hooks (those every module runs), or
    None when there are none."""
    from torch.nn.modules import module as torch_module

    if not any(isinstance(hooks, dict) and hooks
               for name, hooks in vars(torch_module).items()
               if name.startswith("_global_forward")):
        return None
    walker = _Walker()
    walker.path.append("torch's global forward hooks")
    try:
        walker.global_hooks()
    except RecursionError as err:
        raise Unkeyable("torch's global forward hooks nest too deep") from err
    return walker.hexdigest()


def _key(obj, name):
    walker = _Walker()
    walker.token(b"K", "skxfer key 1 " + sys.implementation.cache_tag)
    walker.path.append(name)
    try:
        walker.value(obj)
    except RecursionError as err:
        raise Unkeyable(f"{name} nests objects too deep to be keyed") from err
    return walker.hexdigest()


# class attributes that do not decide what an instance computes: how the
# class is shown, documented or type-checked, and __init__ (a network is keyed
# by what its construction built; it is never constructed again to compute)
_CLASS_SKIP = frozenset((
    "__module__", "__qualname__", "__doc__", "__dict__", "__weakref__",
    "__firstlineno__", "__static_attributes__", "__annotations__",
    "__annotate__", "__annotate_func__", "__annotations_cache__",
    "__orig_bases__", "__parameters__", "__type_params__", "_abc_impl",
    "__abstractmethods__", "__init__",
))
_GLOBAL_OPS = frozenset(dis.opmap[name] for name in (
    "LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL", "DELETE_GLOBAL")
    if name in dis.opmap)
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made at run time, not a C type
_ATOMS = (bool, int, float, complex, str, bytes, type(None), type(Ellipsis),
          type(NotImplemented))
# what pickle calls to take an object apart (never run when it is user code)
_PICKLING = ("__reduce_ex__", "__reduce__", "__getstate__", "__getnewargs_ex__",
             "__getnewargs__")
_BUILTIN_BASES = (str, int, float, complex, bytes, tuple, frozenset, set, list, dict)


def _type_name(obj):
    t = type(obj)
    module = getattr(t, "__module__", None)
    name = getattr(t, "__qualname__", t.__name__)
    return name if module in (None, "builtins") else f"{module}.{name}"


class _Walker:
    """Feeds a hash with an unambiguous token stream describing objects.

    Mutable objects met twice (a shared tensor, a class, a cycle) are fed
    once and then referred to by the order in which they were met, so the
    stream depends on structure, never on addresses. ``path`` is where the
    walk is, for the message of :class:`Unkeyable`.
    """

    def __init__(self):
        self.hash = hashlib.blake2b(digest_size=DIGEST_SIZE)
        self.memo = {}
        self.alive = []  # keeps memoised objects alive: their ids stay unique
        self.path = []
        self.code_names = {}

    def hexdigest(self):
        return self.hash.hexdigest()

    # -- tokens and paths ----------------------------------------------------------

    def token(self, tag, data=b""):
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        self.hash.update(tag + len(data).to_bytes(8, "little"))
        self.hash.update(data)

    def unkeyable(self, obj, kind=None):
        kind = kind or f"a {_type_name(obj)}"
        raise Unkeyable(f"{' -> '.join(self.path)} is {kind}")

    def seen(self, obj):
        """Refer to ``obj`` if it was met before; else remember it."""
        index = self.memo.get(id(obj))
        if index is not None:
            self.token(b"@", str(index))
            return True
        self.memo[id(obj)] = len(self.memo)
        self.alive.append(obj)
        return False

    def at(self, step, obj, names=None):
        """Key ``obj``, reached through ``step`` (a new step of the path)."""
        self.path.append(step)
        try:
            self.value(obj, names)
        finally:
            self.path.pop()

    def sub(self, suffix, obj, names=None):
        """Key ``obj``, an attribute or item (``suffix``) of the current step."""
        where = self.path[-1]
        self.path[-1] = where + suffix
        try:
            self.value(obj, names)
        finally:
            self.path[-1] = where

    # -- values ---------------------------------------------------------------------

    def value(self, obj, names=None):
        t = type(obj)
        if t in _ATOMS:
            self.token(b"a", f"{t.__name__}:{obj!r}")
            return
        if t is tuple:
            self.token(b"(", str(len(obj)))
            for i, item in enumerate(obj):
                self.sub(f"[{i}]", item)
            return
        if t is frozenset:
            self.unordered(obj)
            return
        if t is types.CodeType:
            self.code(obj)
            return
        if isinstance(obj, types.ModuleType) and _version(obj.__name__) is None:
            # a module of the user's, never remembered: the names each
            # reader uses are keyed
            self.module_object(obj, names)
            return
        if self.seen(obj):
            return
        try:
            self.dispatch(obj, t)
        except (Unkeyable, RecursionError):
            raise
        except Exception as err:  # a library object that refuses inspection
            self.unkeyable(obj, f"a {_type_name(obj)} that could not be read "
                                f"({type(err).__name__})")

    def dispatch(self, obj, t):
        import torch

        if isinstance(obj, torch.nn.Module):
            self.module(obj)
        elif isinstance(obj, torch.Tensor):
            self.tensor(obj)
        elif isinstance(obj, types.FunctionType):
            self.function(obj)
        elif isinstance(obj, type):
            self.klass(obj)
        elif isinstance(obj, types.ModuleType):  # of an installed package
            self.token(b"F", f"{obj.__name__}:{_version(obj.__name__)}")
        elif isinstance(obj, types.MethodType):
            self.token(b"m")
            self.value(obj.__func__)
            self.sub(".__self__", obj.__self__)
        elif isinstance(obj, (types.BuiltinFunctionType, types.MethodWrapperType)):
            self.builtin(obj)
        elif isinstance(obj, (types.MethodDescriptorType, types.WrapperDescriptorType,
                              types.ClassMethodDescriptorType,
                              types.GetSetDescriptorType,
                              types.MemberDescriptorType)):
            self.token(b"d", obj.__name__)
            self.value(obj.__objclass__)
        elif isinstance(obj, (torch.dtype, torch.device, torch.layout,
                              torch.memory_format)):
            self.token(b"t", f"{t.__name__}:{obj}")
        elif isinstance(obj, np.ndarray):
            self.array(obj)
        elif isinstance(obj, np.generic):
            self.token(b"g", obj.dtype.str)
            self.token(b"b", obj.tobytes())
        elif isinstance(obj, np.ufunc):
            if getattr(np, obj.__name__, None) is not obj:
                self.unkeyable(obj, f"the ufunc {obj.__name__!r}, not numpy's own")
            else:
                self.token(b"u", f"{obj.__name__} numpy {np.__version__}")
        elif isinstance(obj, enum.Enum):
            self.token(b"e", obj.name)
            self.value(t)
        elif isinstance(obj, _BUILTIN_BASES):
            self.container(obj, t)
        elif isinstance(obj, functools.partial):
            self.token(b"p")
            self.value(obj.func)
            self.sub(".args", obj.args)
            self.sub(".keywords", obj.keywords)
            self.sub(".__dict__", obj.__dict__)
        elif isinstance(obj, (staticmethod, classmethod)):
            self.token(b"s", t.__name__)
            self.value(obj.__func__)
        elif isinstance(obj, property):
            self.token(b"P")
            for part in (obj.fget, obj.fset, obj.fdel):
                self.value(part)
        elif isinstance(obj, weakref.ref):
            self.token(b"w")
            self.sub("()", obj())
        elif isinstance(obj, (slice, range)):
            self.token(b"r", t.__name__)
            self.value((obj.start, obj.stop, obj.step))
        elif isinstance(obj, (logging.Logger, logging.LoggerAdapter)):
            # a logger writes; it never decides what forward returns
            self.token(b"L", getattr(obj, "name", None) or "")
        elif _plain_instance(t):
            self.instance(obj, t)
        else:
            self.reduced(obj, t)

    def unordered(self, obj):
        # a set's order follows its elements' hashes (per process for
        # strings): key each element alone, and sort
        keys = []
        for item in obj:
            walker = _Walker()
            walker.path = [*self.path[:-1], self.path[-1] + " (an element)"]
            walker.value(item)
            keys.append(walker.hexdigest())
        self.token(b"{", str(len(keys)))
        for key in sorted(keys):
            self.token(b"k", key)

    def container(self, obj, t):
        """Builtin containers and scalars, and objects of their subclasses."""
        base = next(b for b in t.__mro__ if b in _BUILTIN_BASES)
        if t is not base:  # a subclass: its class and attributes count too
            self.value(t)
            state = getattr(obj, "__dict__", None)
            if state:
                self.sub(".__dict__", dict(state))
        if base in (str, int, float, complex, bytes):
            self.token(b"a", f"{base.__name__}:{base(obj)!r}")
        elif base in (set, frozenset):
            self.unordered(obj)
        elif base is dict:
            self.token(b"D", str(len(obj)))
            for i, (k, v) in enumerate(dict.items(obj)):
                self.sub(f" (key {i})", k)
                self.sub(f"[{k!r}]" if type(k) in _ATOMS else f"[{i}]", v)
            factory = getattr(obj, "default_factory", None)
            if factory is not None:
                self.sub(".default_factory", factory)
        else:
            items = tuple.__iter__(obj) if base is tuple else list.__iter__(obj)
            self.token(b"L", str(len(obj)))
            for i, item in enumerate(items):
                self.sub(f"[{i}]", item)

    def tensor(self, t):
        import torch

        if (t.layout != torch.strided or t.is_quantized or t.is_meta
                or getattr(t, "is_nested", False)):
            kind = "a quantized tensor" if t.is_quantized else (
                "a meta tensor" if t.is_meta else f"a {t.layout} tensor")
            self.unkeyable(t, kind)
            return
        data = t.detach()
        if data.device.type != "cpu":
            data = data.cpu()
        data = data.resolve_conj().resolve_neg().contiguous()
        self.token(b"T", f"{type(t).__name__}:{data.dtype}:{tuple(data.shape)}")
        if data.numel():
            self.token(b"b")
            self.hash.update(memoryview(data.view(-1).view(torch.uint8).numpy()))
        state = getattr(t, "__dict__", None)
        if state:
            self.sub(".__dict__", dict(state))

    def array(self, arr):
        if arr.dtype.hasobject:
            self.token(b"A", f"object:{arr.shape}")
            for i, item in enumerate(arr.ravel().tolist()):
                self.sub(f"[{i}]", item)
            return
        arr = np.ascontiguousarray(arr)
        self.token(b"A", f"{arr.dtype.str}:{arr.shape}")
        self.token(b"b")
        try:
            self.hash.update(memoryview(arr).cast("B"))
        except (TypeError, ValueError):
            self.hash.update(arr.tobytes())

    # -- modules --------------------------------------------------------------------

    def module(self, m):
        self.token(b"M")
        self.value(type(m))
        state = vars(m)
        # hooks are kept under handle ids drawn from a process-wide counter:
        # they are keyed by position
        positions = _hook_positions(state)
        for name, item in state.items():
            if name == "training":
                continue
            self.token(b"n", name)
            if "hooks" in name and isinstance(item, dict):
                self.hooks(name, item, positions)
            elif name == "_non_persistent_buffers_set":
                self.value(sorted(item))
            elif name in ("_parameters", "_buffers", "_modules"):
                self.token(b"D", str(len(item)))
                for child, sub in item.items():
                    self.token(b"n", child)
                    self.sub(f".{child}", sub)
            else:
                self.sub(f".{name}", item)

    def hooks(self, name, hooks, positions):
        self.token(b"H", str(len(hooks)))
        for i, (handle, hook) in enumerate(hooks.items()):
            if isinstance(hook, bool):  # a flag on a hook of another dict
                self.token(b"h", positions.get(handle, "?"))
            else:
                self.sub(f" ({name.strip('_')} {i})", hook)

    def global_hooks(self):
        from torch.nn.modules import module as torch_module

        state = {name: hooks for name, hooks in sorted(vars(torch_module).items())
                 if name.startswith("_global_forward") and isinstance(hooks, dict)}
        positions = _hook_positions(state)
        for name, hooks in state.items():
            self.token(b"n", name)
            self.hooks(name, hooks, positions)

    # -- code -----------------------------------------------------------------------

    def function(self, fn):
        named = _library_name(fn)
        if named is not None:
            self.token(b"F", named)
            return
        self.token(b"f", fn.__qualname__)
        self.path.append(fn.__qualname__)
        try:
            self.code(fn.__code__)
            self.at("a default argument", fn.__defaults__)
            self.at("a default argument", fn.__kwdefaults__)
            cells = fn.__closure__ or ()
            for name, cell in zip(fn.__code__.co_freevars, cells, strict=True):
                try:
                    content = cell.cell_contents
                except ValueError:  # an empty cell
                    self.token(b"c", name)
                    continue
                self.token(b"C", name)
                self.at(f"closure variable {name!r}", content)
            if fn.__dict__:
                self.sub(".__dict__", dict(fn.__dict__))
            self.globals_read(fn)
        finally:
            self.path.pop()

    def code(self, co):
        self.token(b"c", getattr(co, "co_qualname", co.co_name))
        for field in ("co_argcount", "co_posonlyargcount", "co_kwonlyargcount",
                      "co_flags", "co_names", "co_varnames", "co_freevars",
                      "co_cellvars"):
            self.token(b"x", repr(getattr(co, field)))
        self.token(b"b", co.co_code)
        self.token(b"b", getattr(co, "co_exceptiontable", b""))
        self.token(b"(", str(len(co.co_consts)))
        for const in co.co_consts:
            self.value(const)

    def global_names(self, co):
        """``(globals read, modules imported, every name used)`` by a code
        object and the code nested in it; an import is ``(name, level,
        fromlist)``."""
        known = self.code_names.get(id(co))
        if known is not None:
            return known
        reads, imports, names = {}, {}, dict.fromkeys(co.co_names)
        consts = [None, None]  # the last two constants loaded: level, fromlist
        for ins in dis.get_instructions(co):
            if ins.opcode in _GLOBAL_OPS:
                reads[ins.argval] = None
            elif ins.opname == "IMPORT_NAME":
                imports[(ins.argval, consts[0], consts[1] is not None)] = None
            if ins.opname == "LOAD_CONST":
                consts = [consts[1], ins.argval]
        for const in co.co_consts:
            if isinstance(const, types.CodeType):
                inner = self.global_names(const)
                reads.update(dict.fromkeys(inner[0]))
                imports.update(dict.fromkeys(inner[1]))
                names.update(dict.fromkeys(inner[2]))
        known = (tuple(reads), tuple(imports), tuple(names))
        self.code_names[id(co)] = known
        self.alive.append(co)
        return known

    def globals_read(self, fn):
        reads, imports, names = self.global_names(fn.__code__)
        namespace = fn.__globals__
        builtins_ = getattr(fn, "__builtins__", None) or namespace.get(
            "__builtins__", builtins)
        if isinstance(builtins_, types.ModuleType):
            builtins_ = vars(builtins_)
        for name in reads:
            if name in namespace:
                self.token(b"G", name)
                self.at(f"global {name!r}", namespace[name], names)
            elif name in builtins_:
                self.token(b"B", name)
                self.at(f"builtin {name!r}", builtins_[name], names)
            else:  # not defined (yet): defining it changes the key
                self.token(b"0", name)
        for name, level, listed in imports:  # modules imported inside the code
            module = _imported(name, level, listed, namespace)
            self.token(b"I", f"{name}:{level}:{listed}")
            self.at(f"import {name!r}", module, names)


    def builtin(self, fn):
        owner = getattr(fn, "__self__", None)
        if isinstance(owner, type):  # a C method of a class: the class counts
            self.token(b"F", fn.__name__)
            self.value(owner)
        elif owner is None or isinstance(owner, types.ModuleType):
            module = getattr(fn, "__module__", None) or getattr(owner, "__name__", "")
            self.token(b"F", f"{module}:{fn.__qualname__}:{_version(module)}")
        else:  # bound to an object: the object counts
            self.token(b"F", fn.__name__)
            self.sub(".__self__", owner)

    def klass(self, cls):
        named = _library_name(cls)
        if named is not None:
            self.token(b"F", named)
            return
        self.token(b"k", cls.__qualname__)
        self.path.append(cls.__qualname__)
        try:
            if type(cls) is not type:
                self.value(type(cls))
            self.sub(".__bases__", cls.__bases__)
            for name, item in vars(cls).items():
                if name in _CLASS_SKIP:
                    continue
                self.token(b"n", name)
                if isinstance(item, types.FunctionType):
                    self.path.pop()  # a method shows its qualified name
                    try:
                        self.value(item)
                    finally:
                        self.path.append(cls.__qualname__)
                else:
                    self.sub(f".{name}", item)
        finally:
            self.path.pop()

    def module_object(self, mod, names):
        """A module of the user's: the attributes the reading code names."""
        if names is None:
            self.unkeyable(mod, f"the module {mod.__name__!r} held as a value "
                                "(only modules read by code are keyed)")
            return
        self.token(b"o", mod.__name__)
        namespace = vars(mod)
        for name in names:
            if name in namespace:
                self.token(b"n", name)
                self.at(f"{mod.__name__}.{name}", namespace[name], names)

    # -- other objects --------------------------------------------------------------

    def instance(self, obj, t):
        """An object of plain Python classes: its class and attributes."""
        self.token(b"i")
        self.value(t)
        state = getattr(obj, "__dict__", None)
        if state is not None:
            self.token(b"D", str(len(state)))
            for name, item in dict(state).items():
                self.token(b"n", str(name))
                self.sub(f".{name}", item)
        for klass in t.__mro__:
            for slot in _slots(klass):
                if slot in ("__dict__", "__weakref__"):
                    continue
                self.token(b"n", slot)
                try:
                    item = object.__getattribute__(obj, slot)
                except AttributeError:
                    self.token(b"0")
                    continue
                self.sub(f".{slot}", item)

    def reduced(self, obj, t):
        """Any other object, by what it gives pickle (objects of C types with
        internal state that do not pickle are refused; so are objects whose
        pickling is code of the user's, which is never run)."""
        for name in _PICKLING:
            owner = next((k for k in t.__mro__ if name in vars(k)), object)
            if _version(getattr(owner, "__module__", None)) is None:
                self.unkeyable(obj, f"a {_type_name(obj)}, whose {name} is code "
                                    "of your own (not run to key it)")
                return
        try:
            reduced = obj.__reduce_ex__(4)
        except Exception:
            self.unkeyable(obj)
            return
        if isinstance(reduced, str):  # pickled by name, as a global
            module = getattr(obj, "__module__", None)
            wrapped = getattr(obj, "__wrapped__", None)
            if wrapped is not None:  # a wrapper (functools.lru_cache): its code
                self.token(b"R", reduced)
                self.sub(".__wrapped__", wrapped)
            elif _version(module) is not None:  # a library's global
                self.token(b"R", f"{module}:{reduced}:{_version(module)}")
            else:
                self.unkeyable(obj, f"a {_type_name(obj)} known only by its name")
            return
        self.token(b"R", str(len(reduced)))
        self.value(t)
        parts = list(reduced) + [None] * (5 - len(reduced))
        self.sub(" (its reconstructor)", parts[0])
        self.sub(" (its pickled arguments)", parts[1])
        self.sub(" (its pickled state)", parts[2])
        for items in parts[3:5]:
            self.sub(" (its pickled items)", None if items is None else list(items))


def _imported(name, level, listed, namespace):
    """The module an import statement gives its code (None: not imported
    yet), as it is now: ``import a.b`` gives ``a``; ``from a import b``, ``a``
    itself (``b`` is among the names its code uses)."""
    if isinstance(level, int) and level > 0:
        package = namespace.get("__package__") or ""
        try:
            name = importlib.util.resolve_name("." * level + name, package)
        except (ImportError, ValueError):
            return None
    elif not listed:
        name = name.partition(".")[0]
    return sys.modules.get(name)


def _hook_positions(state):
    """Handle id -> the hook's place, over the hook dicts in ``state``."""
    positions = {}
    for name, hooks in state.items():
        if "hooks" in name and isinstance(hooks, dict):
            for i, (handle, hook) in enumerate(hooks.items()):
                if not isinstance(hook, bool):
                    positions[handle] = f"{name}[{i}]"
    return positions


def _slots(klass):
    slots = vars(klass).get("__slots__", ())
    return (slots,) if isinstance(slots, str) else tuple(slots)


def _plain_instance(t):
    """Whether objects of ``t`` hold their whole state in ``__dict__`` and
    ``__slots__``: every class they are made of, but ``object``, is Python
    code (not a C type, nor a type of a C extension)."""
    for klass in t.__mro__[:-1]:
        if not klass.__flags__ & _HEAPTYPE:
            return False
        module = sys.modules.get(getattr(klass, "__module__", None) or "")
        if module is not None and _is_extension(module):
            return False
        # a class statement adds at most the __dict__ and __weakref__ pointers
        # and its __slots__ to its base's layout; a C type adds its fields
        slots = [s for s in _slots(klass) if s not in ("__dict__", "__weakref__")]
        base = klass.__base__ or object
        if klass.__basicsize__ - base.__basicsize__ > 16 + 8 * len(slots):
            return False
    return True


def _is_extension(module):
    if module.__name__ in sys.builtin_module_names:
        return True
    path = getattr(module, "__file__", None) or ""
    return path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def _library_name(obj):
    """``"module:qualname:version"`` for a function or class of an installed
    package that its name finds; None for everything else (keyed by
    content): the user's, or made at run time (``<locals>``), or not what
    its name finds (replaced)."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return None
    version = _version(module)
    if version is None:
        return None
    if isinstance(obj, types.FunctionType):
        home = obj.__globals__.get("__name__")
        if home != module and _version(home) is None:
            return None  # library code around code of the user's (wraps)
    found = sys.modules.get(module)
    for part in qualname.split("."):
        space = getattr(found, "__dict__", None)
        found = space.get(part) if hasattr(space, "get") else None
        if isinstance(found, (staticmethod, classmethod)):
            found = found.__func__
    if found is not obj:
        return None
    return f"{module}:{qualname}:{version}"


_VERSIONS = {}
_VERSIONS_LOCK = threading.Lock()


def _version(module_name):
    """The version of the installed package the module ``module_name``
    belongs to, or None when it is not installed (the user's own code, keyed
    by content).

    Installed: built into Python, or a file under the standard library or a
    site-packages folder. The version: Python's for the standard library,
    else the distribution's.
    """
    if not isinstance(module_name, str):
        return None
    with _VERSIONS_LOCK:
        if module_name in _VERSIONS:
            return _VERSIONS[module_name]
    module = sys.modules.get(module_name)
    if module is None:
        return None  # not imported here: not cached (it may be imported later)
    version = _installed_version(module)
    with _VERSIONS_LOCK:
        _VERSIONS[module_name] = version
    return version


def _installed_version(module):
    python = f"python {sys.version}"
    name = getattr(module, "__name__", None)
    if not isinstance(name, str):
        return None
    if name in sys.builtin_module_names:
        return python
    path = getattr(module, "__file__", None)
    if path is None:
        paths = list(getattr(module, "__path__", None) or ())
        path = paths[0] if paths else None
    if not isinstance(path, str):
        spec = getattr(module, "__spec__", None)
        return python if getattr(spec, "origin", None) == "frozen" else None
    real = os.path.realpath(path)
    sites, stdlib = _library_folders()
    if real.startswith(sites):
        return _distribution_version(name.partition(".")[0], module)
    if real.startswith(stdlib):
        return python
    return None


@functools.lru_cache(maxsize=1)
def _library_folders():
    """(site-packages folders, standard library folders), each ending in a
    separator."""
    import site

    sites, stdlib = set(), set()
    paths = sysconfig.get_paths()
    for key in ("purelib", "platlib"):
        if paths.get(key):
            sites.add(paths[key])
    try:
        sites.update(site.getsitepackages())
    except AttributeError:  # some virtual environments
        pass
    user = getattr(site, "getusersitepackages", lambda: None)()
    if user:
        sites.add(user)
    for key in ("stdlib", "platstdlib"):
        if paths.get(key):
            stdlib.add(paths[key])

    def folders(paths):
        return tuple(os.path.join(os.path.realpath(p), "") for p in paths)

    return folders(sites), folders(stdlib)


def _distribution_version(top, module):
    from importlib import metadata

    try:
        return f"{top} {metadata.version(top)}"
    except Exception:
        pass
    try:
        for dist in _packages_distributions().get(top, ()):
            return f"{dist} {metadata.version(dist)}"
    except Exception:
        pass
    top_module = sys.modules.get(top, module)
    return f"{top} {getattr(top_module, '__version__', 'unknown')}"


@functools.lru_cache(maxsize=1)
def _packages_distributions():
    from importlib import metadata

    return metadata.packages_distributions()

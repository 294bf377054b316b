"""Model names, weights, checkpoints and source networks -> new torch modules.

Names resolve through torchvision's registry; weights through its weights
enums, so preprocessing comes from the weights' own ``transforms()``. Every
request gets a module of its own. What is costly to build (weights read from
disk or drawn at random) is kept per process as a read-only
:class:`Prototype`, found by content -- a torchvision weights name (its file
name carries a hash of its bytes, checked by torchvision when it downloads
it), the hash of a checkpoint's bytes, or the seed of random weights -- and
copied for each request, never shared. Each prototype is built once, under
a lock of its own; random weights are drawn from a generator of the build's
own, never from torch's global one, so builds in several threads give the
same networks and leave every thread's random numbers alone. The registry
keeps the most recent prototype and others up to ``_REGISTRY_BYTES``;
beyond that it keeps only those something else still holds. Heads are cut
off the copy (``nn.Identity``) and intermediate layers read with
``torchvision.models.feature_extraction``, so no hook is ever added to a
module that another object holds.
"""

import contextlib
import copy
import difflib
import os
import threading
import weakref
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torch.nn.parameter import is_lazy
from torch.overrides import TorchFunctionMode

from ._keys import known_file_key, module_digest, read_file

# the rules for a fitted skxfer estimator as a parameter live in _source; the
# names stay importable here (PretrainedFeatureExtractor imports them here)
from ._source import (  # noqa: F401
    clone_keeping_fitted_source,
    is_fitted_source,
    is_unfitted_source,
    refuse_nested_source_params,
    source_backbone,
    unwrap_source,
)

# the registry: prototypes kept (most recent last), within a count and a
# byte budget (the most recent is kept whatever its size); those beyond it
# stay findable while something else holds them
_CACHE = OrderedDict()
_CACHE_SIZE = 4
_REGISTRY_BYTES = 256 << 20
_ALIVE = weakref.WeakValueDictionary()
_BUILDING = {}  # key -> the lock its build holds
_CACHE_LOCK = threading.Lock()


def _torchvision():
    import torchvision

    return torchvision


def classification_models():
    tv = _torchvision()
    return tv.models.list_models(module=tv.models)


def did_you_mean(name, names, cutoff=0.6):
    """" Did you mean 'a', 'b'?" for the closest of ``names``, or ''."""
    close = difflib.get_close_matches(name, names, n=3, cutoff=cutoff)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def check_model_name(name):
    names = classification_models()
    if name in names:
        return
    hint = did_you_mean(name, names)
    raise ValueError(
        f"Unknown model {name!r}.{hint} Any name in "
        "torchvision.models.list_models(module=torchvision.models) works, or pass "
        "a torch.nn.Module."
    )


def is_checkpoint_path(value):
    """A path: a ``PathLike``, or a str naming a file (a separator, a checkpoint
    suffix, or an existing file). Used for ``weights=`` and ``backbone=``."""
    if isinstance(value, os.PathLike):
        return True
    return isinstance(value, str) and (
        os.sep in value or "/" in value
        or Path(value).suffix.lower() in (".pt", ".pth", ".bin", ".ckpt")
        or Path(value).is_file()
    )


def existing_file(path, parameter, kind, expected):
    """``path`` as a ``Path``; a missing file is named, with what it should be.

    The message reads "``parameter``='path': no ``kind`` there. Pass
    ``expected``."
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{parameter}={str(path)!r}: no {kind} there. Pass {expected}."
        )
    return path


def _existing_checkpoint(path):
    return existing_file(
        path, "weights", "checkpoint file",
        "the path of a state dict saved with torch.save(model.state_dict(), path)",
    )


def resolve_weights(name, weights):
    """``weights`` for torchvision model ``name`` -> a WeightsEnum member or None.

    Checkpoint paths are returned unchanged (loaded by :func:`load_checkpoint`).
    """
    if weights is None or is_checkpoint_path(weights):
        return weights
    tv = _torchvision()
    enum = tv.models.get_model_weights(name)
    if isinstance(weights, enum):
        return weights
    if isinstance(weights, str):
        key = weights.split(".")[-1]
        if key in enum.__members__:
            return enum[key]
    options = ", ".join(repr(k) for k in enum.__members__)
    raise ValueError(
        f"Unknown weights {weights!r} for model {name!r}. Use None, a path to a "
        f"local checkpoint, or one of: {options}."
    )


_SHOULD_BE = "a state dict saved with torch.save(model.state_dict(), path)"


def read_checkpoint(path):
    """``(state, key)``: a state-dict file's tensors and the hash of its bytes.

    The file is read once; the key is of exactly the bytes the tensors came
    from. Every refusal names the file and what it should be.
    """
    import io

    path = _existing_checkpoint(path)
    data, key, _ = read_file(path)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # text, pickled objects, a truncated file
        raise ValueError(
            f"weights={str(path)!r} is not {_SHOULD_BE}: torch.load could not read "
            f"it as tensors ({type(err).__name__}). skxfer loads weights only, "
            "never pickled objects."
        ) from err
    del data
    if isinstance(state, dict):
        for name in ("state_dict", "model", "model_state_dict"):
            if name in state and isinstance(state[name], dict):
                state = state[name]
                break
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()
    ):
        raise ValueError(
            f"weights={str(path)!r} does not hold {_SHOULD_BE} ({_what(state)}"
        )
    return state, key


def _what(state):
    """What a checkpoint holds instead of a state dict, and what to do."""
    if not isinstance(state, dict):
        return f"got {type(state).__name__})."
    names = list(state)
    shown = ", ".join(repr(k) for k in names[:10]) + (", ..." if len(names) > 10
                                                     else "")
    nested = next((k for k, v in state.items() if isinstance(v, dict)), None)
    if nested is None:
        return f"got a dict with keys {shown})."
    return (f"got a dict with keys {shown}). If the state dict is one of its "
            f"values, save that one: torch.save(checkpoint[{nested!r}], path).")


def _filled_by_torch(module, key, metadata):
    """Whether ``load_state_dict`` fills ``key`` in itself when a state dict
    lacks it: a BatchNorm's ``num_batches_tracked``, in a state dict saved
    before BatchNorm counted batches (its metadata gives no version, or one
    below 2 -- what torch's ``_NormBase._load_from_state_dict`` checks)."""
    prefix, _, name = key.rpartition(".")
    if name != "num_batches_tracked":
        return False
    try:
        norm = module.get_submodule(prefix)
    except AttributeError:
        return False
    version = (metadata.get(prefix) or {}).get("version")
    return (isinstance(norm, nn.modules.batchnorm._NormBase)
            and norm.track_running_stats and (version is None or version < 2))


def _differences(module, state):
    """The keys where ``state`` does not fit ``module``, first difference first:
    ``[(key, kind, checkpoint shape, model shape)]`` -- those torch's
    ``load_state_dict(strict=True)`` would refuse."""
    own = module.state_dict()
    metadata = getattr(state, "_metadata", None) or {}
    out = []
    for key, tensor in own.items():
        if key not in state:
            if _filled_by_torch(module, key, metadata):
                continue
            out.append((key, "missing", None, None if is_lazy(tensor) else
                        tuple(tensor.shape)))
        elif not is_lazy(tensor) and tuple(state[key].shape) != tuple(tensor.shape):
            out.append((key, "size", tuple(state[key].shape), tuple(tensor.shape)))
    out += [(key, "unexpected", tuple(t.shape), None)
            for key, t in state.items() if key not in own]
    return out


def _mismatch_error(path, differences):
    key, kind, theirs, ours = differences[0]
    if kind == "size":
        what = (f"size mismatch for {key!r}: shape {theirs} in the checkpoint, "
                f"{ours} in the model")
    elif kind == "missing":
        what = f"the model's {key!r} is missing from it"
    else:
        what = f"it has {key!r}, which the model does not"
    more = len(differences) - 1
    more = (f" ({more} more key{'s differ' if more > 1 else ' differs'})"
            if more else "")
    return ValueError(
        f"The checkpoint {str(path)!r} does not fit the model: {what}{more}. Pass "
        f"weights= a state dict of this architecture."
    )


def load_checkpoint(module, path, drop_head=False):
    """Load a state-dict file into ``module`` (``torch.load(weights_only=True)``).

    Every refusal names the file and the first key that does not fit. With
    ``drop_head``, a checkpoint whose only difference from ``module`` is its
    classifier (the last ``nn.Linear``: a network fine-tuned to other classes)
    loads without it, and the classifier becomes ``nn.Identity``.

    Returns
    -------
    dropped : dict or None
        ``{"head": name, "outputs": n or None}`` when the head was dropped.
    """
    state, _ = read_checkpoint(path)
    return _load_state(module, state, path, drop_head)


_PARALLEL = "module."  # what DataParallel and DistributedDataParallel prefix


def _load_state(module, state, path, drop_head):
    if state and all(k.startswith(_PARALLEL) for k in state) and not any(
            k.startswith(_PARALLEL) for k in module.state_dict()):
        # saved from a DataParallel wrapper: its keys without the prefix
        from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

        metadata = getattr(state, "_metadata", None)
        state = OrderedDict(state)
        if metadata is not None:
            state._metadata = OrderedDict(metadata)
        consume_prefix_in_state_dict_if_present(state, _PARALLEL)
    differences = _differences(module, state)
    head = head_input_layer(module) if drop_head and differences else None
    if differences and (head is None or not all(
            k.startswith(head + ".") for k, *_ in differences)):
        raise _mismatch_error(path, differences)
    if head is not None:
        weight = state.get(head + ".weight")
        metadata = getattr(state, "_metadata", None)
        state = OrderedDict((k, v) for k, v in state.items()
                            if not k.startswith(head + "."))
        if metadata is not None:
            state._metadata = metadata
    try:
        module.load_state_dict(state, strict=head is None)
    except RuntimeError as err:  # what the shapes did not show
        raise ValueError(
            f"The checkpoint {str(path)!r} does not fit the model: {err}"
        ) from err
    if head is None:
        return None
    cut_head(module)
    return {"head": head,
            "outputs": None if weight is None else int(weight.shape[0])}


def _download_error(name, weights, err):
    hub = torch.hub.get_dir()
    filename = os.path.basename(weights.url)
    return OSError(
        f"Could not load weights {weights} for model {name!r}: {err}. "
        f"torchvision looks for them in {os.path.join(hub, 'checkpoints', filename)}"
        " (set TORCH_HOME to change where) and downloads them when missing, "
        "which needs internet access. Copy the file there, or pass "
        "weights='/path/to/checkpoint.pth' (a state dict), or weights=None "
        "for a randomly initialised network."
    )


class Prototype:
    """A network built once per process from what was read, kept read-only.

    On the CPU, in eval mode, without gradients, and never handed out itself:
    networks are built from deep copies, with tensors of their own. A fitted
    extractor keeps a reference to the prototype it was fitted from, so it
    outlives the registry's eviction, :func:`skxfer.clear_feature_store` and
    the file it came from.

    Attributes
    ----------
    module : torch.nn.Module
        The network (do not change it).
    dropped : dict or None
        The classifier head of a checkpoint that was dropped (see
        :func:`load_checkpoint`); the module's head is then ``nn.Identity``.
    nbytes : int
        The bytes of its parameters and buffers.
    """

    def __init__(self, module, dropped=None):
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        self.module = module
        self.dropped = dropped
        self.nbytes = sum(t.numel() * t.element_size()
                          for t in module.state_dict().values())
        self._digest = None
        self._lock = threading.Lock()

    def digest(self):
        """The hash of the network's class, weights and buffers (computed once)."""
        with self._lock:
            if self._digest is None:
                self._digest = module_digest(self.module)
            return self._digest


def clear_registry():
    """Forget every prototype (fitted extractors keep the ones they hold)."""
    with _CACHE_LOCK:
        _CACHE.clear()
        _ALIVE.clear()


def registry_info():
    """``(prototypes kept, bytes of their tensors)``."""
    with _CACHE_LOCK:
        return len(_CACHE), sum(p.nbytes for p in _CACHE.values())


def _cached(key):
    with _CACHE_LOCK:
        prototype = _CACHE.get(key)
        if prototype is not None:
            _CACHE.move_to_end(key)
            return prototype
        prototype = _ALIVE.get(key)  # let go of, and still held elsewhere
    if prototype is not None:
        _keep(key, prototype)
    return prototype


def _keep(key, prototype):
    with _CACHE_LOCK:
        _ALIVE[key] = prototype
        _CACHE[key] = prototype
        _CACHE.move_to_end(key)
        while len(_CACHE) > 1 and (
                len(_CACHE) > _CACHE_SIZE
                or sum(p.nbytes for p in _CACHE.values()) > _REGISTRY_BYTES):
            _CACHE.popitem(last=False)


@contextlib.contextmanager
def _building(key):
    """Hold ``key``'s build lock: one build per key at a time."""
    with _CACHE_LOCK:
        lock = _BUILDING.setdefault(key, threading.Lock())
    with lock:
        yield


def _prototype(key, build, cache=True):
    """The registry's prototype for ``key``, built by ``build()`` once."""
    prototype = _cached(key) if cache else None
    if prototype is not None:
        return prototype
    if not cache:
        return build()
    with _building(key):
        prototype = _cached(key)  # built by another thread meanwhile
        if prototype is None:
            prototype = build()
            _keep(key, prototype)
    return prototype


# torch functions that draw random numbers and take a generator=
_RANDOM = frozenset((
    "uniform_", "normal_", "random_", "bernoulli_", "exponential_", "cauchy_",
    "log_normal_", "geometric_", "rand", "randn", "randint", "randperm",
    "normal", "bernoulli", "multinomial", "poisson", "rand_like", "randn_like",
    "randint_like",
))


class _OwnGenerator(TorchFunctionMode):
    """Give every draw of random numbers in the running thread ``generator``.

    ``torch.nn.init`` and the tensor methods it calls take a ``generator``;
    a torch function mode lives in one thread, so the draws of a build never
    touch torch's global generator, nor see another thread's reseeding.
    """

    def __init__(self, generator):
        super().__init__()
        self.generator = generator

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if kwargs.get("generator") is None and (
                "generator" in kwargs
                or getattr(func, "__name__", None) in _RANDOM) and not any(
                isinstance(a, torch.Generator) for a in args):
            kwargs["generator"] = self.generator
        return func(*args, **kwargs)


@contextlib.contextmanager
def _drawn_from(seed):
    """Draw the random numbers of a build from a generator seeded with
    ``seed`` (the numbers torch's global generator would give after
    ``torch.manual_seed(seed)``), in this thread only."""
    with _OwnGenerator(torch.Generator().manual_seed(int(seed))):
        yield


def named_prototype(name, weights, seed=0, cache=True):
    """The :class:`Prototype` of a torchvision model with ``weights``.

    Built once per process per content, found by a torchvision weights name
    (torchvision checks the file's hash, which its name carries, when it
    downloads it), the hash of a checkpoint's bytes, or the seed of random
    weights. A checkpoint is read once, hashed and loaded from the same
    bytes, its classifier dropped when that is all that differs from the
    architecture. The feature store keys on the network's own bytes
    (:meth:`Prototype.digest`).

    ``seed`` draws the weights when ``weights`` is None (the same network in
    every process and thread for the same seed), from a generator of the
    build's own: no thread's random numbers change. ``cache=False`` keeps no
    prototype of random weights (a one-off seed).
    """
    check_model_name(name)
    weights = resolve_weights(name, weights)
    if weights is not None and is_checkpoint_path(weights):
        path = _existing_checkpoint(weights)
        known = known_file_key(path)
        prototype = _cached((name, "file", known)) if known else None
        if prototype is not None:
            return prototype
        state, key = read_checkpoint(path)

        def from_checkpoint():
            with _drawn_from(seed):
                model = _torchvision().models.get_model(name, weights=None)
            return Prototype(model, _load_state(model, state, path, drop_head=True))

        return _prototype((name, "file", key), from_checkpoint)
    key = (name, None, int(seed)) if weights is None else (name, str(weights))
    return _prototype(key, lambda: Prototype(_build_named_model(name, weights, seed)),
                      cache=weights is not None or cache)


def _build_named_model(name, weights, seed):
    tv = _torchvision()
    with _drawn_from(seed):
        if weights is None:
            return tv.models.get_model(name, weights=None)
        try:
            return tv.models.get_model(name, weights=weights)
        except Exception as err:  # no network, a broken download, ...
            raise _download_error(name, weights, err) from err


def default_transform(name, weights):
    """The preprocessing a torchvision model expects: its weights' transforms.

    With ``weights=None`` or a checkpoint, the architecture's default weights
    still say how it is fed (resize, crop, ImageNet normalisation); reading that
    downloads nothing.
    """
    weights = resolve_weights(name, weights)
    if weights is None or is_checkpoint_path(weights):
        enum = _torchvision().models.get_model_weights(name)
        weights = enum.DEFAULT
    return weights.transforms()


def head_input_layer(model):
    """Name of the classifier, whose input is the penultimate representation:
    the last ``nn.Linear``; in a network without one, the last ``nn.Conv2d``
    when no module with parameters follows it (squeezenet's class-score
    convolution, followed by a ReLU and the pooling)."""
    last, conv = None, None
    for name, module in model.named_modules():
        if not name:
            continue
        if isinstance(module, nn.Linear):
            last = name
        if next(module.parameters(recurse=False), None) is not None:
            conv = name if isinstance(module, nn.Conv2d) else None
    return last if last is not None else conv


def cut_head(model):
    """Replace ``model``'s classifier (see :func:`head_input_layer`) with
    ``nn.Identity``.

    ``model`` must be a module of the caller's own (a fresh copy): it is
    changed in place and returned.
    """
    name = head_input_layer(model)
    if name is not None:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child,
                nn.Identity())
    return model


def head_is_linear(model):
    """Whether ``model``'s classifier is an ``nn.Linear`` (or it has none)."""
    name = head_input_layer(model)
    return name is None or isinstance(model.get_submodule(name), nn.Linear)


def input_channels(model):
    """Channels the first convolution wants (None when the model has none)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return None


class _Stop(Exception):
    pass


class _Output(nn.Module):
    """The one output of a ``create_feature_extractor`` graph, as a tensor."""

    def __init__(self, graph):
        super().__init__()
        self.graph = graph

    def forward(self, x):
        return self.graph(x)["out"]


class LayerTap(nn.Module):
    """Run ``model`` up to ``layer`` and return that layer's output.

    For modules that torch.fx cannot trace. ``model`` is a copy this tap owns;
    its hook is registered once and writes to thread-local storage, so taps
    may run in several threads at once. The forward stops right after the
    tapped layer.
    """

    def __init__(self, model, layer):
        super().__init__()
        self.model = model
        self.layer = layer
        self._local = threading.local()
        model.get_submodule(layer).register_forward_hook(self._capture)

    def _capture(self, module, args, output):
        self._local.out = output
        raise _Stop

    def forward(self, x):
        self._local.out = None
        try:
            self.model(x)
        except _Stop:
            pass
        out, self._local.out = self._local.out, None
        if out is None:
            raise RuntimeError(f"Layer {self.layer!r} was not reached by forward.")
        return out

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_local", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._local = threading.local()


def tap_layer(model, layer):
    """A module giving ``layer``'s output of ``model`` (a copy of the caller's own).

    torchvision's ``create_feature_extractor`` (an FX graph that ends at the
    layer) where the model can be traced the same way in train and eval mode,
    else (and for a timm model) a :class:`LayerTap`.
    """
    check_layer(model, layer)
    from ._timm import is_timm_model

    if is_timm_model(model):  # kept whole: timm's parameter groups are its blocks
        return LayerTap(model, layer)
    from torch.fx import GraphModule
    from torchvision.models.feature_extraction import create_feature_extractor

    try:
        dual = create_feature_extractor(model, {layer: "out"})
    except Exception:  # control flow torch.fx cannot trace, a non-node layer
        return LayerTap(model, layer)
    train, evaluate = (
        g.python_code("self").src for g in (dual.train_graph, dual.eval_graph)
    )
    if train != evaluate:
        # the forward branches on self.training (functional dropout, stochastic
        # depth): a pickled graph would keep one branch only
        return LayerTap(model, layer)
    return _Output(GraphModule(dual, dual.eval_graph))


def check_layer(model, layer):
    names = [n for n, _ in model.named_modules() if n]
    if layer in names:
        return
    hint = did_you_mean(layer, names, cutoff=0.5)
    raise ValueError(
        f"layer={layer!r} names no module of the model.{hint} The names are those "
        f"of model.named_modules(), e.g. {names[:6]}."
    )


def copy_module(module):
    """A deep copy of a user's module, so that the original is never changed."""
    return copy.deepcopy(module)

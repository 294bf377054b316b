"""Model names, weights, checkpoints and source networks -> new torch modules.

Names resolve through torchvision's registry; weights through its weights
enums, so preprocessing comes from the weights' own ``transforms()``. Every
request gets a module of its own. What is costly to build (weights read from
disk or drawn at random) is kept per process as a read-only
:class:`Prototype`, found by content -- a torchvision weights name (its file
name carries a hash of its bytes, checked by torchvision when it downloads
it), the hash of a checkpoint's bytes, or the seed of random weights -- and
copied for each request, never shared. Heads are cut off the copy
(``nn.Identity``) and intermediate layers read with
``torchvision.models.feature_extraction``, so no hook is ever added to a
module that another object holds.
"""

import copy
import difflib
import os
import threading
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from ._keys import known_file_key, module_digest, read_file
from ._seeding import seeded

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

_CACHE = OrderedDict()
_CACHE_SIZE = 4
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
            f"weights={str(path)!r} does not hold {_SHOULD_BE} (got "
            f"{type(state).__name__})."
        )
    return state, key


def _differences(module, state):
    """The keys where ``state`` does not fit ``module``, first difference first:
    ``[(key, kind, checkpoint shape, model shape)]``."""
    own = module.state_dict()
    out = []
    for key, tensor in own.items():
        if key not in state:
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


def _load_state(module, state, path, drop_head):
    differences = _differences(module, state)
    head = head_input_layer(module) if drop_head and differences else None
    if differences and (head is None or not all(
            k.startswith(head + ".") for k, *_ in differences)):
        raise _mismatch_error(path, differences)
    if head is not None:
        weight = state.get(head + ".weight")
        state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
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
    """

    def __init__(self, module, dropped=None):
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        self.module = module
        self.dropped = dropped
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


def _cached(key):
    with _CACHE_LOCK:
        prototype = _CACHE.get(key)
        if prototype is not None:
            _CACHE.move_to_end(key)
        return prototype


def _keep(key, prototype):
    with _CACHE_LOCK:
        _CACHE[key] = prototype
        _CACHE.move_to_end(key)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)


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
    every process for the same seed); the caller's RNGs are left as they were.
    ``cache=False`` keeps no prototype of random weights (a one-off seed).
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
        prototype = _cached((name, "file", key))
        if prototype is None:
            with seeded(seed):
                model = _torchvision().models.get_model(name, weights=None)
            dropped = _load_state(model, state, path, drop_head=True)
            del state
            prototype = Prototype(model, dropped)
            _keep((name, "file", key), prototype)
        return prototype
    key = (name, None, int(seed)) if weights is None else (name, str(weights))
    prototype = _cached(key)
    if prototype is None:
        prototype = Prototype(_build_named_model(name, weights, seed))
        if weights is not None or cache:
            _keep(key, prototype)
    return prototype


def _build_named_model(name, weights, seed):
    tv = _torchvision()
    with seeded(seed):
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
    """Name of the last ``nn.Linear``: its input is the penultimate representation."""
    last = None
    for name, module in model.named_modules():
        if name and isinstance(module, nn.Linear):
            last = name
    return last


def cut_head(model):
    """Replace ``model``'s classifier (its last ``nn.Linear``) with ``nn.Identity``.

    ``model`` must be a module of the caller's own (a fresh copy): it is
    changed in place and returned.
    """
    name = head_input_layer(model)
    if name is not None:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child,
                nn.Identity())
    return model


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
    else a :class:`LayerTap`.
    """
    check_layer(model, layer)
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

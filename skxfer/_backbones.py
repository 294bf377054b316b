"""Model names, weights and checkpoints -> torch modules; picking the layer to read.

Names resolve through torchvision's registry; weights through its weights
enums, so preprocessing comes from the weights' own ``transforms()``. Loaded
backbones are cached per process: cloning an extractor in a grid search does
not load the same weights again.
"""

import copy
import difflib
import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

_CACHE = OrderedDict()
_CACHE_SIZE = 4


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


def is_checkpoint_path(weights):
    return isinstance(weights, os.PathLike) or (
        isinstance(weights, str)
        and (
            os.sep in weights
            or weights.endswith((".pt", ".pth", ".bin", ".ckpt"))
            or Path(weights).is_file()
        )
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


def load_checkpoint(module, path):
    """Load a state-dict file into ``module`` (``torch.load(weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {str(path)!r}.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise ValueError(
            f"{str(path)!r} does not hold a state dict (got {type(state).__name__})."
            " Save one with torch.save(model.state_dict(), path)."
        )
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"The checkpoint {str(path)!r} does not fit the model: missing keys "
            f"{result.missing_keys[:5]}, unexpected keys "
            f"{result.unexpected_keys[:5]}."
        )
    return module


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


def load_named_model(name, weights):
    """A torchvision classification model in eval mode, on the CPU, cached."""
    check_model_name(name)
    weights = resolve_weights(name, weights)
    key = (name, str(weights))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    tv = _torchvision()
    if weights is None or is_checkpoint_path(weights):
        model = tv.models.get_model(name, weights=None)
        if weights is not None:
            load_checkpoint(model, weights)
    else:
        try:
            model = tv.models.get_model(name, weights=weights)
        except Exception as err:  # no network, a broken download, ...
            raise _download_error(name, weights, err) from err
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    _CACHE[key] = model
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return model


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
        if isinstance(module, nn.Linear):
            last = name
    return last


def input_channels(model):
    """Channels the first convolution wants (None when the model has none)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return None


class _Stop(Exception):
    pass


class LayerTap(nn.Module):
    """Run ``model`` up to ``layer`` and return that layer's input or output.

    The forward stops right after the tapped layer, so nothing above it is
    computed; ``model`` is shared, not copied.
    """

    def __init__(self, model, layer, side="output"):
        super().__init__()
        self.model = model
        self.layer = layer
        self.side = side

    def forward(self, x):
        target = self.model.get_submodule(self.layer)
        captured = {}

        if self.side == "input":

            def hook(module, args):
                captured["out"] = args[0]
                raise _Stop

            handle = target.register_forward_pre_hook(hook)
        else:

            def hook(module, args, output):
                captured["out"] = output
                raise _Stop

            handle = target.register_forward_hook(hook)
        try:
            self.model(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        if "out" not in captured:
            raise RuntimeError(f"Layer {self.layer!r} was not reached by forward.")
        return captured["out"]


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


def unwrap_source(obj):
    """The estimator inside ``sklearn.frozen.FrozenEstimator``; else ``obj``.

    A value in a ``GridSearchCV`` grid is cloned, which would reset a fitted
    source network; ``FrozenEstimator(source)`` survives that.
    """
    if type(obj).__name__ == "FrozenEstimator" and hasattr(obj, "estimator"):
        return obj.estimator
    return obj


def is_fitted_source(obj):
    """A fitted skxfer MLP estimator (duck-typed: lower modules never import it)."""
    obj = unwrap_source(obj)
    return bool(getattr(obj, "_skxfer_network", False)) and hasattr(obj, "net_")


def is_unfitted_source(obj):
    obj = unwrap_source(obj)
    return bool(getattr(obj, "_skxfer_network", False)) and not hasattr(obj, "net_")


def source_backbone(source):
    """The pretrained part of a fitted skxfer MLP estimator, copied.

    Returns ``(module, n_features_in, extractor)``: the hidden layers (after the
    source's own backbone, if it had one) as a module mapping the source's input
    to its last hidden representation; the width of tabular input (None for
    images); and the fitted extractor that preprocesses images (None for
    tables).
    """
    source = unwrap_source(source)
    module = source.module_
    if hasattr(module, "backbone"):  # a TransferNet: backbone + MLP head
        body = nn.Sequential(
            OrderedDict(backbone=module.backbone, hidden=module.head.hidden)
        )
        body = copy.deepcopy(body)
        extractor = getattr(source, "extractor_", None)
        n_in = None if extractor is not None and not extractor._tabular else (
            source.n_features_in_
        )
        return body, n_in, extractor
    return copy.deepcopy(module.hidden), source.n_features_in_, None


def clone_keeping_fitted_sources(estimator, names):
    """``clone`` that passes fitted source networks in ``names`` through as is.

    ``GridSearchCV`` and ``cross_val_score`` clone every parameter; a fitted
    source network would come back unfitted, its pretraining lost. It is never
    trained in place (``fit`` copies its weights), so sharing it is safe.
    """
    from sklearn.base import clone

    params = estimator.get_params(deep=False)
    new_params = {
        k: v if (k in names and is_fitted_source(v)) else clone(v, safe=False)
        for k, v in params.items()
    }
    new = type(estimator)(**new_params)
    config = getattr(estimator, "_sklearn_output_config", None)
    if config is not None:
        new._sklearn_output_config = copy.deepcopy(config)
    return new

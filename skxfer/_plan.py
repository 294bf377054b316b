"""The model's shape, settled once per fit; the architecture a warm start keeps.

A fitted skxfer MLP estimator has one of three shapes:

- ``"mlp"``: no backbone; the net trains the MLP on rows of features.
- ``"features_then_head"``: a wholly frozen backbone that is never released
  computes the same features every epoch, so it runs once and the net trains
  the head on its features (the same model as end to end, one backbone pass
  instead of one per epoch).
- ``"end_to_end"``: the net trains ``TransferNet(backbone, head)``.

and its input is rows of features (a table: no backbone, a fitted source, a
module that takes vectors) or images. :class:`TransferPlan` holds both; it is
computed for a fit from the parameters and the resolved backbone, and for a
fitted model from the model itself. Every later step reads it.
"""

import os
from dataclasses import dataclass, field

from torch import nn

from ._mlp import TransferNet
from ._source import is_fitted_source, unwrap_source
from ._store import module_digest
from ._validation import is_int


@dataclass(frozen=True)
class TransferPlan:
    """The shape of a model: ``mode`` and whether its input is ``rows``.

    Parameters
    ----------
    mode : {'mlp', 'features_then_head', 'end_to_end'}
        What the net trains (see the module's docstring).
    rows : bool
        True when ``X`` is rows of features validated as a table; False for
        images, which the backbone's extractor decodes and preprocesses.
    """

    mode: str
    rows: bool
    # derived (attributes, not properties: predictions read them per call)
    features_first: bool = field(init=False, repr=False)
    end_to_end: bool = field(init=False, repr=False)
    trains_on_rows: bool = field(init=False, repr=False)
    representation: str = field(init=False, repr=False)

    def __post_init__(self):
        if self.mode not in ("mlp", "features_then_head", "end_to_end"):
            raise ValueError(f"Unknown model shape {self.mode!r}.")
        # features then head: the backbone runs once, the net trains the head
        object.__setattr__(self, "features_first", self.mode == "features_then_head")
        # end to end: the net trains the backbone and the head together
        object.__setattr__(self, "end_to_end", self.mode == "end_to_end")
        # the net trains on in-memory rows of features, not on images that
        # pass through a backbone (and may stream through a DataLoader)
        object.__setattr__(self, "trains_on_rows", self.rows or not self.end_to_end)
        # the name, in the module the net trains, of the head's last hidden
        # layer: where a loss term reads the learned representation
        object.__setattr__(self, "representation",
                           "head.hidden" if self.end_to_end else "hidden")

    @classmethod
    def for_fit(cls, params, extractor):
        """The shape a fit with ``params`` and the fitted ``extractor`` builds."""
        if extractor is None:
            return cls("mlp", True)
        wholly_frozen = params["freeze"] is True and params["unfreeze_at"] is None
        mode = "features_then_head" if wholly_frozen else "end_to_end"
        return cls(mode, bool(extractor._tabular))

    @classmethod
    def of_fitted(cls, extractor, net_module):
        """The shape of a fitted model: its extractor and the net's module."""
        if extractor is None:
            return cls("mlp", True)
        trained_together = isinstance(net_module, TransferNet)
        mode = "end_to_end" if trained_together else "features_then_head"
        return cls(mode, bool(extractor._tabular))


def hidden_sizes(params):
    """``hidden_layer_sizes`` as a tuple."""
    sizes = params["hidden_layer_sizes"]
    return (sizes,) if is_int(1)(sizes) else tuple(sizes)


def _token(value):
    """A comparable stand-in for a parameter value, stable across pickling."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return (type(value).__name__, value)
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_token(v) for v in value))
    if isinstance(value, os.PathLike):
        return ("path", os.fspath(value))
    if isinstance(value, nn.Module):
        return ("module", repr(value), module_digest(value))
    if is_fitted_source(value):
        source = unwrap_source(value)
        return ("source", type(source).__name__, module_digest(source.module_))
    if hasattr(value, "get_params"):
        params = value.get_params(deep=False)
        return (type(value).__name__,
                tuple(sorted((k, _token(v)) for k, v in params.items())))
    return ("repr", repr(value))


def architecture(params):
    """What decides the network's structure, in a comparable form.

    The backbone by content: a name or path by its text, a module by its
    structure and weights, a fitted source by its network, an extractor spec
    by its parameters (so ``set_params(backbone__pooling=...)`` counts as a
    change). All of it survives pickling, so a loaded estimator continues
    training.
    """
    freeze = params["freeze"]
    if freeze is True or freeze is False:
        freeze = "all" if freeze else "none"  # True == 1 in Python
    elif isinstance(freeze, (list, tuple)):
        freeze = tuple(freeze)
    else:
        freeze = ("blocks", int(freeze))
    return {
        "hidden_layer_sizes": tuple(int(s) for s in hidden_sizes(params)),
        "activation": params["activation"],
        "batch_norm": bool(params["batch_norm"]),
        "dropout": float(params["dropout"]),
        "backbone": _token(params["backbone"]),
        "freeze": freeze,
        "unfreeze_at": params["unfreeze_at"],
        "l2_sp > 0": params["l2_sp"] > 0,
    }


def check_architecture(fitted, params, method):
    """Continuing needs the network that was fitted: refuse a changed one.

    ``fitted`` is the :func:`architecture` recorded at the first fit;
    ``method`` names the call in the message.
    """
    current = architecture(params)
    for name, old in fitted.items():
        if current[name] != old:
            shown = {"backbone": params["backbone"], "l2_sp > 0": params["l2_sp"]}
            raise ValueError(
                f"{method} continues training the fitted network, but "
                f"{name.split()[0]} changed (now {shown.get(name, current[name])!r}"
                "), which changes the network. Set it back, or fit anew "
                "(warm_start=False, or a new estimator for partial_fit)."
            )

"""The training loss: the supervised loss with its weights, plus extra terms.

The supervised loss of a batch is the criterion's, or with sample weights
``sum(w_i * c_i * l_i) / sum(w_i * c_i)`` (``w``: sample weights, ``c``: the
weight of each row's class). :func:`row_weights` is the one place that says
what ``w_i * c_i`` is; the loss and the per-epoch averages both use it.

Extra terms are the one seam for anything added to the loss: a
:class:`LossTerm` has a name (its per-epoch value is recorded in the net's
history under that name), a weight, and the names of the layers whose outputs
it reads. L2-SP reads no layer (it is a function of the weights); an
alignment loss for domain adaptation reads an inner layer's output for a
source batch and a target batch; a spectral penalty reads a layer's weights
or outputs. The net captures the outputs a term names while the batch runs
forward (:func:`capture`) and hands them to the term as :class:`Activations`.
"""

from contextlib import contextmanager

import torch
from torch import nn


def row_weights(target, class_weight, dtype, device):
    """``w_i * c_{y_i}`` for each row of a batch target ``{"y", "sample_weight"}``.

    Parameters
    ----------
    target : dict
        A batch's target with per-row ``sample_weight`` (see ``TensorData``).
    class_weight : torch.Tensor or None
        The weight of each class (the criterion's ``weight``), or None.
    dtype, device : torch.dtype, torch.device
        Where and in what precision to compute.
    """
    weight = target["sample_weight"].detach().to(device=device, dtype=dtype)
    if class_weight is None:
        return weight
    class_weight = class_weight.detach().to(device=device, dtype=dtype)
    return weight * class_weight[target["y"].to(device)]


def weighted_loss(criterion, y_pred, target):
    """sum(w_i * c_i * l_i) / sum(w_i * c_i): sample weights w, class weights c.

    ``l_i`` is the row's loss (cross-entropy, or its squared error averaged
    over the outputs); without weights this is the criterion's own (weighted)
    mean.
    """
    y = target["y"].to(y_pred.device)
    w = target["sample_weight"].to(y_pred.device, y_pred.dtype)
    class_weight = None
    if isinstance(criterion, nn.CrossEntropyLoss):
        class_weight = criterion.weight
        per_row = nn.functional.cross_entropy(
            y_pred, y, weight=class_weight, reduction="none"
        )  # already c_i * l_i
    else:
        per_row = (y_pred - y.to(y_pred.dtype)).pow(2).flatten(1).mean(1)
    total = row_weights(target, class_weight, y_pred.dtype, y_pred.device).sum()
    return (w * per_row).sum() / total.clamp_min(torch.finfo(y_pred.dtype).tiny)


class Activations:
    """The outputs of named layers in one training step.

    ``source[name]`` is the output of layer ``name`` for the batch being
    trained on; ``target[name]`` the same layer's output for the target batch
    that came with it (empty without one, see :class:`SourceTarget`).
    """

    __slots__ = ("source", "target")

    def __init__(self):
        self.source = {}
        self.target = {}


class SourceTarget:
    """A training batch's inputs from two domains: ``source`` and ``target``.

    The net predicts (and the supervised loss scores) the source rows; the
    target rows run through the same network so that loss terms can read
    their layer outputs (``Activations.target``). skorch counts the batch by
    its source rows (``len``).
    """

    __slots__ = ("source", "target")

    def __init__(self, source, target):
        self.source = source
        self.target = target

    def __len__(self):
        return len(self.source)


class LossTerm:
    """An extra term of the training loss: ``weight * term(module, activations)``.

    Subclasses set ``name`` (the history key of the term's per-epoch value),
    ``weight`` and ``layers`` (names from ``module.named_modules()`` whose
    outputs the term reads; empty for a function of the weights), and
    implement ``__call__(module, activations)``, returning a scalar tensor, or
    None when there is nothing to add in this step.
    """

    name = "term"
    weight = 1.0
    layers = ()

    def __call__(self, module, activations):
        raise NotImplementedError


@contextmanager
def capture(module, layers, into):
    """Within the block, the output of each layer in ``layers`` goes to ``into``.

    Forward hooks on ``module`` (a network of the net's own, being trained in
    one thread), removed on leaving the block.
    """
    handles = []
    try:
        for name in layers:
            def keep(_, args, output, name=name):
                into[name] = output

            handles.append(module.get_submodule(name).register_forward_hook(keep))
        yield into
    finally:
        for handle in handles:
            handle.remove()


def check_terms(terms, module):
    """Refuse a term that names a layer ``module`` does not have, and two
    terms of one name (each name is a key of the history)."""
    seen = [term.name for term in terms]
    if len(set(seen)) < len(seen):
        raise ValueError(f"Loss terms need names of their own; got {seen}.")
    names = {name for name, _ in module.named_modules()}
    for term in terms:
        missing = [layer for layer in term.layers if layer not in names]
        if missing:
            raise ValueError(
                f"The loss term {term.name!r} reads layers {missing} that the "
                f"network does not have; its layers are named like "
                f"{sorted(n for n in names if n)[:6]}."
            )

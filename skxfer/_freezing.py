"""Freeze specs, unfreezing, backbone learning rates, BatchNorm policy and L2-SP."""

from fnmatch import fnmatch

from torch import nn

from ._backbones import LayerTap
from ._losses import LossTerm
from ._mlp import Hidden
from ._timm import timm_blocks


def _descend(backbone):
    """Look through single wrappers: ``(prefix, [(name, block)])``.

    The hidden layers of an MLP are blocks however many there are; a layer
    tap's blocks end with the tapped layer (what comes after it never runs).
    """
    prefix, module = "", backbone
    while True:
        if isinstance(module, LayerTap):
            prefix, module = f"{prefix}model.", _before_tap(module)
        children = [
            (name, child)
            for name, child in module.named_children()
            if any(True for _ in child.parameters())
        ]
        if len(children) != 1 or isinstance(module, Hidden):
            return prefix, children
        name, module = children[0]
        prefix = f"{prefix}{name}."


def _before_tap(tap):
    """The tapped model's children up to the one holding the tapped layer."""
    top = tap.layer.split(".")[0]
    kept = nn.Module()
    for name, child in tap.model.named_children():
        kept.add_module(name, child)
        if name == top:
            break
    return kept


def backbone_blocks(backbone):
    """The backbone's blocks in the order it computes them: ``[(name, module)]``.

    A block is a direct child that holds parameters; single wrappers (a
    ``Sequential`` of one trainable child, a layer tap around a model) are
    looked through, so a torchvision ResNet gives conv1, bn1, layer1..layer4
    (its classifier ``fc`` is cut off before: it is no block).
    """
    prefix, children = _descend(backbone)
    return [(f"{prefix}{name}", child) for name, child in children]


def parameter_blocks(backbone):
    """The backbone's blocks with their parameters, in the order it computes them.

    ``[(label, parameter names, fnmatch patterns of those names)]``: for a
    timm model, timm's own coarse groups (:func:`~skxfer._timm.timm_blocks`:
    a resnet's stem, then layer1..layer4; a vision transformer's stem, then
    each of blocks.N); for other networks, :func:`backbone_blocks`.
    """
    blocks = timm_blocks(backbone)
    if blocks is not None:
        return blocks
    names = [name for name, _ in backbone.named_parameters()]
    return [(block, [n for n in names if n.startswith(block + ".")], [block + ".*"])
            for block, _ in backbone_blocks(backbone)]


def _short(name, prefix):
    """A parameter's name inside the wrapped model (``layer4.0.conv1.weight``)."""
    return name[len(prefix):] if name.startswith(prefix) else name


def frozen_parameter_names(freeze, backbone):
    """Names (relative to the backbone) of the parameters ``freeze`` freezes."""
    names = [name for name, _ in backbone.named_parameters()]
    if freeze is True:
        return names
    if freeze is False:
        return []
    prefix, _ = _descend(backbone)
    if isinstance(freeze, int):
        blocks = parameter_blocks(backbone)
        if freeze > len(blocks):
            raise ValueError(
                f"freeze={freeze} asks for more blocks than the backbone has "
                f"({len(blocks)}: {[_short(b, prefix) for b, _, _ in blocks]}). "
                f"Use an int <= {len(blocks)}, True for all of it, or a list of "
                "name patterns."
            )
        chosen = {n for _, block, _ in blocks[:freeze] for n in block}
        return [n for n in names if n in chosen]
    frozen = []
    for pattern in freeze:
        # patterns match the names inside the wrapped model (e.g. torchvision's
        # "layer4.*") or the full names
        hits = [
            n for n in names
            if fnmatch(_short(n, prefix), pattern) or fnmatch(n, pattern)
        ]
        if not hits:
            shown = [_short(n, prefix) for n in names[:4]]
            raise ValueError(
                f"freeze pattern {pattern!r} matches no parameter of the backbone. "
                f"Its parameters are named like {shown}."
            )
        frozen.extend(h for h in hits if h not in frozen)
    return frozen


def l2_sp_penalty(module):
    """Sum of squared distances of backbone weights from their pretrained values."""
    total = None
    reference = module.sp_reference
    for name, param in module.backbone.named_parameters():
        if not param.requires_grad:
            continue
        ref = getattr(reference, name.replace(".", "__"))
        term = (param - ref).pow(2).sum()
        total = term if total is None else total + term
    return total


class L2SP(LossTerm):
    """L2-SP (Li et al., 2018): ``strength / 2 * ||w - w_pretrained||^2``.

    A loss term over the trainable backbone weights of a ``TransferNet``
    that holds its starting weights (:func:`store_reference`); it reads no
    layer output. Its per-epoch value is recorded as ``l2_sp``.
    """

    name = "l2_sp"

    def __init__(self, strength):
        self.strength = strength
        self.weight = 0.5 * strength

    def __call__(self, module, activations):
        if getattr(module, "sp_reference", None) is None:
            return None
        return l2_sp_penalty(module)


def store_reference(module):
    """Keep a copy of the backbone's starting weights as buffers (for L2-SP)."""
    holder = nn.Module()
    for name, param in module.backbone.named_parameters():
        holder.register_buffer(name.replace(".", "__"), param.detach().clone())
    module.sp_reference = holder


def backbone_param_groups(backbone, lr, decay=1.0):
    """skorch ``optimizer__param_groups`` giving the backbone its learning rates.

    With ``decay < 1`` each block (see :func:`parameter_blocks`) gets ``decay``
    times the rate of the block above it; the top block gets ``lr``.
    Parameters outside any block share the lowest rate.
    """
    if decay == 1.0:
        return [("backbone.*", {"lr": lr})]
    blocks = parameter_blocks(backbone)
    groups = [
        (f"backbone.{pattern}", {"lr": lr * decay ** (len(blocks) - 1 - i)})
        for i, (_, _, patterns) in enumerate(blocks) for pattern in patterns
    ]
    groups.append(("backbone.*", {"lr": lr * decay ** max(len(blocks) - 1, 0)}))
    return groups

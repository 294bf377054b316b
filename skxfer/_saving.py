"""Save a trained MLP for later transfer, and load it back as a backbone.

The file is a plain dict of numbers, strings and CPU tensors, so it loads with
``torch.load(weights_only=True)`` on any machine, with or without a GPU.
"""

import torch

from ._backbones import existing_file
from ._mlp import MLP

_FORMAT = "skxfer-network-1"


def save_network(estimator, path):
    module = estimator.module_
    config = dict(
        n_features=int(estimator.n_features_in_),
        hidden_layer_sizes=[int(b.linear.out_features) for b in module.hidden],
        activation=estimator.activation,
        batch_norm=bool(estimator.batch_norm),
        dropout=float(estimator.dropout),
    )
    state = {k: v.detach().cpu() for k, v in module.hidden.state_dict().items()}
    torch.save({"format": _FORMAT, "config": config, "hidden": state}, path)


def load_network(path):
    """``(hidden layers as a module, input width)`` from a saved network file."""
    path = existing_file(
        path, "backbone", "file",
        "the path of a network written by save_network, or a torchvision model "
        "name",
    )
    not_ours = (
        f"backbone={str(path)!r} is not a network saved by skxfer's save_network. "
        "For a state dict of a torch module, build the module and pass it "
        "as backbone (or use PretrainedFeatureExtractor(model, weights=path))."
    )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # text, objects that are not tensors, a truncated file
        raise ValueError(f"{not_ours} ({type(err).__name__} on reading it.)") from err
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError(not_ours)
    config = payload["config"]
    mlp = MLP(
        config["n_features"],
        config["hidden_layer_sizes"],
        1,
        activation=config["activation"],
        batch_norm=config["batch_norm"],
        dropout=config["dropout"],
    )
    mlp.hidden.load_state_dict(payload["hidden"])
    return mlp.hidden, config["n_features"]

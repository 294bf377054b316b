"""The multilayer perceptron as a torch module: layers, batch norm, dropout, init."""

from collections import OrderedDict

from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "logistic": nn.Sigmoid,  # scikit-learn's name for the sigmoid
    "identity": nn.Identity,
}

INITS = (
    "auto",
    "default",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "orthogonal",
)

# the gain ``nn.init.calculate_gain`` knows for each activation
_GAIN_NAMES = {
    "relu": "relu",
    "leaky_relu": "leaky_relu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "logistic": "sigmoid",
    "selu": "selu",
}
_RELU_LIKE = ("relu", "leaky_relu", "elu", "gelu", "silu")
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _init_linear(linear, init, activation):
    """Initialise one ``nn.Linear`` in place; biases start at zero."""
    if init == "default":
        return
    if init == "auto":
        # He for the ReLU family, Glorot for the saturating ones (and SELU's own
        # LeCun-normal, which is kaiming_normal with the linear gain)
        if activation in _RELU_LIKE:
            init = "kaiming_uniform"
        elif activation == "selu":
            nn.init.kaiming_normal_(linear.weight, nonlinearity="linear")
            nn.init.zeros_(linear.bias)
            return
        else:
            init = "xavier_uniform"
    nonlinearity = "relu" if activation in _RELU_LIKE else "linear"
    if activation == "leaky_relu":
        nonlinearity = "leaky_relu"
    gain = 1.0  # Glorot & Bengio (2010) define it without a gain
    if init == "xavier_uniform":
        nn.init.xavier_uniform_(linear.weight, gain=gain)
    elif init == "xavier_normal":
        nn.init.xavier_normal_(linear.weight, gain=gain)
    elif init == "kaiming_uniform":
        nn.init.kaiming_uniform_(linear.weight, nonlinearity=nonlinearity)
    elif init == "kaiming_normal":
        nn.init.kaiming_normal_(linear.weight, nonlinearity=nonlinearity)
    elif init == "orthogonal":
        nn.init.orthogonal_(linear.weight, gain=gain)
    nn.init.zeros_(linear.bias)


class Hidden(nn.Sequential):
    """The hidden blocks of an :class:`MLP`; each block is one unit for freezing."""


class MLP(nn.Module):
    """A backprop multilayer perceptron: ``hidden`` blocks, then ``output``.

    Each hidden block is ``Linear -> [BatchNorm1d] -> activation -> [Dropout]``
    and is named ``hidden.<i>``; the new head of a transferred network is
    ``output``. The split makes the hidden part reusable as a backbone.

    Parameters
    ----------
    n_features : int
        Width of the input.
    hidden_layer_sizes : sequence of int
        Width of each hidden layer; empty for a linear model.
    n_outputs : int
        Width of the output layer (classes for a classifier, targets for a
        regressor).
    activation : str
        A key of ``ACTIVATIONS``.
    batch_norm : bool
        Put a ``BatchNorm1d`` after each hidden ``Linear``.
    dropout : float
        Dropout probability after each hidden activation.
    init : str
        One of ``INITS``.
    """

    def __init__(
        self,
        n_features,
        hidden_layer_sizes,
        n_outputs,
        activation="relu",
        batch_norm=False,
        dropout=0.0,
        init="xavier_uniform",
    ):
        super().__init__()
        blocks = []
        width = n_features
        for size in hidden_layer_sizes:
            layers = OrderedDict(linear=nn.Linear(width, size))
            if batch_norm:
                layers["bn"] = nn.BatchNorm1d(size)
            layers["act"] = ACTIVATIONS[activation]()
            if dropout > 0:
                layers["dropout"] = nn.Dropout(dropout)
            _init_linear(layers["linear"], init, activation)
            blocks.append(nn.Sequential(layers))
            width = size
        self.hidden = Hidden(*blocks)
        self.output = nn.Linear(width, n_outputs)
        # the output layer feeds a loss, not an activation: Glorot with gain 1
        _init_linear(self.output, "default" if init == "default" else
                     "xavier_uniform", "identity")

    def forward(self, X):
        return self.output(self.hidden(X))

    def train(self, mode=True):
        # skorch calls train() before every batch; setting the same mode on
        # every layer again costs as much as a small layer's forward pass
        if isinstance(mode, bool) and all(m.training is mode for m in self.modules()):
            return self
        return super().train(mode)


class TransferNet(nn.Module):
    """A pretrained ``backbone`` followed by a new MLP ``head``.

    ``backbone`` maps the input to feature vectors (N, D); ``head`` is an
    :class:`MLP` from D to the target's outputs. Parameter names start with
    ``backbone.`` or ``head.``, which freezing and learning-rate groups use.

    ``train()`` leaves the parts of the backbone that must not change in eval
    mode: all of it when no parameter of it trains (a fixed feature
    extractor: no dropout, BatchNorm keeps its statistics); otherwise every
    BatchNorm layer whose parameters are frozen, and with
    ``bn_mode='frozen'`` every BatchNorm layer of the backbone.
    """

    def __init__(self, backbone, head, bn_mode="train"):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.bn_mode = bn_mode

    def forward(self, X):
        return self.head(self.backbone(X))

    def train(self, mode=True):
        super().train(mode)
        if mode:
            self._freeze_modes()
        return self

    def _freeze_modes(self):
        backbone = self.backbone
        if not any(p.requires_grad for p in backbone.parameters()):
            backbone.eval()
            return
        for child in backbone.modules():
            if isinstance(child, BATCH_NORMS):
                params = list(child.parameters())
                frozen = bool(params) and not any(p.requires_grad for p in params)
                if getattr(self, "bn_mode", "train") == "frozen" or frozen:
                    child.eval()

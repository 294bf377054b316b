"""The skorch net that trains skxfer's networks.

skorch runs the loop (callbacks, history, early stopping, checkpoints); this
module makes its data path fast for data that fits in memory, and adds the
extra loss terms (:mod:`skxfer._losses`) to the supervised loss. skorch's
default ``DataLoader`` fetches one row at a time and collates the rows of each
batch, which dominates the cost of a small network. Here the whole array is one
tensor (moved to the device once when it fits), and each batch is one slice of a
shuffled index -- what a hand-written PyTorch loop does.
"""

import functools
import math

import numpy as np
import torch
from skorch import NeuralNet
from skorch.dataset import unpack_data
from skorch.utils import TeeGenerator
from torch.utils.data import Dataset

from ._callbacks import stopped_early
from ._losses import Activations, SourceTarget, capture, check_terms, weighted_loss
from ._mlp import BATCH_NORMS
from ._precision import DTYPES, grad_scaler

# arrays up to this size are moved to the GPU once, instead of batch by batch
_DEVICE_RESIDENT_BYTES = 1 << 30
# rows per inference batch (batches are padded to it: see BatchIterator)
INFERENCE_BATCH_SIZE = 256


class TensorData(Dataset):
    """In-memory features ``X``, optional targets ``y`` and per-sample extras.

    ``extras`` maps names (``"sample_weight"``; later domain labels) to
    tensors with one entry per sample; with extras, a batch's target is the
    dict ``{"y": y_batch, name: extra_batch, ...}`` (see
    :meth:`SkxferNet.get_loss`). Supports the ``Dataset`` protocol (so any
    skorch callback or a plain ``DataLoader`` can read it), and is batched fast
    by :class:`BatchIterator`.
    """

    def __init__(self, X, y=None, extras=None):
        self.X = X
        self.y = y
        self.extras = extras or {}

    def __len__(self):
        return len(self.X)

    def target(self, index, take=None):
        """The target of the samples at ``index``: ``y``, or a dict with extras.

        ``index`` is anything a tensor accepts; ``take(tensor)`` may gather
        the rows instead (:class:`BatchIterator` passes ``index_select``).
        """
        if self.y is None:
            return None
        if take is None:
            def take(t):
                return t[index]
        if not self.extras:
            return take(self.y)
        return {"y": take(self.y),
                **{k: take(v) for k, v in self.extras.items()}}

    def __getitem__(self, i):
        yi = self.target(i)
        return self.X[i], torch.zeros(0) if yi is None else yi

    def subset(self, indices):
        indices = torch.as_tensor(indices, dtype=torch.long)
        return TensorData(
            self.X[indices], None if self.y is None else self.y[indices],
            {k: v[indices] for k, v in self.extras.items()},
        )

    def to(self, device):
        return TensorData(
            self.X.to(device), None if self.y is None else self.y.to(device),
            {k: v.to(device) for k, v in self.extras.items()},
        )


def _taker(index):
    """Rows ``index`` of a tensor: a slice, or a tensor of row positions >= 0.

    ``index_select`` gathers a batch of rows two to three times faster than
    advanced indexing (``X[positions]``), which matters at small batches.
    """
    if torch.is_tensor(index):
        return lambda t: t.index_select(0, index.to(t.device))
    return lambda t: t[index]


class PaddedBatch(tuple):
    """An ``(X, None)`` inference batch padded with zero rows; ``n`` are real."""

    n = 0


class BatchIterator:
    """Batches of a :class:`TensorData`, shuffled each epoch when ``shuffle``.

    ``rng`` is a ``numpy.random.RandomState``: the order of the batches is then
    reproducible under the estimator's ``random_state``.

    Inference batches (no targets, no shuffling) are padded with zero rows to
    ``batch_size``: every row then goes through a matrix product of the same
    shape, so a sample's prediction does not depend on which other samples (or
    how many) are predicted with it -- in float32, a product of another shape
    can differ in the last bits.
    """

    def __init__(self, dataset, batch_size, shuffle=False, rng=None, device="cpu",
                 drop_single=False):
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rng = rng
        self.device = device
        # a training batch of one row cannot be batch-normalised: leave out a
        # last batch of one (another row each epoch, as the order is shuffled)
        self.drop_single = drop_single and len(dataset) % batch_size == 1 and (
            len(dataset) > 1
        )

    def __len__(self):
        return math.ceil(len(self.dataset) / self.batch_size) - self.drop_single

    def __iter__(self):
        X, y = self.dataset.X, self.dataset.y
        n, bs = len(X), self.batch_size
        to_device = X.device != torch.device(self.device)
        if self.shuffle:
            rng = self.rng if self.rng is not None else np.random.RandomState()
            order = torch.from_numpy(rng.permutation(n)).to(X.device)
        for start in range(0, n - self.drop_single, bs):
            idx = order[start : start + bs] if self.shuffle else slice(start,
                                                                      start + bs)
            take = _taker(idx)  # a slice, or positions of a permutation
            Xb, yb = take(X), self.dataset.target(idx, take)
            if to_device:
                Xb = Xb.to(self.device, non_blocking=True)
                yb = _to(yb, self.device)
            if y is None and not self.shuffle:
                n_real = len(Xb)
                if n_real < bs:
                    Xb = torch.cat([Xb, Xb.new_zeros((bs - n_real,) + Xb.shape[1:])])
                batch = PaddedBatch((Xb, None))
                batch.n = n_real
                yield batch
            else:
                yield Xb, yb


def _to(target, device):
    if target is None:
        return None
    if isinstance(target, dict):
        return {k: v.to(device, non_blocking=True) for k, v in target.items()}
    return target.to(device, non_blocking=True)


def as_tensor_data(X, y, device, extras=None):
    """Wrap arrays as a :class:`TensorData`, on ``device`` when small."""
    Xt = torch.as_tensor(X)
    yt = None if y is None else torch.as_tensor(y)
    data = TensorData(Xt, yt, extras)
    if str(device) != "cpu":
        nbytes = Xt.element_size() * Xt.nelement()
        if nbytes <= _DEVICE_RESIDENT_BYTES:
            data = data.to(device)
    return data


class ValidSplit:
    """Hold out ``fraction`` of a :class:`TensorData` for validation.

    Stratified on ``y`` when ``stratified`` and every class has at least two
    members; ``random_state`` makes the split reproducible.
    """

    def __init__(self, fraction, stratified=False, random_state=None):
        self.fraction = fraction
        self.stratified = stratified
        self.random_state = random_state

    def __call__(self, dataset, y=None, **kwargs):
        from sklearn.model_selection import train_test_split

        n = len(dataset)
        n_valid = math.ceil(n * self.fraction)
        if n - n_valid < 1:
            raise ValueError(
                f"validation_fraction={self.fraction} leaves no sample to train on "
                f"out of {n}. Lower validation_fraction or pass more samples."
            )
        stratify = None
        if y is None and getattr(dataset, "y", None) is not None:
            y = dataset.y.cpu().numpy() if torch.is_tensor(dataset.y) else dataset.y
        if self.stratified and y is not None:
            y = np.asarray(y)
            _, counts = np.unique(y, return_counts=True)
            if counts.min() >= 2 and n_valid >= len(counts):
                stratify = y
        train_idx, valid_idx = train_test_split(
            np.arange(n),
            test_size=n_valid,
            stratify=stratify,
            random_state=self.random_state,
        )
        return dataset.subset(np.sort(train_idx)), dataset.subset(np.sort(valid_idx))


class TrainingInterrupted(Exception):
    """A KeyboardInterrupt during training; ``__cause__`` is the original."""


class SkxferNet(NeuralNet):
    """A skorch ``NeuralNet`` with a fast path for in-memory tensors.

    Everything else -- the training loop, callbacks, history, pickling -- is
    skorch's. ``shuffle_rng`` (a ``numpy.random.RandomState``) orders the
    batches. ``loss_terms`` (a list of :class:`~skxfer._losses.LossTerm`) are
    added to the supervised loss in training; the mean of each over an
    epoch's batches is recorded in the history under the term's name.
    ``precision`` ('bfloat16', 'float16' or None) runs each training step's
    forward pass and loss under ``torch.autocast`` of that type, float16 with
    gradient scaling; evaluation and predictions stay float32.
    """

    loss_terms = ()  # nets pickled before loss terms existed have none
    precision = None  # nets pickled before mixed precision train in float32

    def __init__(self, *args, shuffle_rng=None, loss_terms=(), precision=None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.shuffle_rng = shuffle_rng
        self.loss_terms = loss_terms
        self.precision = precision

    def initialize(self):
        super().initialize()
        check_terms(self.loss_terms, self.module_)
        return self

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        # skorch's partial_fit ends training quietly on any KeyboardInterrupt,
        # keeping a half-trained net; inside a scikit-learn estimator that
        # would pass as a finished fit. Only a stopping callback's own stop
        # (EarlyStopping raises KeyboardInterrupt to end training) may end the
        # loop early; any other interrupt (Ctrl-C) escapes skorch as
        # TrainingInterrupted.
        try:
            return super().fit_loop(X, y, epochs=epochs, **fit_params)
        except KeyboardInterrupt as err:
            if stopped_early(self):
                raise
            raise TrainingInterrupted() from err

    def train_step_single(self, batch, **fit_params):
        dtype = DTYPES.get(self.precision)
        if dtype is None:
            return super().train_step_single(batch, **fit_params)
        # skorch's own step, under autocast (its modules are module_ and
        # criterion_: train mode set on both, with public attributes only)
        self.module_.train(True)
        self.criterion_.train(True)
        Xi, yi = unpack_data(batch)
        with torch.autocast(torch.device(self.device).type, dtype=dtype):
            y_pred = self.infer(Xi, **fit_params).float()
            loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        scaler = self.__dict__.get("_scaler")
        (loss if scaler is None else scaler.scale(loss)).backward()
        return {"loss": loss, "y_pred": y_pred}

    def train_step(self, batch, **fit_params):
        if self.precision != "float16":
            return super().train_step(batch, **fit_params)
        # float16: the loss is scaled for backward, the gradients unscaled
        # before callbacks see them, and a step with inf/NaN ones skipped
        scaler = self.__dict__.get("_scaler")
        if scaler is None:
            scaler = self.__dict__["_scaler"] = grad_scaler(
                torch.device(self.device).type)
            if self.__dict__.get("scaler_state_"):  # carried over a warm start
                scaler.load_state_dict(self.scaler_state_)
        optimizer = self.optimizer_  # the one optimizer of a skxfer net
        optimizer.zero_grad()
        step = self.train_step_single(batch, **fit_params)
        scaler.unscale_(optimizer)
        self.notify("on_grad_computed",
                    named_parameters=TeeGenerator(self.get_all_learnable_params()),
                    batch=batch, training=True)
        scaler.step(optimizer)
        scaler.update()
        return step

    def on_train_end(self, net, **kwargs):
        super().on_train_end(net, **kwargs)
        scaler = self.__dict__.pop("_scaler", None)
        if scaler is not None:  # its scale, for the next run (plain numbers)
            self.__dict__["scaler_state_"] = scaler.state_dict()

    def infer(self, x, **fit_params):
        if self.loss_terms or isinstance(x, SourceTarget):
            return self._infer_capturing(x, **fit_params)
        return super().infer(x, **fit_params)

    def _infer_capturing(self, x, **fit_params):
        """A training step's forward, keeping the layer outputs the terms read.

        ``x`` may be a :class:`~skxfer._losses.SourceTarget`: the target rows
        then run through the same network after the source rows, for the
        terms only (the returned predictions are the source's).
        """
        source, target = (x.source, x.target) if isinstance(x, SourceTarget) else (
            x, None)
        layers = sorted({layer for term in self.loss_terms for layer in term.layers})
        if not (layers and self.module_.training):
            return super().infer(source, **fit_params)
        seen = self._activations = Activations()
        with capture(self.module_, layers, seen.source):
            out = super().infer(source, **fit_params)
        if target is not None:
            with capture(self.module_, layers, seen.target):
                super().infer(target, **fit_params)
        return out

    def get_loss(self, y_pred, y_true, X=None, training=False):
        if isinstance(y_true, dict) and "sample_weight" in y_true:
            loss = weighted_loss(self.criterion_, y_pred, y_true)
        else:
            if isinstance(y_true, dict):
                y_true = y_true["y"]
            loss = super().get_loss(y_pred, y_true, X=X, training=training)
        if training and self.loss_terms:
            loss = self._add_terms(loss, len(y_pred))
        return loss

    def _add_terms(self, loss, n_rows):
        seen = self.__dict__.pop("_activations", None) or Activations()
        sums = self.__dict__.setdefault("_term_sums", {})
        for term in self.loss_terms:
            value = term(self.module_, seen)
            if value is None:  # nothing to add in this step
                continue
            part = term.weight * value
            loss = loss + part
            total, rows = sums.get(term.name, (0.0, 0))
            sums[term.name] = (total + part.detach() * n_rows, rows + n_rows)
        return loss

    def on_epoch_begin(self, net, **kwargs):
        super().on_epoch_begin(net, **kwargs)
        self._term_sums = {}

    def on_epoch_end(self, net, **kwargs):
        super().on_epoch_end(net, **kwargs)
        sums = self.__dict__.pop("_term_sums", {})
        for term in self.loss_terms:  # each term's part of the training loss
            total, rows = sums.get(term.name, (0.0, 0))
            self.history.record(term.name, float(total / rows) if rows else 0.0)

    def evaluation_step(self, batch, training=False):
        out = super().evaluation_step(batch, training=training)
        if isinstance(batch, PaddedBatch):
            out = out[: batch.n]
        return out

    def get_dataset(self, X, y=None):
        if isinstance(X, TensorData):
            return X
        if isinstance(X, np.ndarray) and (y is None or isinstance(y, np.ndarray)):
            return as_tensor_data(X, y, self.device)
        return super().get_dataset(X, y)

    def get_iterator(self, dataset, training=False):
        prefix = "iterator_train" if training else "iterator_valid"
        kwargs = self.get_params_for(prefix)
        batch_size = kwargs.get("batch_size", self.batch_size)
        if batch_size == -1:
            batch_size = len(dataset)
        batch_norm = training and any(
            isinstance(m, BATCH_NORMS) for m in self.module_.modules()
        )
        if batch_norm and len(dataset) < 2:
            raise ValueError(
                f"Batch normalisation needs at least 2 training samples; got "
                f"{len(dataset)}. Pass more samples, or set batch_norm=False "
                "(and, with early_stopping, a smaller validation_fraction)."
            )
        if not isinstance(dataset, TensorData):
            # images streamed by a DataLoader (skorch's iterator)
            if batch_norm and len(dataset) % batch_size == 1:
                kwargs["drop_last"] = True
            kwargs["batch_size"] = batch_size
            iterator = self.iterator_train if training else self.iterator_valid
            batches = iterator(dataset, **kwargs)
        else:
            batches = BatchIterator(
                dataset,
                batch_size=batch_size,
                shuffle=training,
                rng=self.shuffle_rng,
                device=self.device,
                drop_single=batch_norm,
            )
        if training and hasattr(dataset, "paired_batches"):
            # domain adaptation: a target batch beside each training batch
            return dataset.paired_batches(batches)
        return batches


def supports_fused(optimizer_cls, device):
    """Whether ``optimizer_cls(..., fused=True)`` runs on ``device``.

    The fused kernels (Adam, AdamW, SGD, Adagrad, ...) update all parameters in
    one call; on a CPU they train a small MLP about 20% faster than the default
    per-tensor loop (see ``benchmarks/bench_mlp.py``). Which optimizer has one
    on which device changed across torch releases (CPU kernels came in 2.4,
    SGD's and Adagrad's later than Adam's), so the installed torch is asked:
    the optimizer is built once on a one-element tensor of that device.
    """
    return _fused_probe(optimizer_cls, torch.device(device).type)


@functools.lru_cache(maxsize=None)
def _fused_probe(optimizer_cls, device_type):
    if device_type not in ("cpu", "cuda"):
        return False
    if device_type == "cuda" and not torch.cuda.is_available():
        return False
    try:
        probe = torch.zeros(1, device=device_type, requires_grad=True)
        optimizer_cls([probe], lr=0.1, fused=True)
    except (TypeError, ValueError, RuntimeError):
        return False
    return True

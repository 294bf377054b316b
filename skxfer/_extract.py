"""PretrainedFeatureExtractor: a pretrained network as a scikit-learn transformer."""

import copy as _copy
import io
import threading
from numbers import Integral
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
)
from sklearn.utils.validation import check_is_fitted
from torch import nn
from torch.utils.data import DataLoader

from ._backbones import (
    clone_keeping_fitted_source,
    copy_module,
    cut_head,
    default_transform,
    input_channels,
    is_checkpoint_path,
    is_fitted_source,
    load_checkpoint,
    named_prototype,
    refuse_nested_source_params,
    source_backbone,
    tap_layer,
)
from ._device import cpu_module, device_is_valid, resolve_device, usable_device
from ._images import (
    ArrayBatches,
    ArrayImages,
    ImageList,
    ImageReadError,
    as_image_collection,
    check_array_values,
    is_path,
    load_image,
    match_channels,
    pil_to_tensor,
    preprocess,
    stack_images,
)
from ._keys import (
    Unkeyable,
    global_hooks_key,
    item_key,
    module_digest,
    module_key,
    read_file,
    remember,
    value_key,
)
from ._seeding import derive_seed, seeded
from ._store import (
    STORE,
    capture_settings,
    carry_settings,
    digest,
    get_config,
    settings_applied,
)
from ._validation import (
    PICKLE_FORMAT,
    any_of,
    check_params,
    check_pickle_format,
    commit_fitted,
    fresh_copy,
    is_bool,
    is_int,
    is_none,
    one_of,
    validate_table,
)

POOLINGS = ("avg", "max", "flatten")


def _is_model(value):
    return isinstance(value, (str, nn.Module)) or is_fitted_source(value)


def _is_transform(value):
    return value is None or value == "auto" or callable(value)


_SPEC = {
    "model": (
        _is_model,
        "a torchvision model name, a torch.nn.Module or a fitted "
        "TransferMLPClassifier/TransferMLPRegressor",
    ),
    "layer": (
        any_of(is_none, lambda v: isinstance(v, str)),
        "None (the representation before the classifier) or a module name",
    ),
    "pooling": (one_of(*POOLINGS), "one of 'avg', 'max', 'flatten'"),
    "preprocessing": (_is_transform, "'auto', None or a callable"),
    "batch_size": (is_int(1), "an int >= 1"),
    "num_workers": (
        any_of(is_none, is_int(0)),
        "None (automatic) or an int >= 0",
    ),
    "device": (
        device_is_valid,
        "'auto', 'cpu', 'cuda', 'cuda:<index>', 'mps' or a torch.device",
    ),
    "mixed_precision": (is_bool, "a bool"),
    "channels_last": (is_bool, "a bool"),
    "verbose": (is_int(0), "an int >= 0"),
    "random_state": (
        lambda v: v is None or is_int(0)(v) or isinstance(v, np.random.RandomState),
        "None, an int >= 0 or a numpy RandomState",
    ),
    "feature_store": (
        lambda v: v == "auto" or is_bool(v),
        "'auto', True or False",
    ),
}

# what fit sets; a new fit replaces all of it at once
_FITTED = ("_backbone", "_recipe", "preprocessing_", "n_features_out_", "device_",
           "n_features_in_", "feature_names_in_", "_channels", "_tabular", "_conv",
           "_store_key", "_store_keys")

# the kind of feature-store keys a fitted extractor holds: content keys (an
# extractor pickled before them holds keys of file paths and times, and
# does not use the store)
_STORE_KEYS = 2

_BUILD_LOCK = threading.Lock()


class _Read(NamedTuple):
    """What ``fit`` read, in memory, and what it tells."""

    module: object  # a registry Prototype (shared) or a module of our own
    shared: bool  # a prototype: build on a copy, and a fit may defer the build
    cut: bool  # cut the classifier head off
    identity: object  # what identifies the numbers (None: not stored)
    n_in: object  # the width of tabular input (a fitted tabular source)
    preprocessing: object
    unkeyed: object = None  # why the network is not stored (shown at verbose)


# torchvision v2 transforms that draw random numbers, or that run a callable
# of the user's (Lambda): not stored unless feature_store=True. Others named
# Random* or drawing parameters per call (make_params) are found by rule.
_UNSTORED_V2 = frozenset((
    "AugMix", "AutoAugment", "ColorJitter", "CutMix", "ElasticTransform",
    "GaussianBlur", "GaussianNoise", "JPEG", "Lambda", "MixUp", "RandAugment",
    "ScaleJitter", "TrivialAugmentWide",
))


def _unkeyed(err, anyway):
    """Why a network is not stored, for the note at ``verbose``."""
    return (f"{err}, which cannot be keyed by its content; feature_store=True "
            f"stores the features anyway, {anyway}")


def _deterministic_v2(transform):
    """Whether ``transform`` is torchvision's own v2 transform (or a
    ``v2.Compose`` of them) that computes the same output for the same
    input: then it is keyed by content, like a module."""
    try:
        from torchvision.transforms import v2
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return False
    kind = type(transform)
    name = kind.__name__
    if (getattr(v2, name, None) is not kind or name.startswith("Random")
            or name in _UNSTORED_V2
            or kind.make_params is not v2.Transform.make_params):
        return False
    if isinstance(transform, v2.Compose):
        return all(_deterministic_v2(t) for t in transform.transforms)
    return True


class _Meta(NamedTuple):
    """What a network key's first real build learned, so that a fit served by
    the store needs no network: whether the output is pooled, its width, and
    the channels the first convolution takes."""

    pooled: bool
    width: int
    channels: object


def _take(X, indices):
    """The items ``indices`` of a collection, in the form it came in."""
    if hasattr(X, "iloc"):
        return X.iloc[indices]
    if isinstance(X, np.ndarray):
        return X[indices]
    return [X[i] for i in indices]


def _loader_generator():
    """A generator of its own for a DataLoader, which would otherwise draw its
    workers' base seed from (and so change) the user's global torch RNG."""
    return torch.Generator().manual_seed(0)


class _Pool(nn.Module):
    """Global pooling of maps (N, C, H, W[, ...]) or token sequences (N, T, D)."""

    def __init__(self, pooling):
        super().__init__()
        self.pooling = pooling

    def forward(self, x):
        if isinstance(x, (tuple, list)):
            x = x[0]
        if x.ndim <= 2:
            return x
        if self.pooling == "flatten":
            return x.flatten(1)
        # (N, T, D) token sequences pool over T; (N, C, *spatial) maps over
        # every spatial axis (2-d images, 3-d volumes), never over C
        dims = (1,) if x.ndim == 3 else tuple(range(2, x.ndim))
        if self.pooling == "avg":
            return x.mean(dim=dims)
        return x.amax(dim=dims)


def _pooled(net, pooling):
    """``net`` followed by global pooling of its output."""
    return nn.Sequential(net, _Pool(pooling)).eval()


def build_network(module, *, copy, cut, layer, pooling, pooled, channels_last,
                  device):
    """The extractor's network, built from ``module`` -- the one way to build it.

    ``module`` is what ``fit`` read, in memory: a registry prototype (shared
    and read-only: ``copy=True`` builds on a deep copy, with tensors of its
    own) or a module the extractor already owns (``copy=False``). Nothing is
    read from a file. The head is cut (``cut``) or the forward stopped at
    ``layer``; the result is frozen, in eval mode, in the channels-last
    layout for a convolutional network when asked (not on MPS), on
    ``device``, and followed by the pooling when ``pooled``.
    """
    net = _copy.deepcopy(module) if copy else module
    if cut:
        net = cut_head(net)
    if layer is not None:
        net = tap_layer(net, layer)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    if (channels_last and input_channels(net) is not None
            and torch.device(device).type != "mps"):
        net = net.to(memory_format=torch.channels_last)
    net = net.to(device)
    return _pooled(net, pooling) if pooled else net


class _Recipe:
    """What a fit served by the feature store read, kept for a build at first
    use, and how to build from it: a reference to the registry's prototype
    (``shared``: free, no copy; built on a copy), or the copy the fit made of
    a module of the user's (the extractor's own: built in place, once)."""

    def __init__(self, module, shared, **how):
        self.prototype = module if shared else None
        self.module = None if shared else module
        self.how = how

    def build(self):
        if self.prototype is not None:
            return build_network(self.prototype.module, copy=True, **self.how)
        module, self.module = self.module, None
        return build_network(module, copy=False, **self.how)


class _NamedBytes(io.BytesIO):
    """A file's bytes, shown as its path (in PIL's messages)."""

    def __init__(self, data, name):
        super().__init__(data)
        self.path = name

    def __repr__(self):
        return repr(str(self.path))


class _KeyedImages(torch.utils.data.Dataset):
    """Images to compute and store: each item is ``(image, key, signature)``.

    A file is read once, and its key is the hash of exactly the bytes decoded
    (a file rewritten since its key was looked up is stored under its new
    content); the signature lets the parent process remember the hash (see
    ``_keys``). Other images come with their keys. Errors name the image by
    its index in the caller's collection.
    """

    def __init__(self, items, indices, keys, transform, channels):
        self.items = items
        self.indices = indices
        self.keys = keys
        self.transform = transform
        self.channels = channels

    def __len__(self):
        return len(self.items)

    def __getitem__(self, j):
        item, index = self.items[j], self.indices[j]
        key, sig = self.keys[j], None
        if is_path(item):
            try:
                from PIL import Image

                data, key, sig = read_file(item)
                with Image.open(_NamedBytes(data, item)) as img:
                    img.load()
                    tensor = pil_to_tensor(img)
            except Exception as err:
                raise ImageReadError(
                    f"Could not read image {index} ({str(item)!r}): {err}"
                ) from err
            tensor = match_channels(tensor, self.channels)
        else:
            tensor = load_image(item, index, self.channels)
        return preprocess(tensor, self.transform), key, sig


def _stack_keyed(batch):
    return (stack_images([b[0] for b in batch]), [b[1] for b in batch],
            [b[2] for b in batch])


def _read_error(index, item, err):
    """The error :func:`load_image` gives for a file that cannot be read."""
    return ImageReadError(f"Could not read image {index} ({str(item)!r}): {err}")


def stop_storing(extractor):
    """Keep ``extractor``'s features out of the feature store from now on.

    For a fitted extractor whose backbone is about to train (fine-tuning end to
    end): its outputs change with every step, so none may be served from, or
    written to, the store.
    """
    extractor._store_key = None


class PretrainedFeatureExtractor(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator
):
    """Turn images into features with a pretrained network, as a transformer.

    By default the output is the representation just before the network's
    classifier (the head removed, global pooling applied): put a linear model
    on it and you have transfer learning by feature extraction,
    ``make_pipeline(PretrainedFeatureExtractor("resnet18"), LogisticRegression())``.

    The weights are read in ``fit`` (once per process for a given model and
    weights content) and held in memory from then on: a fitted extractor
    never reads a file again. The network always runs in ``eval()`` mode
    under ``torch.inference_mode()``.

    Parameters
    ----------
    model : str, torch.nn.Module or fitted TransferMLP estimator, default='resnet18'
        A torchvision classification model name (any name in
        ``torchvision.models.list_models(module=torchvision.models)``), a
        module of your own (copied at ``fit``; never changed; the default
        output is what its ``forward`` returns), or a fitted
        :class:`TransferMLPClassifier` / :class:`TransferMLPRegressor`, whose
        last hidden layer becomes the output (its learned representation).
        A fitted estimator stays fitted under ``clone``.
    weights : str, WeightsEnum, path or None, default='DEFAULT'
        For a model name: 'DEFAULT', a weights name such as 'IMAGENET1K_V1' (or
        'ResNet18_Weights.IMAGENET1K_V1', or the enum member), a path to a
        local state-dict file, or None for random initialisation. For a
        module: None (use it as it is) or a path to a state dict to load.
        Downloads go where torchvision puts them (``$TORCH_HOME/hub``).
    layer : str or None, default=None
        Read the output of this module instead (a name from
        ``model.named_modules()``, e.g. 'layer3'); the forward pass stops there.
    pooling : {'avg', 'max', 'flatten'}, default='avg'
        How a spatial map (N, C, H, W) or token sequence (N, T, D) becomes a
        vector; 'avg' and 'max' pool globally, 'flatten' keeps every value.
    preprocessing : 'auto', callable or None, default='auto'
        What is done to the images before the network. 'auto': for a model
        name, the weights' own ``transforms()`` (resize, crop,
        normalisation; with ``weights=None`` those of the architecture's
        default weights); for a module, uint8
        images are scaled to [0, 1] and nothing else. A callable receives a
        uint8 (or float in [0, 1]) tensor (N, C, H, W) for arrays and (C, H,
        W) per image for lists; torchvision transforms take both. None: no
        preprocessing besides scaling uint8 to [0, 1].
    batch_size : int, default=32
        Images per forward pass.
    num_workers : int or None, default=None
        ``DataLoader`` worker processes that decode and preprocess the next
        batches while the model runs. None: none for in-memory arrays, one
        per spare core (up to 4) for files and PIL images.
    device : str or torch.device, default='auto'
        'auto' (CUDA when available, else CPU), 'cpu', 'cuda', 'cuda:<index>',
        'mps'.
    mixed_precision : bool, default=False
        Run the forward pass under ``torch.autocast`` (float16 on CUDA,
        bfloat16 on the CPU). Features are returned as float32.
    channels_last : bool, default=True
        Use the channels-last memory layout for convolutional networks (faster
        on CPUs and on recent GPUs; the features do not change beyond float
        rounding).
    verbose : int, default=0
        Show a progress bar (tqdm) over the batches when > 0.
    random_state : int, RandomState instance or None, default=0
        Seeds the random weights of ``weights=None`` (and nothing else): the
        default gives the same network in every process. None draws new ones
        at every fit.
    feature_store : 'auto', bool, default='auto'
        Keep each image's features in the process-wide feature store (see
        :func:`skxfer.set_config`), so that a grid search or repeated
        ``transform`` runs the network once per distinct image. Keys are the
        content of each input (array bytes, PIL pixels, a file's bytes) and
        of the network: a torchvision model's weights; for a module of your
        own, everything that decides its output (structure, weights,
        attributes, its classes' code and what that code reads from its
        globals, hooks); and the layer, pooling, preprocessing, precision
        and device type. 'auto': on, except for a module with a part that
        cannot be keyed (an open file, a lock; ``verbose`` names it) and for
        a ``preprocessing`` of your own other than torchvision's v2
        transforms that draw no random numbers (a callable need not show
        what it computes). True: on, keying a module of your own on its
        structure and weights only and a preprocessing on its ``repr`` (you
        answer for the rest). Not seen: state read through libraries, files
        or the environment; see the README. Treat
        ``backbone_`` as frozen: after changing its weights in place, call
        :func:`skxfer.clear_feature_store`.

    Attributes
    ----------
    backbone_ : torch.nn.Module
        The network that computes the features, this extractor's own: a copy
        of the model with its classifier head replaced by ``nn.Identity`` (or
        cut at ``layer``), followed by the pooling when its output is not
        already one vector per image; in eval mode, on ``device_``.
    preprocessing_ : callable or None
        The preprocessing actually used.
    n_features_out_ : int
        Width of the output.
    device_ : str
        The device used.
    n_features_in_ : int
        Width of 2-d (tabular) input, for a module that takes feature vectors.

    Examples
    --------
    >>> import numpy as np
    >>> from skxfer import PretrainedFeatureExtractor
    >>> images = np.random.RandomState(0).randint(0, 256, (4, 64, 64, 3),
    ...                                            dtype=np.uint8)
    >>> ext = PretrainedFeatureExtractor("resnet18", weights=None, device="cpu")
    >>> ext.fit_transform(images).shape
    (4, 512)
    >>> ext.get_feature_names_out()[:2]
    array(['pretrainedfeatureextractor0', 'pretrainedfeatureextractor1'],
          dtype=object)
    """

    def __init__(
        self,
        model="resnet18",
        *,
        weights="DEFAULT",
        layer=None,
        pooling="avg",
        preprocessing="auto",
        batch_size=32,
        num_workers=None,
        device="auto",
        mixed_precision=False,
        channels_last=True,
        verbose=0,
        random_state=0,
        feature_store="auto",
    ):
        self.model = model
        self.weights = weights
        self.layer = layer
        self.pooling = pooling
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = device
        self.mixed_precision = mixed_precision
        self.channels_last = channels_last
        self.verbose = verbose
        self.random_state = random_state
        self.feature_store = feature_store

    # ---- building -------------------------------------------------------------

    def _read_model(self, seed):
        """What ``fit`` reads, in memory (a :class:`_Read`).

        A model name gives the registry's prototype (shared, read-only: built
        from by copying); a fitted source or a module of the user's gives a
        copy of its own, the checkpoint of ``weights`` loaded into it. Never
        changes ``model``.
        """
        n_in = None
        if isinstance(self.model, str):
            prototype = named_prototype(
                self.model, self.weights, seed=seed,
                cache=isinstance(self.random_state, Integral),
            )
            if prototype.dropped is not None and self.verbose:
                head = prototype.dropped
                outputs = (f"{head['outputs']} outputs" if head["outputs"]
                           else "absent")
                print(f"[{type(self).__name__}] weights={str(self.weights)!r}: "
                      f"the classifier head {head['head']!r} ({outputs}) does "
                      f"not fit {self.model} and is dropped; the features come "
                      "from the layers before it.")
            transform = self.preprocessing
            if transform == "auto":
                transform = default_transform(self.model, self.weights)
            return _Read(prototype, True,
                         self.layer is None and prototype.dropped is None,
                         ("torchvision", self.model, prototype.digest()), n_in,
                         transform)
        if is_fitted_source(self.model):
            net, n_in, transform = source_backbone(self.model)
            identity, unkeyed = self._module_identity("source", net)
            if self.preprocessing != "auto":
                transform = self.preprocessing
        else:
            with seeded(seed):
                net = copy_module(self.model)
            if self.weights not in (None, "DEFAULT"):
                if not is_checkpoint_path(self.weights):
                    raise ValueError(
                        "For a torch.nn.Module, weights must be None or a path to "
                        f"a state-dict file; got {self.weights!r}."
                    )
                load_checkpoint(net, self.weights)
            transform = None if self.preprocessing == "auto" else self.preprocessing
            identity, unkeyed = self._module_identity("module", net)
        return _Read(net, False, False, identity, n_in, transform, unkeyed)

    def _module_identity(self, kind, net):
        """``(identity, why not)`` of a module of the user's or a source's.

        ``feature_store='auto'``: its content key (see
        :func:`skxfer._keys.module_key`), or None and what cannot be keyed.
        ``feature_store=True``: its structure and weights only -- the user
        answers for the rest (a part that cannot be keyed, or state that
        changes at every call, such as a counter).
        """
        if self.feature_store is False:
            return None, None
        if self.feature_store is True:
            return (kind, repr(net), module_digest(net)), None
        try:
            return (kind, module_key(net)), None
        except Unkeyable as err:
            return None, _unkeyed(
                err, "keyed on the network's structure and weights only")

    def fit(self, X, y=None):
        """Read the network's weights and build it; ``X`` fixes the output width.

        Everything the extractor needs is in memory from then on: the weights
        are never read from a file again (deleting, overwriting or moving the
        file, or ``os.chdir``, changes nothing).

        Parameters
        ----------
        X : images or array-like of shape (n_samples, n_features)
            Images as :meth:`transform` takes them (only the first is run, to
            learn the output width), or feature vectors for a module that takes
            them.
        y : None
            Ignored.

        Returns
        -------
        self : PretrainedFeatureExtractor
            The fitted transformer.
        """
        check_params(self, _SPEC)
        # everything is built on a fresh copy and assigned at the end: a fit
        # that fails leaves an earlier fit intact (or the extractor unfitted)
        new = fresh_copy(self, _FITTED)
        with settings_applied(self):
            self._fit(new, X)
        commit_fitted(self, new, _FITTED)
        return self

    def _fit(self, new, X):
        new.device_ = resolve_device(self.device, type(self).__name__)
        new._store_keys = _STORE_KEYS
        read = self._read_model(derive_seed(self.random_state))
        new.preprocessing_ = read.preprocessing
        how = dict(cut=read.cut, layer=self.layer, pooling=self.pooling,
                   channels_last=self.channels_last, device=new.device_)
        new._tabular = self._is_tabular(X)
        if new._tabular:
            X = validate_table(new, X, dtype=np.float32, reset=True)
            if read.n_in is not None and X.shape[1] != read.n_in:
                raise ValueError(
                    f"X has {X.shape[1]} features, but the backbone was trained "
                    f"on {read.n_in}. Transfer needs the same input features."
                )
        new._store_key, unkeyed = self._store_key_of(read, new)
        if unkeyed and self.verbose:
            print(f"[{type(self).__name__}] The feature store is off: {unkeyed}.")
        key = new._active_store_key()
        first = X.iloc[:1] if hasattr(X, "iloc") else X[:1]
        meta = STORE.meta.get(key) if key is not None else None
        stored = None
        if meta is not None:
            new._channels, new._conv = meta.channels, meta.channels is not None
            stored = STORE.get_many(key, new._item_keys(first), meta.width)[0]
        if stored is not None:
            # nothing in fit needs the network: it is built the first time it
            # is used (a transform that misses the store, a fine-tuning
            # estimator, pickling). A search over stored features pays no
            # model copy per fit for a prototype, and no build for a module.
            new._recipe = _Recipe(read.module, read.shared, pooled=meta.pooled,
                                  **how)
            new.n_features_out_ = meta.width
            return
        pooled = False
        body = build_network(read.module.module if read.shared else read.module,
                             copy=read.shared, pooled=pooled, **how)
        new.backbone_ = body
        new._channels = input_channels(body)
        new._conv = new._channels is not None
        out, first_key = new._probe(first)  # learn the output from one sample
        if not (torch.is_tensor(out) and out.ndim == 2):
            # spatial maps, token sequences or tuples: pool them to vectors
            new.backbone_ = _pooled(body, self.pooling)
            out, first_key = new._probe(first)
            pooled = True
        new.n_features_out_ = out.shape[1]
        if new._store_key is not None:
            STORE.meta[new._store_key] = _Meta(pooled, out.shape[1], new._channels)
        if key is not None:  # the probe computed the first input's features
            STORE.put_many(key, [first_key], out.float().cpu().numpy())

    def _probe(self, first):
        """The network's raw output for the one input ``first``, and its key."""
        if not self._tabular:
            kind, images = as_image_collection(first)
            if kind == "list":  # a file's key: the hash of the bytes decoded
                batches = []
                out = next(self._outputs(
                    _KeyedImages(images, [0], [None], self.preprocessing_,
                                 self._channels), keys=batches))
                ((item_key_,), (sig,)), = batches
                remember(sig, item_key_)
                return out, item_key_
        return next(self._outputs(first)), self._item_keys(first)[0]

    def _store_key_of(self, read, new):
        """``(key, why not)``: the network's key in the feature store, or
        None and, where it says something, why it is not stored."""
        if read.identity is None or self.feature_store is False:
            return None, read.unkeyed
        forced = self.feature_store is True
        preprocessing, unkeyed = self._preprocessing_identity(new.preprocessing_,
                                                              forced)
        if preprocessing is None:
            return None, unkeyed
        try:  # torch's global forward hooks run in every module
            hooks = global_hooks_key()
        except Unkeyable as err:
            if not forced:
                return None, _unkeyed(err, "without them in the key")
            hooks = "not keyed"
        parts = [read.identity, self.layer, self.pooling, preprocessing,
                 self.mixed_precision, self.channels_last,
                 torch.device(new.device_).type, new._tabular]
        if hooks is not None:
            parts.append(hooks)
        return digest(*parts), None

    def _preprocessing_identity(self, transform, forced):
        """``(identity, why not)`` of the preprocessing used.

        The weights' own transforms and None by their repr; torchvision's v2
        transforms that draw no random numbers by content (their repr leaves
        out a ``ToDtype``'s dtype). Another callable need not show what it
        computes: keyed by its repr with ``feature_store=True`` (an address
        in it is refused), else not stored.
        """
        shown = repr(transform)
        if self.preprocessing in ("auto", None):
            return (shown if " at 0x" not in shown else None), None
        if _deterministic_v2(transform):
            try:
                return ("v2", value_key(transform, "preprocessing")), None
            except Unkeyable as err:
                if not forced:
                    return None, _unkeyed(err, "keyed on its repr")
        if forced:
            return (shown if " at 0x" not in shown else None), None
        return None, (
            f"preprocessing={type(transform).__name__} is a callable of your "
            "own or a random transform, and a callable need not show what it "
            "computes; feature_store=True stores the features anyway, keyed on "
            "its repr")

    @property
    def backbone_(self):
        try:
            return self.__dict__["_backbone"]
        except KeyError:
            pass
        if "_recipe" not in self.__dict__:
            raise AttributeError(
                f"'{type(self).__name__}' object has no attribute 'backbone_'")
        with _BUILD_LOCK:
            if "_backbone" not in self.__dict__:
                self.__dict__["_backbone"] = self.__dict__["_recipe"].build()
                del self.__dict__["_recipe"]  # the prototype may go now
        return self.__dict__["_backbone"]

    @backbone_.setter
    def backbone_(self, value):
        self.__dict__["_backbone"] = value
        self.__dict__.pop("_recipe", None)

    def _item_keys(self, X):
        """The content key of each input; None for a file this process has
        not hashed when no folder is set (it is hashed as it is decoded)."""
        if self._tabular:
            rows = np.ascontiguousarray(X, dtype=np.float32)
            return [item_key(row) for row in rows]
        _, images = as_image_collection(X)  # an NCHW array or a list
        files = "read" if get_config()["feature_store_dir"] else "known"
        keys = []
        for i, image in enumerate(images):
            try:
                keys.append(item_key(image, files=files))
            except OSError as err:  # as the loader would say it
                raise _read_error(i, image, err) from err
        return keys

    @property
    def _n_features_out(self):
        # what ClassNamePrefixFeaturesOutMixin reads to name the columns
        return self.n_features_out_

    def _is_tabular(self, X):
        """2-d numeric input to a module of the user's own: feature vectors."""
        if isinstance(self.model, str):
            return False
        if sp.issparse(X):
            return True  # validate_table refuses it with scikit-learn's message
        if hasattr(X, "iloc"):
            return X.ndim == 2 and all(
                np.issubdtype(dt, np.number) or dt.kind == "b" for dt in X.dtypes
            )
        if isinstance(X, np.ndarray):
            # 2-d is a table whatever the dtype (validate_table says what is
            # wrong with it); 1-d only when numeric (else: paths, PIL images)
            return X.ndim == 2 or (X.ndim < 2 and X.dtype.kind in "biuf")
        try:
            arr = np.asarray(X)
        except Exception:
            return False
        return arr.ndim <= 2 and arr.dtype.kind in "biuf"

    # ---- transforming -----------------------------------------------------------

    def _workers(self, n_images):
        """DataLoader workers: the parameter, or one per spare core for files."""
        if self.num_workers is not None:
            return self.num_workers
        if n_images is not None and n_images <= self.batch_size:
            return 0
        return min(4, max(0, (torch.get_num_threads() or 1) - 1))

    def image_dataset(self, X):
        """``X`` as a ``Dataset`` of preprocessed images, decoded one at a time.

        Parameters
        ----------
        X : images
            As for :meth:`transform`.

        Returns
        -------
        dataset : torch.utils.data.Dataset
            Item ``i`` is image ``i`` as the network receives it (C, H, W).
        """
        check_is_fitted(self)
        kind, images = as_image_collection(X)
        if kind == "array":
            check_array_values(images)
            return ArrayImages(images, self.preprocessing_, self._channels)
        return ImageList(images, self.preprocessing_, self._channels)

    def _loader(self, X):
        if self._tabular:
            tensor = torch.from_numpy(np.ascontiguousarray(X))
            chunks = torch.split(tensor, self.batch_size)
            return chunks, len(chunks)
        if isinstance(X, _KeyedImages):
            loader = DataLoader(
                X, batch_size=self.batch_size,
                num_workers=self._workers(len(X)),
                collate_fn=_stack_keyed,
                pin_memory=self.device_.startswith("cuda"),
                generator=_loader_generator(),
            )
            return loader, len(loader)
        kind, images = as_image_collection(X)
        if kind == "array":
            check_array_values(images)
            dataset = ArrayBatches(
                images, self.batch_size, self.preprocessing_, self._channels
            )
            workers = 0 if self.num_workers is None else self.num_workers
            loader = DataLoader(
                dataset, batch_size=None, num_workers=workers,
                pin_memory=self.device_.startswith("cuda"),
                generator=_loader_generator(),
            )
        else:
            dataset = ImageList(images, self.preprocessing_, self._channels)
            loader = DataLoader(
                dataset, batch_size=self.batch_size,
                num_workers=self._workers(len(images)),
                collate_fn=stack_images,
                pin_memory=self.device_.startswith("cuda"),
                generator=_loader_generator(),
            )
        return loader, len(loader)

    def _outputs(self, X, keys=None):
        """Yield the network's raw output for each batch of ``X``.

        Every forward pass of the extractor goes through here. For keyed
        images (``_KeyedImages``) each batch's keys and file signatures are
        appended to the list ``keys``.
        """
        loader, n_batches = self._loader(X)
        if self.verbose:
            from tqdm.auto import tqdm

            loader = tqdm(loader, total=n_batches, desc="extracting features",
                          unit="batch")
        device = torch.device(self.device_)
        autocast = torch.autocast(
            device.type,
            dtype=torch.float16 if device.type == "cuda" else torch.bfloat16,
            enabled=self.mixed_precision,
        )
        memory_format = (
            torch.channels_last
            if self._conv and self.channels_last and device.type != "mps"
            else torch.contiguous_format
        )
        if self.backbone_.training:  # put in train mode through a module_ view
            self.backbone_.eval()
        empty = True
        for batch in loader:
            empty = False
            if isinstance(batch, (tuple, list)):  # keyed images
                batch, batch_keys, signatures = batch
                keys.append((batch_keys, signatures))
            batch = batch.to(device, non_blocking=True)
            if batch.ndim == 4:
                batch = batch.to(memory_format=memory_format)
            with torch.inference_mode(), autocast:
                try:
                    out = self.backbone_(batch)
                except torch.cuda.OutOfMemoryError as err:
                    raise torch.cuda.OutOfMemoryError(
                        f"The device ran out of memory on a batch of "
                        f"{len(batch)} images: {err} Lower batch_size (now "
                        f"{self.batch_size}), or set mixed_precision=True."
                    ) from err
                except RuntimeError as err:
                    raise ValueError(
                        "The network could not run on a batch of shape "
                        f"{tuple(batch.shape)}: {err}. Check that the inputs have "
                        "the size and channels the network expects, or pass "
                        "preprocessing= that resizes them."
                    ) from err
            yield out
        if empty:
            raise ValueError("Found an empty collection of images; pass at least one.")

    def _active_store_key(self):
        """The network's key in the feature store while it is on, else None."""
        key = getattr(self, "_store_key", None)
        setting = getattr(self, "feature_store", "auto")
        if key is None or setting is False or (
                setting == "auto" and not get_config()["feature_store"]):
            return None
        return key

    def _features(self, X):
        """Features of ``X``: from the feature store where it has them."""
        key = self._active_store_key()
        if key is None:
            return self._compute(X)
        keys = self._item_keys(X)
        rows = STORE.get_many(key, keys, self.n_features_out_)
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            fresh, fresh_keys = self._compute_keyed(
                X, missing, [keys[i] for i in missing], whole=len(missing) == len(rows))
            STORE.put_many(key, fresh_keys, fresh)
            for j, i in enumerate(missing):
                rows[i] = fresh[j]
        return np.stack(rows) if rows else self._compute(X)

    def _compute_keyed(self, X, indices, keys, whole):
        """Features of the items ``indices`` of ``X`` (all of them: ``whole``),
        and the key to store each under: for a file, the hash of the very
        bytes decoded."""
        if not self._tabular:
            kind, images = as_image_collection(X)
            if kind == "list":
                dataset = _KeyedImages([images[i] for i in indices], indices, keys,
                                       self.preprocessing_, self._channels)
                batches = []
                outputs = [out.float().cpu() for out in
                           self._outputs(dataset, keys=batches)]
                keys = []
                for batch_keys, signatures in batches:
                    for file_key, sig in zip(batch_keys, signatures, strict=True):
                        remember(sig, file_key)  # decoded in a worker process
                        keys.append(file_key)
                return torch.cat(outputs).numpy(), keys
        return self._compute(X if whole else _take(X, indices)), keys

    def _compute(self, X):
        outputs = [out.float().cpu() for out in self._outputs(X)]
        return torch.cat(outputs).numpy()

    def transform(self, X):
        """Features of ``X``.

        Parameters
        ----------
        X : images
            uint8 or float (in [0, 1]) arrays of shape (N, H, W), (N, H, W, C)
            or (N, C, H, W); or a list (or array, or pandas Series) of PIL
            images, arrays or image file paths -- sizes may differ when the
            transform resizes. Feature vectors (n_samples, n_features) for a
            module that takes them.

        Returns
        -------
        features : ndarray of shape (n_samples, n_features_out_), float32
            One row per image.
        """
        check_is_fitted(self)
        with settings_applied(self):
            if self._tabular:
                X = validate_table(self, X, dtype=np.float32, reset=False)
            return self._features(X)

    def preprocess(self, X):
        """``X`` as the network receives it: decoded, preprocessed, batched.

        Parameters
        ----------
        X : images or array-like
            As for :meth:`transform`.

        Returns
        -------
        tensor : torch.Tensor of shape (n_samples, C, H, W), float32
            The preprocessed inputs (feature vectors for tabular input).
        """
        check_is_fitted(self)
        if self._tabular:
            X = validate_table(self, X, dtype=np.float32, reset=False)
            return torch.from_numpy(np.ascontiguousarray(X))
        return torch.cat(list(self.iter_preprocessed(X)))

    def iter_preprocessed(self, X):
        """Yield ``X`` preprocessed, one float32 batch of ``batch_size`` at a time.

        Decoding overlaps with the caller when ``num_workers`` > 0; memory holds
        a few batches, not the collection.

        Parameters
        ----------
        X : images
            As for :meth:`transform`.

        Yields
        ------
        batch : torch.Tensor of shape (batch_size, C, H, W)
            Preprocessed images (the last batch may be smaller).
        """
        check_is_fitted(self)
        loader, _ = self._loader(X)
        for batch in loader:
            yield batch.float()

    def __sklearn_is_fitted__(self):
        return "_backbone" in self.__dict__ or "_recipe" in self.__dict__

    def __getstate__(self):
        if "_recipe" in self.__dict__:
            _ = self.backbone_  # a pickle holds its network: build it now
        # a copy: BaseEstimator.__getstate__ may return the live __dict__
        state = dict(super().__getstate__())
        if state.get("_backbone") is not None:
            state["_backbone"] = cpu_module(state["_backbone"])
        state["_skxfer_pickle"] = PICKLE_FORMAT
        # the feature-store settings in force travel with the pickle
        return capture_settings(self, state)

    def __setstate__(self, state):
        if "backbone_" in state:  # pickled before backbone_ became a property
            state["_backbone"] = state.pop("backbone_")
        deferred = state.pop("_deferred", None)
        if deferred is not None and "_backbone" not in state:
            # earlier versions built the network before pickling: only a
            # hand-made state lacks it, and the weights file is not read again
            raise ValueError(
                f"This fitted {type(self).__name__} was pickled without its "
                "network; fit it again."
            )
        if state.get("_store_keys") != _STORE_KEYS and "_store_key" in state:
            # keys of file paths and times, from an earlier version: not used
            state["_store_key"] = None
        # (inside a TransferMLP estimator's pickle the backbone may be None: the
        # estimator checks the format and links it)
        check_pickle_format(self, state, fitted=state.get("_backbone") is not None)
        super().__setstate__(state)
        if hasattr(self, "device_"):
            self.device_ = usable_device(self.device_, type(self).__name__)
            if self.__dict__.get("_backbone") is not None:
                self._backbone.to(self.device_)

    def __sklearn_clone__(self):
        # a fitted TransferMLP estimator as ``model`` stays fitted under clone;
        # the feature-store settings this extractor carries stay with it
        return carry_settings(self, clone_keeping_fitted_source(self, "model"))

    def set_params(self, **params):
        return super().set_params(
            **refuse_nested_source_params(self, "model", params)
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        tags.non_deterministic = False
        tags.input_tags.allow_nan = False
        # features are float32, whatever the input's dtype
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

"""PretrainedFeatureExtractor: a pretrained network as a scikit-learn transformer."""

import copy as _copy
import io
import re
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
    head_is_linear,
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
from ._precision import SETTINGS, autocast_dtype, is_precision
from ._seeding import derive_seed, seeded
from ._store import (
    STORE,
    capture_settings,
    carry_settings,
    damaged_warning,
    digest,
    get_config,
    read_entry,
    settings_applied,
)
from ._threads import extractor_work, sized_by
from ._timm import is_timm_name, timm_prototype, timm_transform
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
        "a torchvision model name, 'timm:<name>' (a timm model), a "
        "torch.nn.Module or a fitted "
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
    "mixed_precision": (is_precision, SETTINGS),
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


def _repr_identifies(shown):
    """Whether a repr may say what a callable computes: no address in it,
    and no torchvision ``Lambda()`` (which never shows its function)."""
    return " at 0x" not in shown and not re.search(r"\bLambda\(\)", shown)


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


class _NamedFile:
    """An open file, shown as its path (in PIL's messages)."""

    def __init__(self, f, name):
        self._f = f
        self.path = name

    def __getattr__(self, name):
        return getattr(self._f, name)

    def read(self, *args):
        return self._f.read(*args)

    def seek(self, *args):
        return self._f.seek(*args)

    def tell(self):
        return self._f.tell()

    def close(self):  # PIL closes what it opened from; the file is ours
        pass

    def __repr__(self):
        return repr(str(self.path))


def _image_header(path):
    """A check for :func:`read_file`: PIL reads the file's header (and only
    that) before the file is read whole, so a file that is not an image is
    refused, with PIL's message, without reading it."""
    from PIL import Image

    def check(f, size):
        Image.open(_NamedFile(f, path)).close()

    return check


def _reason(err):
    if isinstance(err, MemoryError):
        return "MemoryError (not enough memory to read the file)"
    return str(err) or type(err).__name__


class _KeyedBatch(NamedTuple):
    """What ``_outputs`` records of a batch of keyed images: each item's key,
    file signature and row when it was found stored (where the file was
    read, or in memory here); the items the batch's output computed; and
    how many folder entries were damaged."""

    keys: list
    signatures: list
    rows: list
    computed: list
    damaged: int


class _KeyedImages(torch.utils.data.Dataset):
    """Images to compute and store: each item is ``(image, key, signature,
    row, damaged)``.

    A file is read once: PIL checks its header, then its bytes are read
    whole, hashed and decoded (its key is the hash of exactly the bytes
    decoded: a file rewritten since is stored under its new content). With
    ``lookup`` (``(folder, network key, width)``), a file whose key the
    parent could not look up is looked up where it is read -- the features
    found come back as ``row`` and the image is not decoded. The signature
    lets the parent process remember the hash (see ``_keys``). Other images
    come with their keys. Errors name the image by its index in the caller's
    collection.
    """

    def __init__(self, items, indices, keys, transform, channels, lookup=None):
        self.items = items
        self.indices = indices
        self.keys = keys
        self.transform = transform
        self.channels = channels
        self.lookup = lookup

    def __len__(self):
        return len(self.items)

    def __getitem__(self, j):
        item, index = self.items[j], self.indices[j]
        key, sig, damaged = self.keys[j], None, 0
        if not is_path(item):
            tensor = load_image(item, index, self.channels)
            return preprocess(tensor, self.transform), key, sig, None, damaged
        try:
            data, key, sig = read_file(item, check=_image_header(item))
        except Exception as err:
            raise _read_error(index, item, err) from err
        if self.lookup is not None and key != self.keys[j]:  # not looked up yet
            folder, net_key, width = self.lookup
            row = None
            if torch.utils.data.get_worker_info() is None:  # here: memory too
                (row,) = STORE.get_many(net_key, [key], width, folder=False)
            if row is None and folder is not None:
                row, damaged = read_entry(folder, net_key, key, width)
            if row is not None:
                return None, key, sig, row, 0
        try:
            from PIL import Image

            with Image.open(_NamedBytes(data, item)) as img:
                img.load()
                tensor = pil_to_tensor(img)
        except Exception as err:
            raise _read_error(index, item, err) from err
        tensor = match_channels(tensor, self.channels)
        return preprocess(tensor, self.transform), key, sig, None, damaged


def _stack_keyed(batch):
    tensors = [b[0] for b in batch if b[0] is not None]
    return (stack_images(tensors) if tensors else None, [b[1] for b in batch],
            [b[2] for b in batch], [b[3] for b in batch],
            sum(b[4] for b in batch))


def _to_compute(dataset, batch, record):
    """The images of a batch of keyed images that are to be computed (None:
    none), its record appended to ``record``: rows already found where the
    files were read, and those this process holds in memory, are not."""
    images, keys, signatures, rows, damaged = batch
    rows = list(rows)
    decoded = [j for j, row in enumerate(rows) if row is None]
    if dataset.lookup is not None and decoded:
        _, net_key, width = dataset.lookup
        held = STORE.get_many(net_key, [keys[j] for j in decoded], width,
                              folder=False)
        for j, row in zip(decoded, held, strict=True):
            rows[j] = row
    computed = [t for t, j in enumerate(decoded) if rows[j] is None]
    record.append(_KeyedBatch(keys, signatures, rows,
                              [decoded[t] for t in computed], damaged))
    if not computed:
        return None
    return images if len(computed) == len(decoded) else images[computed]


def _read_error(index, item, err):
    """The error :func:`load_image` gives for a file that cannot be read."""
    return ImageReadError(
        f"Could not read image {index} ({str(item)!r}): {_reason(err)}")


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
        timm model as ``"timm:<name>"`` (any name in ``timm.list_models()``,
        optionally with a pretrained tag: ``"timm:resnet18.a1_in1k"``; needs
        ``pip install "skxfer[timm]"``; built with ``num_classes=0``, so the
        output is timm's pooled representation), a
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
        Downloads go where torchvision puts them (``$TORCH_HOME/hub``). For
        a timm model: 'DEFAULT' (timm's pretrained weights for the name,
        from the Hugging Face cache, downloaded when missing), None, a path
        to a state-dict file (``.pth``, ``.safetensors``; a classifier
        head in it is dropped), or ``'local-dir:/path/to/folder'`` (a
        folder with ``config.json`` and the weights, as
        ``timm.models.save_for_hf`` writes it; its config also gives the
        preprocessing).
    layer : str or None, default=None
        Read the output of this module instead (a name from
        ``model.named_modules()``, e.g. 'layer3'); the forward pass stops there.
        For a timm CNN, a stage's name gives what timm's ``features_only``
        gives for it (e.g. 'layer3' of a resnet).
    pooling : {'avg', 'max', 'flatten'}, default='avg'
        How a spatial map (N, C, H, W) or token sequence (N, T, D) becomes a
        vector; 'avg' and 'max' pool globally, 'flatten' keeps every value.
    preprocessing : 'auto', callable or None, default='auto'
        What is done to the images before the network. 'auto': for a model
        name, the weights' own ``transforms()`` (resize, crop,
        normalisation; with ``weights=None`` those of the architecture's
        default weights); for a timm model, timm's eval transform for its
        data config (``resolve_data_config`` and ``create_transform``;
        8-bit images go through PIL, as in timm's own loops); for a module, uint8
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
    mixed_precision : bool, 'bf16' or 'fp16', default=False
        Run the forward pass under ``torch.autocast``: True is float16 on
        CUDA and bfloat16 elsewhere; 'bf16' and 'fp16' choose. Features are
        returned as float32 (and stored apart from those of other settings).
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
        of the network: a torchvision model's weights; a timm model's name,
        weights (and a folder's config) and timm's version; for a module of your
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
        if is_timm_name(self.model):  # timm's classifier is removed at build
            prototype, identity = timm_prototype(
                self.model, self.weights, seed=seed,
                cache=isinstance(self.random_state, Integral))
            transform = self.preprocessing
            if transform == "auto":
                transform = timm_transform(prototype.module)
            return _Read(prototype, True, False, identity, n_in, transform)
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
            cut = self.layer is None and prototype.dropped is None
            identity = ("torchvision", self.model, prototype.digest())
            if cut and not head_is_linear(prototype.module):
                # a convolutional classifier (squeezenet), cut since features
                # were stored under this network's key with it
                identity += ("without its classifier",)
            return _Read(prototype, True, cut, identity, n_in, transform)
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

    @sized_by(extractor_work)
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
                (batch,) = batches
                remember(batch.signatures[0], batch.keys[0])
                return out, batch.keys[0]
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
        computes: not stored, unless ``feature_store=True`` -- then keyed by
        its content (a function's code, closures and globals, an object's
        attributes; see :func:`skxfer._keys.value_key`), or, where that
        cannot be keyed, by its repr if the repr shows what it computes (not
        an address, not torchvision's ``Lambda()``).
        """
        shown = repr(transform)
        if self.preprocessing in ("auto", None):
            return (shown if " at 0x" not in shown else None), None
        deterministic = _deterministic_v2(transform)
        if deterministic or forced:
            try:
                return (("v2" if deterministic else "content"),
                        value_key(transform, "preprocessing")), None
            except Unkeyable as err:
                if forced and _repr_identifies(shown):
                    return shown, None
                if forced:
                    return None, (
                        f"{err}, which cannot be keyed by its content, and its "
                        f"repr {shown!r} does not show what it computes")
                return None, _unkeyed(err, "keyed on its repr")
        return None, (
            f"preprocessing={type(transform).__name__} is a callable of your "
            "own or a random transform, and a callable need not show what it "
            "computes; feature_store=True stores the features anyway, keyed on "
            "its content")

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
        not hashed as it is now: it is read once, where it is decoded, and
        hashed and looked up there (see :class:`_KeyedImages`)."""
        if self._tabular:
            rows = np.ascontiguousarray(X, dtype=np.float32)
            return [item_key(row) for row in rows]
        _, images = as_image_collection(X)  # an NCHW array or a list
        keys = []
        for i, image in enumerate(images):
            try:
                keys.append(item_key(image, files="known"))
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
        images (``_KeyedImages``) each batch is recorded in the list ``keys``
        (a :class:`_KeyedBatch`), and only its items whose features are not
        stored are computed (a batch with none yields nothing).
        """
        loader, n_batches = self._loader(X)
        if self.verbose:
            from tqdm.auto import tqdm

            loader = tqdm(loader, total=n_batches, desc="extracting features",
                          unit="batch")
        device = torch.device(self.device_)
        dtype = autocast_dtype(self.mixed_precision, device.type)
        autocast = torch.autocast(device.type, dtype=dtype or torch.bfloat16,
                                  enabled=dtype is not None)
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
                batch = _to_compute(X, batch, keys)
                if batch is None:
                    continue
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
            fresh = self._compute_keyed(
                X, missing, [keys[i] for i in missing], key,
                whole=len(missing) == len(rows))
            for i, row in zip(missing, fresh, strict=True):
                rows[i] = row
        return np.stack(rows) if rows else self._compute(X)

    def _compute_keyed(self, X, indices, keys, net_key, whole):
        """Features of the items ``indices`` of ``X`` (all of them:
        ``whole``), stored under their keys as they are computed: for a
        file, the hash of the very bytes decoded. A file whose key was not
        known is looked up where it is read (the folder) and here (memory)
        before it is computed."""
        if not self._tabular:
            kind, images = as_image_collection(X)
            if kind == "list":
                return self._compute_files(images, indices, keys, net_key)
        rows = self._compute(X if whole else _take(X, indices))
        STORE.put_many(net_key, keys, rows)
        return list(rows)

    def _compute_files(self, images, indices, keys, net_key):
        folder = get_config()["feature_store_dir"]
        dataset = _KeyedImages([images[i] for i in indices], indices, keys,
                               self.preprocessing_, self._channels,
                               lookup=(folder, net_key, self.n_features_out_))
        batches = []
        outputs = [out.float().cpu() for out in self._outputs(dataset,
                                                              keys=batches)]
        computed = iter(torch.cat(outputs).numpy() if outputs else ())
        rows, fresh, found, damaged = [], ([], []), ([], []), 0
        for batch in batches:
            damaged += batch.damaged
            for j, (key, sig, row) in enumerate(zip(
                    batch.keys, batch.signatures, batch.rows, strict=True)):
                remember(sig, key)  # read in a worker process
                into = found
                if j in batch.computed:
                    row, into = next(computed), fresh
                into[0].append(key)
                into[1].append(row)
                rows.append(row)
        damaged_warning(folder, damaged, stacklevel=5)
        STORE.put_many(net_key, *found, folder=False)
        STORE.put_many(net_key, *fresh)
        return rows

    def _compute(self, X):
        outputs = [out.float().cpu() for out in self._outputs(X)]
        return torch.cat(outputs).numpy()

    @sized_by(extractor_work)
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

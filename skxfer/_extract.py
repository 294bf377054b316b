"""PretrainedFeatureExtractor: a pretrained network as a scikit-learn transformer."""

import threading
from numbers import Integral

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
    load_named_model,
    named_model_key,
    refuse_nested_source_params,
    source_backbone,
    tap_layer,
)
from ._device import cpu_module, device_is_valid, resolve_device, usable_device
from ._images import (
    ArrayBatches,
    ArrayImages,
    ImageList,
    as_image_collection,
    check_array_values,
    stack_images,
)
from ._seeding import derive_seed, seeded
from ._store import STORE, digest, get_config, item_key, module_digest
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
_FITTED = ("_backbone", "_deferred", "preprocessing_", "n_features_out_", "device_",
           "n_features_in_", "feature_names_in_", "_channels", "_tabular", "_conv",
           "_store_key")


_BUILD_LOCK = threading.Lock()


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

    The network is built (and its weights loaded) in ``fit``, once per process
    for a given model and weights, and always run in ``eval()`` mode under
    ``torch.inference_mode()``.

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
        content of each input (array bytes; a file's path, size and
        modification time) and of the network (its weights, layer, pooling,
        preprocessing, precision, device type). 'auto': on for torchvision
        models and fitted skxfer networks; off for a module of your own,
        whose code could change without its weights changing (True keys it
        on its structure and weights). So does a ``preprocessing`` of your
        own (a callable need not show what it computes); True keys it on its
        ``repr``. Treat ``backbone_`` as frozen: after changing its weights in
        place, call :func:`skxfer.clear_feature_store`.

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

    def _build(self):
        """A new backbone body, its preprocessing and the tabular input width.

        Never changes ``model`` (a user's module or a source estimator): every
        call builds a module of its own.
        """
        n_in = None
        if isinstance(self.model, str):
            seed = derive_seed(self.random_state)
            identity = ("torchvision", named_model_key(self.model, self.weights, seed))
            net = load_named_model(
                self.model, self.weights, seed=seed,
                cache=isinstance(self.random_state, Integral),
            )
            if self.layer is None:
                net = cut_head(net)
            transform = self.preprocessing
            if transform == "auto":
                transform = default_transform(self.model, self.weights)
        elif is_fitted_source(self.model):
            net, n_in, transform = source_backbone(self.model)
            identity = ("source", module_digest(net))
            if self.preprocessing != "auto":
                transform = self.preprocessing
        else:
            net = copy_module(self.model)
            if self.weights not in (None, "DEFAULT"):
                if not is_checkpoint_path(self.weights):
                    raise ValueError(
                        "For a torch.nn.Module, weights must be None or a path to "
                        f"a state-dict file; got {self.weights!r}."
                    )
                load_checkpoint(net, self.weights)
            transform = None if self.preprocessing == "auto" else self.preprocessing
            identity = None if self.feature_store is not True else (
                "module", repr(net), module_digest(net))
        if self.layer is not None:
            net = tap_layer(net, self.layer)
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return net, transform, n_in, identity

    def fit(self, X, y=None):
        """Build the network and load its weights; ``X`` fixes the output width.

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
        new.device_ = resolve_device(self.device, type(self).__name__)
        if self._fit_from_store(new, X):
            commit_fitted(self, new, _FITTED)
            return self
        with seeded(derive_seed(self.random_state)):
            body, new.preprocessing_, n_in, identity = self._build()
        new._channels = input_channels(body)
        new._conv = new._channels is not None
        new._tabular = self._is_tabular(X)
        if new._tabular:
            X = validate_table(new, X, dtype=np.float32, reset=True)
            if n_in is not None and X.shape[1] != n_in:
                raise ValueError(
                    f"X has {X.shape[1]} features, but the backbone was trained "
                    f"on {n_in}. Transfer needs the same input features."
                )
        if new._conv and self.channels_last and new.device_ != "mps":
            body = body.to(memory_format=torch.channels_last)
        new.backbone_ = body.to(new.device_)
        new._store_key = self._store_key_of(identity, new)
        first = X.iloc[:1] if hasattr(X, "iloc") else X[:1]
        pooled = (STORE.meta.get(new._store_key) or (None,))[0]
        stored = None
        if pooled is not None:
            stored = STORE.get_many(new._store_key, new._item_keys(first))[0]
        if stored is None:  # learn the output from one sample
            out = next(new._outputs(first))
            pooled = not (torch.is_tensor(out) and out.ndim == 2)
            if pooled:
                # spatial maps, token sequences or tuples: pool them to vectors
                new.backbone_ = nn.Sequential(body, _Pool(self.pooling)).eval()
                out = next(new._outputs(first))
            width = out.shape[1]
            if new._store_key is not None:
                STORE.meta[new._store_key] = (pooled, new._channels)
        else:  # the width of this very input, already stored
            width = len(stored)
            if pooled:
                new.backbone_ = nn.Sequential(body, _Pool(self.pooling)).eval()
        new.n_features_out_ = width
        commit_fitted(self, new, _FITTED)
        return self

    def _store_key_of(self, identity, new):
        """The network's key in the feature store, or None when not stored."""
        # a preprocessing of the user's own is a callable whose repr need not
        # show what it computes (a Lambda, a module): only the weights' own
        # transforms and None are keyed, unless feature_store=True
        preprocessing = repr(new.preprocessing_)
        own = self.preprocessing not in ("auto", None)
        if (identity is None or self.feature_store is False
                or (own and self.feature_store != True)  # noqa: E712 ('auto')
                or " at 0x" in preprocessing):
            return None
        return digest(identity, self.layer, self.pooling, preprocessing,
                      self.mixed_precision, self.channels_last,
                      torch.device(new.device_).type, new._tabular)

    def _fit_from_store(self, new, X):
        """Fit a torchvision model without building it, when the store knows it.

        When the network's output kind and the first input's features are
        stored, nothing in ``fit`` needs the network: it is built the first
        time ``backbone_`` is read (a ``transform`` that misses the store, a
        fine-tuning estimator, pickling), from the parameters of this fit. A
        grid search over stored features then pays no model copy per fit.
        """
        if not isinstance(self.model, str) or self.feature_store is False:
            return False
        seed = derive_seed(self.random_state)
        identity = ("torchvision", named_model_key(self.model, self.weights, seed))
        new.preprocessing_ = (default_transform(self.model, self.weights)
                              if self.preprocessing == "auto" else self.preprocessing)
        new._tabular = False
        new._store_key = self._store_key_of(identity, new)
        meta = STORE.meta.get(new._store_key)
        if meta is None:
            return False
        new._channels, new._conv = meta[1], meta[1] is not None
        first = X.iloc[:1] if hasattr(X, "iloc") else X[:1]
        stored = STORE.get_many(new._store_key, new._item_keys(first))[0]
        if stored is None:
            return False
        new.n_features_out_ = len(stored)
        new._deferred = {"params": self.get_params(deep=False), "seed": seed,
                         "pooled": meta[0]}
        return True

    @property
    def backbone_(self):
        try:
            return self.__dict__["_backbone"]
        except KeyError:
            pass
        deferred = self.__dict__.get("_deferred")
        if deferred is None:
            raise AttributeError(
                f"'{type(self).__name__}' object has no attribute 'backbone_'")
        with _BUILD_LOCK:
            if "_backbone" not in self.__dict__:
                maker = PretrainedFeatureExtractor(**deferred["params"])
                with seeded(deferred["seed"]):
                    body = maker._build()[0]
                if self._conv and maker.channels_last and self.device_ != "mps":
                    body = body.to(memory_format=torch.channels_last)
                body = body.to(self.device_)
                if deferred["pooled"]:
                    body = nn.Sequential(body, _Pool(maker.pooling)).eval()
                self.__dict__["_backbone"] = body
        return self.__dict__["_backbone"]

    @backbone_.setter
    def backbone_(self, value):
        self.__dict__["_backbone"] = value

    def _item_keys(self, X):
        """The content key of each input (None where it cannot be read)."""
        if self._tabular:
            rows = np.ascontiguousarray(X, dtype=np.float32)
            return [item_key(row) for row in rows]
        _, images = as_image_collection(X)  # an NCHW array or a list
        return [item_key(image) for image in images]

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

    def _outputs(self, X):
        """Yield the network's raw output for each batch of ``X``."""
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

    def _features(self, X):
        """Features of ``X``: from the feature store where it has them."""
        key = getattr(self, "_store_key", None)
        if key is None or (getattr(self, "feature_store", "auto") == "auto"
                           and not get_config()["feature_store"]):
            return self._compute(X)
        keys = self._item_keys(X)
        rows = STORE.get_many(key, keys)
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            fresh = self._compute(_take(X, missing) if len(missing) < len(rows)
                                  else X)
            STORE.put_many(key, [keys[i] for i in missing], fresh)
            for j, i in enumerate(missing):
                rows[i] = fresh[j]
        return np.stack(rows) if rows else self._compute(X)

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
        return "_backbone" in self.__dict__ or "_deferred" in self.__dict__

    def __getstate__(self):
        if "_deferred" in self.__dict__ and "_backbone" not in self.__dict__:
            _ = self.backbone_  # a pickle holds its network: build it now
        # a copy: BaseEstimator.__getstate__ may return the live __dict__
        state = dict(super().__getstate__())
        if state.get("_backbone") is not None:
            state["_backbone"] = cpu_module(state["_backbone"])
        state["_skxfer_pickle"] = PICKLE_FORMAT
        return state

    def __setstate__(self, state):
        if "backbone_" in state:  # pickled before backbone_ became a property
            state["_backbone"] = state.pop("backbone_")
        # (inside a TransferMLP estimator's pickle the backbone may be None: the
        # estimator checks the format and links it)
        check_pickle_format(self, state, fitted=state.get("_backbone") is not None)
        super().__setstate__(state)
        if hasattr(self, "device_"):
            self.device_ = usable_device(self.device_, type(self).__name__)
            if self.__dict__.get("_backbone") is not None:
                self._backbone.to(self.device_)

    def __sklearn_clone__(self):
        # a fitted TransferMLP estimator as ``model`` stays fitted under clone
        return clone_keeping_fitted_source(self, "model")

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

"""Embed large image collections on Dask or Ray Data, one partition at a time.

A fitted :class:`~skxfer.PretrainedFeatureExtractor` goes to each worker once
(Dask: ``client.scatter(..., broadcast=True)``; Ray: ``ray.put``, fetched once
per actor), and each worker runs ``extractor.transform`` on one partition of
image paths at a time: its memory holds one partition's images and features,
however many images the collection has. Write the result from the workers
(``dask.array.to_npy_stack``, ``to_zarr``; Ray's ``write_parquet``,
``write_numpy``) to keep the driver's memory flat as well.

Searches and cross-validation need nothing from this module: run them under
joblib's Dask or Ray backend (see the README, "Scaling up").

An extractor left at ``device="auto"`` runs, in each worker, on the device
``"auto"`` means there: the GPU its engine assigned (Ray's ``num_gpus``,
dask-cuda's workers), else the CPU; other devices stay as fitted. Each image
is embedded once, so these routes keep their features out of the workers'
feature stores (which would otherwise fill to their budget).

A new worker process pays for its imports at its first task (torch,
scikit-learn, skorch, skxfer: seconds), and its first fit for
``torch._dynamo``, which the first torch optimizer of a process imports:
:func:`warm_up` does both at once, e.g. ``client.run(warm_up)`` when a Dask
cluster starts.

Needs ``pip install "skxfer[dask]"`` or ``pip install "skxfer[ray]"``.
"""

import copy
import importlib
import multiprocessing
import os
import threading
import weakref
from numbers import Integral

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ._device import resolve_device
from ._extract import PretrainedFeatureExtractor, stop_storing
from ._images import is_path

__all__ = ["embed_dask", "embed_ray", "warm_up"]


def _require(module, extra, caller):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{caller} needs {module.split('.')[0]}: "
            f'pip install "skxfer[{extra}]"'
        ) from err


def _check_extractor(extractor, caller):
    if not isinstance(extractor, PretrainedFeatureExtractor):
        raise TypeError(
            f"{caller} takes a fitted PretrainedFeatureExtractor; got "
            f"{type(extractor).__name__}. Apply later steps (a PCA, a model) "
            "to the features it returns."
        )
    check_is_fitted(extractor)


def _absolute_paths(paths, caller):
    """``paths`` as a list of absolute path strings (workers' working folders
    differ from the driver's); anything else is refused by index."""
    if is_path(paths):
        raise TypeError(
            f"{caller} takes a collection of image paths; got a single path "
            f"{os.fspath(paths)!r}. Wrap it in a list."
        )
    if hasattr(paths, "tolist"):  # numpy arrays, pandas Series
        paths = paths.tolist()
    try:
        paths = list(paths)
    except TypeError:
        raise TypeError(
            f"{caller} takes a list, array or pandas Series of image paths; "
            f"got {type(paths).__name__}."
        ) from None
    for i, path in enumerate(paths):
        if not is_path(path):
            raise TypeError(
                f"{caller} takes image file paths; item {i} is a "
                f"{type(path).__name__}. Embed images held in memory with "
                "extractor.transform, or write them to files first."
            )
    if not paths:
        raise ValueError(f"{caller} was given no image paths.")
    return [os.path.abspath(os.fspath(path)) for path in paths]


def _check_int(value, name, caller, minimum=1):
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(
            f"{caller}: {name} must be an int >= {minimum}; got {value!r}.")


# ---- in each worker -------------------------------------------------------------

_LOCAL = weakref.WeakKeyDictionary()
_LOCAL_LOCK = threading.Lock()


def _same_device(a, b):
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index or 0) == (b.index or 0)


def _for_this_worker(extractor):
    """The shipped extractor as this worker runs it: made once per worker.

    A shallow copy (the network is shared, and only read) that keeps its
    features out of the feature store: a one-pass embedding would fill each
    worker's store with features nothing reads again. ``device="auto"`` is
    resolved here, so a worker given a GPU uses it even when the extractor was
    fitted on a machine without one. In a daemonic worker process (Dask's
    default), which may not start processes, images are decoded in the
    worker itself.
    """
    with _LOCAL_LOCK:
        local = _LOCAL.get(extractor)
        if local is not None:
            return local
        body = extractor.backbone_  # a deferred network is built here, once
        local = object.__new__(type(extractor))
        local.__dict__.update(extractor.__dict__)
        stop_storing(local)
        device = extractor.device_
        if extractor.device == "auto":
            device = resolve_device("auto", type(extractor).__name__)
        if not _same_device(device, extractor.device_):
            local.backbone_ = copy.deepcopy(body).to(device)
            local.device_ = device
        spare_cores = extractor.num_workers is None and torch.get_num_threads() > 1
        if multiprocessing.current_process().daemon and (
                extractor.num_workers or spare_cores):
            local.set_params(num_workers=0)
        _LOCAL[extractor] = local
    return local


def _embed(paths, extractor):
    """Features of one partition of paths (a 1-d array) with a local extractor."""
    if len(paths) == 0:
        return np.empty((0, extractor.n_features_out_), dtype=np.float32)
    return extractor.transform(list(paths))


def _dask_block(paths, shipped):
    return _embed(paths, _for_this_worker(shipped))


class _RayEmbed:
    """Ray Data's callable class: fetches the extractor once per actor."""

    def __init__(self, shipped, column, output_column):
        import ray

        if isinstance(shipped, ray.ObjectRef):
            shipped = ray.get(shipped)
        self.extractor = _for_this_worker(shipped)
        self.column = column
        self.output_column = output_column

    def __call__(self, batch):
        if self.column not in batch:
            raise KeyError(
                f"embed_ray reads image paths from the column {self.column!r}, "
                f"which the dataset does not have (it has {sorted(batch)}). "
                "Pass column=."
            )
        batch[self.output_column] = _embed(batch[self.column], self.extractor)
        return batch


def warm_up():
    """Import now what a worker's first fit imports.

    Importing this module brought torch, scikit-learn, skorch and skxfer;
    this adds ``torch._dynamo``, which the first torch optimizer of a process
    imports (seconds). Run it on every worker as a cluster starts, so that the
    first candidates of a search do not pay for it: ``client.run(warm_up)``
    on Dask, whose workers then stay warm from one search to the next.

    Examples
    --------
    >>> from skxfer.distributed import warm_up
    >>> warm_up()
    """
    importlib.import_module("torch._dynamo")


# ---- the routes -----------------------------------------------------------------


def embed_dask(extractor, paths, *, client=None, chunk_size=1024):
    """``extractor.transform(paths)`` on a Dask cluster, as a Dask array.

    The extractor is scattered to every worker once; each chunk of paths is a
    task that decodes and embeds its images one batch at a time.

    Parameters
    ----------
    extractor : PretrainedFeatureExtractor
        A fitted extractor.
    paths : list, ndarray or pandas Series of str or path-like, or dask.array.Array
        Image file paths, made absolute here (workers may run in another
        folder). A 1-d Dask array of paths is taken as it is: its chunks are
        the partitions, and its paths must be absolute.
    client : distributed.Client, default=None
        The client of the cluster to run on (compute the result with it
        too); None: the current client (``distributed.default_client()``).
    chunk_size : int, default=1024
        Paths per partition (a task).

    Returns
    -------
    features : dask.array.Array of shape (n_images, n_features_out_), float32
        Lazy, in the order of ``paths``. ``features.compute()`` gathers it;
        ``dask.array.to_npy_stack(folder, features)`` (or ``to_zarr``)
        writes it one partition per file from the workers. Keep the array
        (or a result computed from it) while it runs: the scattered extractor
        is freed with it.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from PIL import Image
    >>> from distributed import Client
    >>> from skxfer import PretrainedFeatureExtractor
    >>> from skxfer.distributed import embed_dask
    >>> folder = tempfile.mkdtemp()
    >>> paths = [os.path.join(folder, f"{i}.png") for i in range(6)]
    >>> rng = np.random.RandomState(0)
    >>> for path in paths:
    ...     Image.fromarray(rng.randint(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    >>> ext = PretrainedFeatureExtractor("resnet18", weights=None, preprocessing=None,
    ...                                  device="cpu").fit(paths[:1])
    >>> with Client(processes=False, n_workers=1, threads_per_worker=1,
    ...             dashboard_address=None) as client:
    ...     features = embed_dask(ext, paths, chunk_size=4)
    ...     print(features.chunks[0], features.compute().shape)
    (4, 2) (6, 512)
    """
    caller = "embed_dask"
    da = _require("dask.array", "dask", caller)
    distributed = _require("distributed", "dask", caller)
    _check_extractor(extractor, caller)
    _check_int(chunk_size, "chunk_size", caller)
    if isinstance(paths, da.Array):
        if paths.ndim != 1:
            raise ValueError(
                f"embed_dask takes a 1-d Dask array of paths; got {paths.ndim}-d.")
        blocks = paths
    else:
        blocks = da.from_array(
            np.array(_absolute_paths(paths, caller), dtype=object), chunks=chunk_size)
    if client is None:
        try:
            client = distributed.default_client()
        except ValueError as err:
            raise ValueError(
                "embed_dask needs a Dask client: start one "
                "(distributed.Client(...)) or pass client=."
            ) from err
    # once per worker; every task refers to the worker's copy by its key
    [shipped] = client.scatter([extractor], broadcast=True, hash=False)
    width = extractor.n_features_out_
    return blocks.map_blocks(
        _dask_block, shipped, dtype=np.float32, new_axis=1,
        chunks=(blocks.chunks[0], (width,)),
        meta=np.empty((0, 0), dtype=np.float32),
    )


def embed_ray(extractor, paths, *, column="path", output_column="features",
              batch_size=256, concurrency=None, num_cpus=None, num_gpus=None):
    """``extractor.transform`` on Ray Data, as a Ray dataset.

    ``map_batches`` with an actor pool: the extractor goes to the object store
    once (``ray.put``), each actor fetches it once and embeds one batch of
    paths at a time.

    Parameters
    ----------
    extractor : PretrainedFeatureExtractor
        A fitted extractor.
    paths : list, ndarray or pandas Series of str or path-like, or ray.data.Dataset
        Image file paths (made absolute here), or a dataset with a column
        ``column`` of absolute paths.
    column : str, default='path'
        The column of paths (the one made from ``paths`` when it is a list).
    output_column : str, default='features'
        The column of features added to each row (float32 vectors).
    batch_size : int, default=256
        Paths per call of an actor (Ray Data's ``batch_size``); within it the
        extractor runs ``extractor.batch_size`` images at a time.
    concurrency : int, (int, int) or None, default=None
        Actors: a fixed number, or (min, max) for a pool that grows with the
        work; None: Ray Data's default pool.
    num_cpus, num_gpus : float or None, default=None
        Resources per actor (Ray's defaults when None). With ``num_gpus``
        Ray gives each actor its GPU, and an extractor with ``device="auto"``
        runs there.

    Returns
    -------
    dataset : ray.data.Dataset
        Lazy; the rows of ``paths`` with ``output_column`` added, in no
        particular order (each row keeps its path). Write it from the workers
        (``write_parquet``, ``write_numpy(folder, column=output_column)``) or
        read it in batches (``iter_batches``).

    Examples
    --------
    ``examples/scale_ray.py`` (run by the test suite) starts a local Ray and
    embeds a folder of images::

        features = embed_ray(extractor, paths, batch_size=256, concurrency=2)
        features.write_parquet("features/")
    """
    caller = "embed_ray"
    ray = _require("ray", "ray", caller)
    data = _require("ray.data", "ray", caller)
    _check_extractor(extractor, caller)
    _check_int(batch_size, "batch_size", caller)
    if not isinstance(paths, data.Dataset):
        paths = _absolute_paths(paths, caller)
    if not ray.is_initialized():
        raise RuntimeError(
            "embed_ray needs a running Ray: call ray.init(...) first (with "
            "address= for a cluster).")
    if isinstance(concurrency, tuple):
        if len(concurrency) != 2:
            raise ValueError("embed_ray: concurrency must be an int, (min, max) "
                             f"or None; got {concurrency!r}.")
        for value in concurrency:
            _check_int(value, "concurrency", caller)
        compute = data.ActorPoolStrategy(min_size=concurrency[0],
                                         max_size=concurrency[1])
    elif concurrency is not None:
        _check_int(concurrency, "concurrency", caller)
        compute = data.ActorPoolStrategy(size=concurrency)
    else:
        compute = data.ActorPoolStrategy()
    if isinstance(paths, data.Dataset):
        dataset = paths
    else:
        dataset = data.from_items([{column: path} for path in paths])
    resources = {}
    if num_cpus is not None:
        resources["num_cpus"] = num_cpus
    if num_gpus is not None:
        resources["num_gpus"] = num_gpus
    return dataset.map_batches(
        _RayEmbed, fn_constructor_args=(ray.put(extractor), column, output_column),
        batch_size=batch_size, compute=compute, batch_format="numpy", **resources,
    )

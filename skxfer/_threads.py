"""Torch's intra-op threads, sized to the work of each step.

torch runs every operation on ``torch.get_num_threads()`` threads (by
default one per core). For the matrix products of a small MLP -- 200 rows of
64 features -- a second thread buys nothing on a quiet machine, and beside a
busy process it costs several times the fit: the threads spin at every
operation waiting for a core that another process holds. So training and
prediction on feature rows run with no more threads than their largest
matrix product can keep busy (:data:`MACS_PER_THREAD` multiply-adds each),
and images through convolutions keep all the CPUs the process may use.

The count depends on the work and the machine only, never on the load at
the moment: a float32 product summed by one thread or by two can differ in
the last bits, and a fit with a fixed ``random_state`` must give the same
model however busy the machine is.

What the user set stays theirs. The count is only ever lowered, from torch's
default (which follows ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``, and which
joblib's workers get as ``cores / n_jobs``); a count set with
``torch.set_num_threads`` (other than torch's default) is used as it is;
and the setting found is put back when the step ends, however it ends
(an exception, Ctrl-C).
"""

import functools
import os
import weakref

import torch
from joblib import cpu_count
from torch import nn

# Multiply-adds of a step's largest matrix product that each thread should
# have before one more thread pays. Measured with ``benchmarks/bench_busy.py
# --rule`` (an MLP's training step, the CPU time of one thread against the
# main thread's of two; two runs): products of 0.8-2.1 million multiply-adds
# (200 rows x 64 -> 64 ... 512 x 64 -> 64) gained 0.83-1.07x from a second
# thread, 3.3 million 1.04-1.15x, 6.5-10 million 1.13-1.36x, 33 million
# 1.46-1.59x, 540 million 1.8-2.0x. Measured on two cores; beyond two the
# same share per thread is assumed.
MACS_PER_THREAD = 1_500_000

# layers whose cost is a matrix product of their weight's size per row, or
# less (element-wise); a module holding any other layer -- convolutions,
# attention, a user's own layer -- is not sized and keeps all the CPUs
_ROW_LAYERS = (
    nn.Linear, nn.BatchNorm1d, nn.LayerNorm, nn.Dropout, nn.AlphaDropout,
    nn.Identity, nn.Flatten, nn.Sequential, nn.ModuleList, nn.ModuleDict,
)


def _is_activation(module):
    return (type(module).__module__ == "torch.nn.modules.activation"
            and not isinstance(module, nn.MultiheadAttention))


def _is_skxfer_container(module):
    # skxfer's own modules (MLP, Hidden, TransferNet) only chain their children
    return type(module).__module__.startswith("skxfer._mlp")


# each module's largest weight (in x out), or None: its layers do not change
# once built, and a prediction of one row should not walk them every call
_LARGEST = weakref.WeakKeyDictionary()


def largest_product(module, rows):
    """Multiply-adds of ``module``'s largest matrix product on ``rows`` rows.

    None when the module holds a layer other than linear ones (convolutions,
    attention, a layer of the user's own): its work is not estimated here.

    Parameters
    ----------
    module : torch.nn.Module
        The network a step runs.
    rows : int
        Rows per batch.

    Returns
    -------
    macs : int or None

    Examples
    --------
    >>> from torch import nn
    >>> largest_product(nn.Sequential(nn.Linear(64, 100), nn.ReLU(),
    ...                               nn.Linear(100, 10)), rows=200)
    1280000
    >>> largest_product(nn.Conv2d(3, 8, 3), rows=200) is None
    True
    """
    try:
        largest = _LARGEST[module]
    except KeyError:
        largest = _LARGEST.setdefault(module, _largest_weight(module))
    except TypeError:  # not weak-referable
        largest = _largest_weight(module)
    return None if largest is None else largest * int(rows)


def _largest_weight(module):
    largest = 0
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            largest = max(largest, layer.in_features * layer.out_features)
        elif not (isinstance(layer, _ROW_LAYERS) or _is_activation(layer)
                  or _is_skxfer_container(layer)):
            return None
    return largest


def threads_for(macs, cpus):
    """Threads for a step whose largest product is ``macs`` multiply-adds.

    One per :data:`MACS_PER_THREAD`, at least one and at most ``cpus``;
    all ``cpus`` when the work is not estimated (``macs`` None).

    Examples
    --------
    >>> threads_for(200 * 64 * 64, cpus=16)      # the digits MLP: one
    1
    >>> threads_for(128 * 256 * 256, cpus=16)
    5
    >>> threads_for(512 * 1024 * 1024, cpus=16)
    16
    >>> threads_for(None, cpus=4)
    4
    """
    if macs is None:
        return cpus
    return max(1, min(cpus, macs // MACS_PER_THREAD))


@functools.lru_cache(maxsize=1)
def usable_cpus():
    """CPUs this process may use: its affinity and its container's CPU quota.

    Read once per process (joblib reads the quota from files).
    """
    return max(1, cpu_count())


def _env_threads():
    counts = set()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            counts.add(int(value))
    return counts


def _torch_default():
    """torch's count in this process when nobody set it, else None.

    The count found when skxfer was imported, if it is one torch gives by
    default here (from ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``, or one per
    core); a count set with ``torch.set_num_threads`` before the import is
    the user's (None).
    """
    found = torch.get_num_threads()
    defaults = _env_threads() or {
        os.cpu_count(), cpu_count(), cpu_count(only_physical_cores=True),
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    return found if found in defaults else None


DEFAULT = _torch_default()


def _on_cpu(device):
    return device == "cpu" or torch.device(device).type == "cpu"


class sized_threads:
    """Run the block with the threads :func:`threads_for` gives ``macs``.

    Only on the CPU, only below torch's default count, and only when the
    count in force is that default: a count the user set is left alone.
    The count found is put back when the block ends, however it ends.

    Calls may overlap in several Python threads: each puts back the count it
    found, and acts only when it found torch's default, so the count ends as
    the user left it. (torch gives a Python thread that first uses it inside
    such a block the count in force then.)

    Parameters
    ----------
    macs : int or None
        The step's largest matrix product (:func:`largest_product`).
    device : str or torch.device
        Where the step runs; threads are sized on the CPU only.
    """

    __slots__ = ("macs", "device", "found")

    def __init__(self, macs, device="cpu"):
        self.macs, self.device, self.found = macs, device, None

    def __enter__(self):
        found = torch.get_num_threads()
        if found != DEFAULT or not _on_cpu(self.device):
            return self
        wanted = threads_for(self.macs, min(found, usable_cpus()))
        if wanted < found:
            torch.set_num_threads(wanted)
            self.found = found
        return self

    def __exit__(self, *exc):
        if self.found is not None:
            torch.set_num_threads(self.found)
            self.found = None
        return False


def sized_by(work):
    """Decorate a method to run under :func:`sized_threads` of ``work(self)``.

    ``work(self)`` returns ``(macs, device)``.
    """
    def decorate(method):
        @functools.wraps(method)
        def sized(self, *args, **kwargs):
            macs, device = work(self)
            with sized_threads(macs, device):
                return method(self, *args, **kwargs)
        return sized
    return decorate


def extractor_work(extractor):
    """The work of a :class:`~skxfer.PretrainedFeatureExtractor` call.

    Feature rows through a network of linear layers are sized by its
    largest product on ``batch_size`` rows; images, and a network not
    built yet, by the CPUs alone.
    """
    backbone = extractor.__dict__.get("_backbone")
    device = extractor.__dict__.get("device_", "cpu")
    if backbone is None or not extractor.__dict__.get("_tabular", False):
        return None, device
    return largest_product(backbone, extractor.batch_size), device

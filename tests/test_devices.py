"""Which GPU ``device="auto"`` takes: the one an engine assigned, or a spread.

No GPU here: CUDA is mocked (``torch.cuda.is_available``/``device_count`` and
``CUDA_VISIBLE_DEVICES``); the tests that need real GPUs skip without them.
"""

import multiprocessing
import os
import time

import pytest
import torch

from skxfer._device import loky_worker_index, resolve_device


def _gpus(monkeypatch, count, visible=None):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)


def _process_name(monkeypatch, name):
    monkeypatch.setattr(multiprocessing.current_process(), "name", name)


def test_the_main_process_keeps_the_first_gpu(monkeypatch):
    _gpus(monkeypatch, 4)
    assert multiprocessing.current_process().name == "MainProcess"
    assert loky_worker_index() is None
    assert resolve_device("auto") == "cuda"


@pytest.mark.parametrize("name", ["MainProcess", "LokyProcess-2",
                                  "Dask Worker process (from Nanny)"])
def test_auto_uses_the_gpu_an_engine_assigned(monkeypatch, name):
    # Ray (num_gpus=1) and dask-cuda restrict CUDA_VISIBLE_DEVICES to the
    # worker's GPU: torch sees one device, cuda:0 is GPU 3
    _gpus(monkeypatch, 1, visible="3")
    _process_name(monkeypatch, name)
    assert resolve_device("auto") == "cuda"


def test_auto_is_the_cpu_where_an_engine_assigned_no_gpu(monkeypatch):
    # Ray gives a task without num_gpus CUDA_VISIBLE_DEVICES="": no device
    _gpus(monkeypatch, 0, visible="")
    _process_name(monkeypatch, "LokyProcess-2")
    assert resolve_device("auto") == "cpu"


@pytest.mark.parametrize("number, expected", [
    (1, "cuda:0"), (2, "cuda:1"), (3, "cuda:2"), (4, "cuda:3"), (5, "cuda:0"),
    (6, "cuda:1"),
])
def test_loky_workers_spread_over_the_gpus_they_see(monkeypatch, number, expected):
    _gpus(monkeypatch, 4)
    _process_name(monkeypatch, f"LokyProcess-{number}")
    assert loky_worker_index() == number - 1
    assert resolve_device("auto") == expected
    # an explicit device is taken as given, in a worker too
    assert resolve_device("cuda:0") == "cuda:0"
    assert resolve_device("cpu") == "cpu"


def test_a_nested_loky_worker_takes_its_own_number(monkeypatch):
    _gpus(monkeypatch, 2)
    _process_name(monkeypatch, "LokyProcess-1:2")
    assert resolve_device("auto") == "cuda:1"


def _rendezvous(folder, n):
    """Hold this worker until ``n`` workers have arrived (so each task runs in
    a worker of its own), then return this worker's name and index."""
    open(os.path.join(folder, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 120
    while len(os.listdir(folder)) < n:
        if time.monotonic() > deadline:
            raise TimeoutError("the other loky worker never started")
        time.sleep(0.05)
    return multiprocessing.current_process().name, loky_worker_index()


def _auto_with_gpus(folder, count):
    from unittest import mock

    name, index = _rendezvous(folder, 2)
    with mock.patch.object(torch.cuda, "is_available", lambda: True), \
            mock.patch.object(torch.cuda, "device_count", lambda: count):
        return name, index, resolve_device("auto")


def _on_two_new_loky_workers(fn, *args):
    """``fn(*args)`` in each worker of a loky pool of its own (loky's, as
    joblib uses it, but not joblib's shared pool: its 2 workers start one
    after another, and are shut down after)."""
    from joblib.externals.loky import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=2)
    try:
        futures = [pool.submit(fn, *args) for _ in range(2)]
        return [future.result(timeout=300) for future in futures]
    finally:
        pool.shutdown(wait=True, kill_workers=True)


def test_real_loky_workers_are_numbered_and_spread(tmp_path):
    results = _on_two_new_loky_workers(_auto_with_gpus, str(tmp_path), 2)
    names = [name for name, _, _ in results]
    assert all(name.startswith("LokyProcess-") for name in names), names
    for name, index, device in results:
        assert index == int(name.rsplit("-", 1)[1]) - 1
        assert device == f"cuda:{index % 2}"
    # loky starts its workers one after another: two new workers have
    # consecutive numbers, so two GPUs are both taken
    assert sorted(device for _, _, device in results) == ["cuda:0", "cuda:1"]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_loky_workers_train_on_different_gpus(tmp_path):
    def auto(folder):
        _rendezvous(folder, 2)
        return resolve_device("auto")

    devices = _on_two_new_loky_workers(auto, str(tmp_path))
    assert len(set(devices)) == 2, devices

"""Searches and embeddings on Dask and Ray, against the same work done locally.

Each engine runs as a local cluster of 2 worker processes x 1 thread, bound to
127.0.0.1, started once per test class and shut down after it; every wait is
bounded. Skipped where the extra (``skxfer[dask]``, ``skxfer[ray]``) is not
installed.
"""

import concurrent.futures
import faulthandler
import importlib.util
import os
import re
import secrets
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from joblib import parallel_backend
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from torch import nn

import skxfer
from skxfer import PretrainedFeatureExtractor
from skxfer.distributed import embed_dask, embed_ray


def _installed(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


HAS_DASK = _installed("dask") and _installed("distributed")
HAS_RAY = _installed("ray")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MiB = 1 << 20
WAIT = 300  # seconds: the bound on any one wait for a cluster


def _bounded(fn, *args, timeout=WAIT):
    """``fn(*args)`` for an engine call that takes no timeout of its own."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(fn, *args).result(timeout=timeout)
    finally:
        pool.shutdown(wait=False)


@pytest.fixture
def watchdog():
    """A cluster test that hangs ends the run with every thread's traceback."""
    faulthandler.dump_traceback_later(3 * WAIT, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# ---- data and the work done everywhere --------------------------------------------


def _digit_images(n=240):
    """Digits as 32 x 32 RGB uint8 images, and their labels."""
    X, y = load_digits(return_X_y=True)
    X = (X[:n] * 255 / 16).astype(np.uint8).reshape(-1, 8, 8)
    X = X.repeat(4, axis=1).repeat(4, axis=2)
    return np.stack([X] * 3, axis=-1), y[:n]


def _tiny_cnn(out_channels=8):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, out_channels, 3, padding=1), nn.ReLU())


def _assert_same_results(distributed, local):
    grid, scores = distributed
    local_grid, local_scores = local
    assert grid.best_params_ == local_grid.best_params_
    for split in range(3):
        key = f"split{split}_test_score"
        np.testing.assert_array_equal(grid.cv_results_[key],
                                      local_grid.cv_results_[key])
    np.testing.assert_array_equal(scores, local_scores)


def _searches():
    """The examples' grid search (frozen resnet18 + logistic regression) and
    cross-validation of a transfer estimator (an MLP head on the same frozen
    network), fitted with whatever joblib backend is active, with the feature
    store off: with it, an image's features are those of the batch it was
    first computed in, which depends on the order the fits ran in (a batch of
    one -- fit's probe -- rounds differently from a batch of 32, by ~1e-6)."""
    example = _load_example("scale_dask" if HAS_DASK else "scale_ray")
    X, y = example.digit_images(240)
    search, clf = example.search_and_transfer()
    search.set_params(estimator__pretrainedfeatureextractor__feature_store=False)
    clf.set_params(backbone__feature_store=False)
    return search.fit(X, y), cross_val_score(clf, X, y, cv=3)


@pytest.fixture(scope="module")
def local_results():
    if not (HAS_DASK or HAS_RAY):
        pytest.skip("needs skxfer[dask] or skxfer[ray]")
    # one BLAS thread, as in the workers (both engines set OMP_NUM_THREADS=1
    # and the like): more threads round sums differently, which moves a
    # borderline prediction of the weakly regularised candidate
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _searches()


def _store_settings_hold_in_workers(tmp_path):
    """A cross-validation (every fit in a worker) over a frozen extractor with
    a store folder set here: the workers fill that folder, this process
    computes nothing."""
    X, y = _digit_images(60)
    pipe = make_pipeline(PretrainedFeatureExtractor(_tiny_cnn(), feature_store=True),
                         LogisticRegression(max_iter=300))
    skxfer.clear_feature_store()
    skxfer.set_config(feature_store_dir=tmp_path)
    try:
        cross_val_score(pipe, X, y, cv=2)
        assert skxfer.feature_store_info()["entries"] == 0
        assert skxfer.prune_feature_store(0, folder=tmp_path)["removed"] == 60
    finally:
        skxfer.set_config(feature_store_dir=False)
        skxfer.clear_feature_store()


@pytest.fixture(scope="module")
def png_paths(tmp_path_factory):
    """2,000 PNG files of 32 x 32 random RGB pixels."""
    folder = tmp_path_factory.mktemp("png")
    rng = np.random.RandomState(0)
    paths = []
    for i in range(2000):
        path = folder / f"{i:04d}.png"
        Image.fromarray(rng.randint(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def wide_extractor(png_paths, tmp_path_factory):
    """A fitted extractor with a wide output (32 x 32 x 32 floats, 128 KiB per
    image), so that anything a worker kept per image would show in its memory;
    stored (feature_store=True), so a store filling up would show too; it
    counts where it is unpickled (``count_file``)."""
    ext = _Counted(_tiny_cnn(32), pooling="flatten",
                   feature_store=True).fit(png_paths[:1])
    ext.count_file = str(tmp_path_factory.mktemp("count") / "unpickled")
    assert ext.n_features_out_ == 32 * 32 * 32
    return ext


def _reference(extractor, paths):
    """``extractor.transform(paths)`` here, leaving this process's store empty."""
    try:
        return extractor.transform(paths)
    finally:
        skxfer.clear_feature_store()


class _Counted(PretrainedFeatureExtractor):
    """Writes this process's id to ``count_file`` each time it is unpickled."""

    def __setstate__(self, state):
        super().__setstate__(state)
        with open(state["count_file"], "a") as f:
            f.write(f"{os.getpid()}\n")


def _counted(png_paths, count_file):
    ext = _Counted(_tiny_cnn(), feature_store=True).fit(png_paths[:1])
    ext.count_file = str(count_file)
    return ext


def _check_example(result, local_results, out):
    """The example's search and cross-validation ran on the cluster (with the
    store: the local best parameters), and its embedding equals
    ``transform``."""
    assert result["search"].best_params_ == local_results[0].best_params_
    assert result["scores"].mean() > 0.8
    assert result["features"].shape == (200, 512)
    expected = _reference(result["extractor"], result["paths"])
    assert np.abs(result["features"] - expected).max() <= 1e-5
    assert "200 images embedded in" in out


def _listening(pids):
    """The addresses the processes ``pids`` listen on (TCP)."""
    import psutil

    return {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.pid in pids}


def _loopback(ip):
    return ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def _load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- without a cluster ------------------------------------------------------------


def _code_lines(text):
    """The code of a snippet, line by line, without comments and indentation."""
    lines = (re.sub(r"\s+#.*$", "", line).strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_the_readme_scaling_snippets_are_code_the_suite_runs():
    readme = (EXAMPLES.parent / "README.md").read_text()
    section = readme.split("## Scaling up", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    examples = [set(_code_lines((EXAMPLES / f"scale_{engine}.py").read_text()))
                for engine in ("dask", "ray")]
    for block, example in zip(blocks, examples, strict=True):
        missing = [line for line in _code_lines(block) if line not in example]
        assert not missing, missing




def test_a_missing_extra_names_what_to_install(monkeypatch):
    ext = PretrainedFeatureExtractor(_tiny_cnn()).fit(np.zeros((1, 8, 8, 3), np.uint8))
    monkeypatch.setitem(sys.modules, "dask.array", None)
    with pytest.raises(ImportError, match=r'pip install "skxfer\[dask\]"'):
        embed_dask(ext, ["a.png"])
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r'pip install "skxfer\[ray\]"'):
        embed_ray(ext, ["a.png"])


@pytest.mark.skipif(not HAS_DASK, reason="needs skxfer[dask]")
def test_embed_dask_refuses_what_it_cannot_embed():
    from sklearn.exceptions import NotFittedError

    ext = PretrainedFeatureExtractor(_tiny_cnn()).fit(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(NotFittedError):
        embed_dask(PretrainedFeatureExtractor(_tiny_cnn()), ["a.png"])
    with pytest.raises(TypeError, match="takes a fitted PretrainedFeatureExtractor; "
                                        "got LogisticRegression"):
        embed_dask(LogisticRegression(), ["a.png"])
    with pytest.raises(TypeError, match="got a single path 'a.png'. Wrap it in a list"):
        embed_dask(ext, "a.png")
    with pytest.raises(TypeError, match="item 1 is a ndarray"):
        embed_dask(ext, ["a.png", np.zeros((8, 8, 3))])
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1; got 0"):
        embed_dask(ext, ["a.png"], chunk_size=0)
    with pytest.raises(ValueError, match=r"needs a Dask client: start one "
                                         r"\(distributed.Client\(...\)\)"):
        embed_dask(ext, ["a.png"])


@pytest.mark.skipif(not HAS_RAY, reason="needs skxfer[ray]")
def test_embed_ray_needs_a_running_ray():
    # in a subprocess: importing ray here, before the Ray tests set their
    # environment, would put their local node on the interface address
    import subprocess

    code = (
        "import numpy as np, torch\n"
        "from skxfer import PretrainedFeatureExtractor\n"
        "from skxfer.distributed import embed_ray\n"
        "ext = PretrainedFeatureExtractor(torch.nn.Conv2d(3, 2, 3)).fit(\n"
        "    np.zeros((1, 8, 8, 3), np.uint8))\n"
        "try:\n"
        "    embed_ray(ext, ['a.png'])\n"
        "except RuntimeError as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=WAIT)
    assert "embed_ray needs a running Ray: call ray.init(...) first" in out.stdout, (
        out.stdout + out.stderr)


def test_warm_up_imports_what_a_first_fit_would():
    import subprocess

    code = (
        "import sys\n"
        "from skxfer.distributed import warm_up\n"
        "assert 'torch' in sys.modules and 'torch._dynamo' not in sys.modules\n"
        "warm_up()\n"
        "assert 'torch._dynamo' in sys.modules\n"
        "print('warm')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=WAIT)
    assert out.stdout.strip() == "warm", out.stderr


def test_each_worker_runs_its_own_view_of_the_extractor(png_paths, monkeypatch):
    from skxfer.distributed import _for_this_worker

    ext = PretrainedFeatureExtractor(_tiny_cnn(), feature_store=True,
                                     num_workers=2).fit(png_paths[:1])
    local = _for_this_worker(ext)
    assert _for_this_worker(ext) is local  # once per worker
    assert local is not ext and local.backbone_ is ext.backbone_
    assert local.num_workers == 2  # this process may start processes
    skxfer.clear_feature_store()
    np.testing.assert_array_equal(local.transform(png_paths[:40]),
                                  ext.transform(png_paths[:40]))
    # the view kept its features out of the store, the extractor did not
    assert skxfer.feature_store_info()["entries"] == 40
    skxfer.clear_feature_store()
    # a daemonic worker process (Dask's) may not start DataLoader processes
    other = PretrainedFeatureExtractor(_tiny_cnn(), num_workers=2).fit(png_paths[:1])
    monkeypatch.setattr(__import__("multiprocessing").current_process(),
                        "daemon", True)
    assert _for_this_worker(other).num_workers == 0
    assert other.num_workers == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_worker_given_a_gpu_runs_an_auto_extractor_there(png_paths, monkeypatch):
    from skxfer.distributed import _for_this_worker

    with monkeypatch.context() as m:  # fitted where there was no GPU
        m.setattr(torch.cuda, "is_available", lambda: False)
        ext = PretrainedFeatureExtractor(_tiny_cnn()).fit(png_paths[:1])
    assert ext.device_ == "cpu"
    local = _for_this_worker(ext)
    assert local.device_ == "cuda" and ext.device_ == "cpu"
    assert next(local.backbone_.parameters()).is_cuda
    np.testing.assert_allclose(local.transform(png_paths[:64]),
                               ext.transform(png_paths[:64]), atol=1e-4)


# ---- Dask -------------------------------------------------------------------------


@pytest.fixture(scope="class")
def dask_client():
    distributed = pytest.importorskip("distributed")
    faulthandler.dump_traceback_later(3 * WAIT, exit=True)  # cluster start-up
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, timeout=WAIT,
    ) as cluster, distributed.Client(cluster, timeout=WAIT) as client:
        client.wait_for_workers(2, timeout=WAIT)
        faulthandler.cancel_dump_traceback_later()
        yield client


def _reset_peak_rss():
    # Linux: the high-water mark of this process's RSS starts again from now
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss():
    """Bytes: the most this process held since the last reset (VmHWM)."""
    with open("/proc/self/status") as f:
        kib = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    return int(kib) * 1024


@pytest.mark.skipif(not HAS_DASK, reason="needs skxfer[dask]")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.usefixtures("watchdog")
class TestDask:
    def test_the_cluster_listens_on_loopback_only(self, dask_client):
        info = dask_client.scheduler_info()
        addresses = [dask_client.scheduler.address, *info["workers"]]
        assert all(a.startswith("tcp://127.0.0.1:") for a in addresses), addresses
        pids = {os.getpid(), *dask_client.run(os.getpid).values()}
        listening = _listening(pids)
        assert listening and all(_loopback(ip) for ip, _ in listening), listening

    def test_embedding_equals_transform_in_flat_worker_memory(
            self, dask_client, png_paths, wide_extractor, tmp_path):
        import dask.array as da

        peaks = {}
        for n in (500, 2000):
            dask_client.run(_reset_peak_rss)  # each run's own peak
            features = embed_dask(wide_extractor, png_paths[:n], chunk_size=250)
            assert features.shape == (n, wide_extractor.n_features_out_)
            assert features.chunks[0] == (250,) * (n // 250)
            folder = tmp_path / f"features{n}"
            _bounded(da.to_npy_stack, folder, features)  # written by the workers
            peaks[n] = max(dask_client.run(_peak_rss).values())
        got = np.concatenate([np.load(folder / f"{i}.npy") for i in range(8)])
        assert np.abs(got - _reference(wide_extractor, png_paths)).max() <= 1e-5
        print(f"\npeak worker RSS on Dask: {peaks[500] / MiB:.0f} MiB for 500 "
              f"images, {peaks[2000] / MiB:.0f} MiB for 2,000")
        assert peaks[2000] <= peaks[500] + max(0.1 * peaks[500], 50 * MiB), peaks

    def test_the_extractor_goes_to_each_worker_once(
            self, dask_client, png_paths, tmp_path):
        count_file = tmp_path / "unpickled"
        features = embed_dask(_counted(png_paths, count_file), png_paths[:800],
                              chunk_size=100)
        # the tasks refer to the scattered extractor: a small graph
        import pickle

        assert len(pickle.dumps(dict(features.__dask_graph__()))) < 64 * 1024
        got = dask_client.compute(features).result(timeout=WAIT)
        assert got.shape == (800, 8)
        unpickled = count_file.read_text().split()
        workers = {str(pid) for pid in dask_client.run(os.getpid).values()}
        # 8 partitions; each worker that ran one unpickled the extractor once
        assert 1 <= len(unpickled) <= 2 and len(set(unpickled)) == len(unpickled)
        assert set(unpickled) <= workers

    def test_searches_equal_the_local_ones(self, dask_client, local_results):
        with parallel_backend("dask"):
            results = _searches()
        _assert_same_results(results, local_results)

    def test_the_store_settings_and_folder_hold_in_the_workers(
            self, dask_client, tmp_path):
        with parallel_backend("dask"):
            _store_settings_hold_in_workers(tmp_path)

    def test_the_example_searches_and_embeds(
            self, dask_client, local_results, capsys):
        result = _load_example("scale_dask").main(
            ["--scheduler", dask_client.scheduler.address, "--images", "200"])
        _check_example(result, local_results, capsys.readouterr().out)


# ---- Ray --------------------------------------------------------------------------


@pytest.fixture(scope="class")
def ray_session(tmp_path_factory):
    if not HAS_RAY:
        pytest.skip("needs skxfer[ray]")
    home_ray = Path.home() / ".ray"
    before = sorted(home_ray.rglob("*")) if home_ray.exists() else None
    temp_dir = tmp_path_factory.mktemp("ray")
    tests = str(Path(__file__).resolve().parent)
    with pytest.MonkeyPatch.context() as env:
        # before ray is imported: otherwise Ray moves a node started for
        # 127.0.0.1 onto the machine's interface address
        env.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # token authentication with a token of our own: Ray writes none to ~/.ray
        env.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
        # workers import this module (to unpickle _Counted)
        env.setenv("PYTHONPATH", os.pathsep.join(
            [tests, *filter(None, [os.environ.get("PYTHONPATH")])]))
        import joblib.pool
        import ray
        from ray._private import ray_constants
        from ray.util.joblib import register_ray

        assert not ray_constants.ENABLE_RAY_CLUSTER, "ray was imported too early"
        bases = joblib.pool.PicklingPool.__bases__
        faulthandler.dump_traceback_later(3 * WAIT, exit=True)
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False,
                 _node_ip_address="127.0.0.1", _temp_dir=str(temp_dir),
                 object_store_memory=512 * MiB, log_to_driver=False)
        faulthandler.cancel_dump_traceback_later()
        try:
            register_ray()
            yield ray, temp_dir
        finally:
            ray.shutdown()
            # Ray's joblib backend rebases joblib's PicklingPool onto its own
            # Pool; give the multiprocessing backend back its own
            joblib.pool.PicklingPool.__bases__ = bases
    after = sorted(home_ray.rglob("*")) if home_ray.exists() else None
    assert after == before, f"Ray left {after} in {home_ray}"


class _PeakRSS:
    """Peak memory of this process's descendants whose command line contains
    ``marker`` (and that ``old`` does not list), sampled every 20 ms: ``own``,
    the resident memory without the shared pages of Ray's object store
    (VmRSS - RssShmem), and ``hwm``, the kernel's high-water mark of the RSS
    with them (VmHWM)."""

    def __init__(self, marker, old=()):
        self.marker, self.old = marker, set(old)
        self.own, self.hwm = {}, {}
        self._stop = threading.Event()

    def _sample(self):
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            for child in me.children(recursive=True):
                if child.pid in self.old:
                    continue
                try:
                    if self.marker not in " ".join(child.cmdline()):
                        continue
                    status = Path(f"/proc/{child.pid}/status").read_text()
                except (psutil.Error, OSError):
                    continue
                kib = {line.split(":")[0]: int(line.split()[1])
                       for line in status.splitlines()
                       if line.startswith(("VmHWM:", "VmRSS:", "RssShmem:"))}
                own = (kib["VmRSS"] - kib["RssShmem"]) * 1024
                self.own[child.pid] = max(self.own.get(child.pid, 0), own)
                self.hwm[child.pid] = max(self.hwm.get(child.pid, 0),
                                          kib["VmHWM"] * 1024)
            time.sleep(0.02)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


def _collect(dataset):
    """{path: features} of an embedded Ray dataset, read here batch by batch."""
    rows = {}
    for batch in dataset.iter_batches(batch_size=250, batch_format="numpy"):
        rows.update(zip(batch["path"], batch["features"], strict=True))
    return rows


@pytest.mark.skipif(not HAS_RAY, reason="needs skxfer[ray]")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.usefixtures("watchdog")
class TestRay:
    def test_ray_runs_on_loopback_and_writes_to_its_temp_dir(self, ray_session):
        ray, temp_dir = ray_session
        nodes = ray.nodes()
        assert [node["NodeManagerAddress"] for node in nodes] == ["127.0.0.1"]
        assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
        import psutil

        pids = {p.pid for p in psutil.Process().children(recursive=True)}
        listening = _listening(pids | {os.getpid()})
        assert listening and all(_loopback(ip) for ip, _ in listening), listening
        assert any(p.name.startswith("session_") for p in temp_dir.iterdir())

    def test_embedding_equals_transform_in_flat_worker_memory(
            self, ray_session, png_paths, wide_extractor):
        own, hwm, old = {}, {}, set()
        count_file = Path(wide_extractor.count_file)
        for n in (500, 2000):
            count_file.write_text("")
            dataset = embed_ray(wide_extractor, png_paths[:n], batch_size=125,
                                concurrency=2)
            with _PeakRSS("_RayEmbed", old) as rss:
                rows = _bounded(_collect, dataset)
            assert rss.own, "no actor seen"
            own[n], hwm[n] = max(rss.own.values()), max(rss.hwm.values())
            old |= set(rss.own)
            # 4 or 16 batches over 2 actors: each actor that ran one (an actor
            # still starting when the work ran out did not) unpickled it once,
            # and the memory measured is that of an actor that did the work (on
            # a loaded machine the 20 ms sampler can miss a short-lived second
            # actor altogether: it is not required to have seen every one)
            unpickled = count_file.read_text().split()
            assert 1 <= len(unpickled) == len(set(unpickled)), unpickled
            assert set(unpickled) & set(map(str, rss.own)), (unpickled, rss.own)
        got = np.stack([rows[path] for path in png_paths])
        assert np.abs(got - _reference(wide_extractor, png_paths)).max() <= 1e-5
        print(f"\npeak actor memory on Ray Data, 500 / 2,000 images: "
              f"{own[500] / MiB:.0f} / {own[2000] / MiB:.0f} MiB without the "
              f"object store's pages, {hwm[500] / MiB:.0f} / {hwm[2000] / MiB:.0f} "
              "MiB with them (VmHWM)")
        # an actor's RSS also counts the object-store pages it wrote its
        # outputs to: shared memory that Ray's store owns and bounds
        # (object_store_memory), so they are left out here
        assert own[2000] <= own[500] + max(0.1 * own[500], 50 * MiB), own

    def test_searches_equal_the_local_ones(self, ray_session, local_results):
        with parallel_backend("ray", n_jobs=2):
            results = _searches()
        _assert_same_results(results, local_results)

    def test_the_store_settings_and_folder_hold_in_the_workers(
            self, ray_session, tmp_path):
        with parallel_backend("ray", n_jobs=2):
            _store_settings_hold_in_workers(tmp_path)

    def test_the_example_searches_and_embeds(
            self, ray_session, local_results, capsys):
        ray, _ = ray_session
        result = _load_example("scale_ray").main(["--images", "200"])
        assert ray.is_initialized()  # the example used the running session
        _check_example(result, local_results, capsys.readouterr().out)

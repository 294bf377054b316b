"""Feature-extraction throughput and memory, side by side.

torchvision ``resnet18`` (weights=None: nothing to download) with the
preprocessing of ``ResNet18_Weights.DEFAULT`` (resize 256, crop 224, ImageNet
normalisation) on uint8 NHWC arrays of 224x224 images; for 64x64 images the
same normalisation with resize and crop at 64 (the network then runs at 64 px).
Batch 32, ``--threads`` torch threads. Images per second of:

(a) the model's forward alone, on ready (preprocessed) tensors -- the ceiling,
(b) a hand-written loop: convert each batch, apply the transforms, run the
    model under ``inference_mode``,
(c) ``PretrainedFeatureExtractor`` on the same arrays,
(d) ``PretrainedFeatureExtractor`` on the same images as PNG files.

(a)-(d) run without the feature store (``feature_store=False``: a module of
one's own is stored by default too). With it --
``PretrainedFeatureExtractor("resnet18", weights=None, feature_store=True)``
and the same preprocessing, the store emptied before each round:

(e) PNG files, first pass: each file read once, hashed and decoded, then the
    forward pass; the features stored,
(f) PNG files, second pass: every image a hit (no decoding, no forward).

With timm installed, the same architecture from timm at 224 px
(``"timm:resnet18"``, weights=None, timm's eval transform for its data
config: resize 235 bicubic, crop 224, ImageNet normalisation):

(g) a hand-written timm loop: timm's transform on each image as PIL, the
    model under ``inference_mode``, a batch at a time,
(h) ``PretrainedFeatureExtractor("timm:resnet18")`` on the same arrays.

Then the peak memory (RSS) of a fresh process that transforms 500 and 5,000
PNG paths (64x64), against the growth of the output array.

``--compare-ref REF`` runs (e) and (f) in fresh processes against skxfer as it
is at git ref ``REF`` and as it is here, alternately, ``--rounds`` times each,
and prints the medians and their ratio. On a shared machine, add
``--in-process``: files are decoded in the process that runs the network
(``num_workers=0``) and its CPU time per image is compared as well, which
other processes disturb less than wall time. Run::

    python benchmarks/bench_extract.py [--images 96] [--repeats 3] [--threads 2]
                                       [--skip-timm] [--skip-memory]
    python benchmarks/bench_extract.py --compare-ref main [--rounds 3] [--in-process]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from torchvision.models import ResNet18_Weights, resnet18
from torchvision.transforms import v2

import skxfer
from skxfer import PretrainedFeatureExtractor

BATCH = 32


def small_preprocessing(size):
    """ResNet18_Weights.DEFAULT.transforms() with resize and crop at ``size``."""
    return v2.Compose([
        v2.Resize(size, antialias=True),
        v2.CenterCrop(size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])


def preprocessing(size):
    if size == 224:
        return ResNet18_Weights.DEFAULT.transforms()
    return small_preprocessing(size)


def write_pngs(images, folder):
    paths = []
    for i, img in enumerate(images):
        path = os.path.join(folder, f"{i:05d}.png")
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths


def run(size, n_images, repeats, folder):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (n_images, size, size, 3), dtype=np.uint8)
    paths = write_pngs(images, folder)
    prep = preprocessing(size)
    torch.manual_seed(0)
    model = resnet18(weights=None)
    model.fc = torch.nn.Identity()
    model.eval()
    ready = prep(torch.from_numpy(images).permute(0, 3, 1, 2))

    def forward_only():
        with torch.inference_mode():
            for start in range(0, n_images, BATCH):
                model(ready[start : start + BATCH])

    def hand_loop():
        out = []
        with torch.inference_mode():
            for start in range(0, n_images, BATCH):
                batch = torch.from_numpy(images[start : start + BATCH])
                batch = prep(batch.permute(0, 3, 1, 2))
                out.append(model(batch))
        return torch.cat(out).numpy()

    # the same network as ``model`` (the extractor runs its own copy)
    ext = PretrainedFeatureExtractor(
        model, weights=None, preprocessing=prep, batch_size=BATCH, device="cpu",
        feature_store=False,
    )
    ext.fit(images[:1])

    contestants = [
        ("(a) forward only, ready tensors", forward_only),
        ("(b) hand-written loop", hand_loop),
        ("(c) PretrainedFeatureExtractor, arrays", lambda: ext.transform(images)),
        ("(d) PretrainedFeatureExtractor, PNG files", lambda: ext.transform(paths)),
    ]
    np.testing.assert_allclose(ext.transform(images), hand_loop(), atol=1e-3)
    times = {name: [] for name, _ in contestants}
    for _, fn in contestants:  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in contestants:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    base = n_images / statistics.median(times["(b) hand-written loop"])
    rates = {name: n_images / statistics.median(times[name])
             for name, _ in contestants}
    first, second, _ = store_passes(paths, size, repeats, folder)
    rates["(e) PNG files, feature store: first pass"] = first
    rates["(f) PNG files, feature store: second pass"] = second
    print(f"\n{size}x{size} uint8 NHWC, {n_images} images, batch {BATCH}")
    print(f"{'':44s} {'img/s':>8s} {'vs (b)':>7s}")
    for name, rate in rates.items():
        print(f"{name:44s} {rate:8.1f} {rate / base:7.2f}")


def timm_rows(n_images, repeats):
    """(g) and (h): timm's resnet18 at 224 px, images/s, beside (b)."""
    try:
        from timm.data import create_transform, resolve_data_config
    except ImportError:
        print("\n(timm rows skipped: pip install timm)")
        return
    import copy

    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (n_images, 224, 224, 3), dtype=np.uint8)
    ext = PretrainedFeatureExtractor("timm:resnet18", weights=None,
                                     batch_size=BATCH, device="cpu",
                                     feature_store=False).fit(images[:1])
    model = copy.deepcopy(ext.backbone_).eval()  # the same random weights
    transform = create_transform(**resolve_data_config(model=model))

    def hand_loop():
        out = []
        with torch.inference_mode():
            for start in range(0, n_images, BATCH):
                batch = torch.stack([transform(Image.fromarray(img))
                                     for img in images[start : start + BATCH]])
                out.append(model(batch))
        return torch.cat(out).numpy()

    contestants = [
        ("(g) timm: hand-written loop (PIL, timm's transform)", hand_loop),
        ('(h) PretrainedFeatureExtractor("timm:resnet18")',
         lambda: ext.transform(images)),
    ]
    np.testing.assert_allclose(ext.transform(images), hand_loop(), atol=1e-3)
    times = {name: [] for name, _ in contestants}
    for _ in range(repeats + 1):  # the first round warms up
        for name, fn in contestants:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    print(f"\ntimm resnet18 (weights=None), 224x224 uint8 NHWC, {n_images} images, "
          f"batch {BATCH}")
    print(f"{'':52s} {'img/s':>8s} {'vs (g)':>7s}")
    base = n_images / statistics.median(times[contestants[0][0]][1:])
    for name, _ in contestants:
        rate = n_images / statistics.median(times[name][1:])
        print(f"{name:52s} {rate:8.1f} {rate / base:7.2f}")


def store_passes(paths, size, repeats, folder, num_workers=None):
    """Images/s of (e) the first pass and (f) the second pass over ``paths``
    with the feature store on, and the first pass's CPU milliseconds per
    image in this process (medians of ``repeats`` rounds after a warm-up)."""
    probe = os.path.join(folder, "probe.png")  # fit on an image not in paths
    Image.fromarray(np.full((size, size, 3), 128, np.uint8)).save(probe)
    firsts, seconds, cpus = [], [], []
    for round_ in range(repeats + 1):
        skxfer.clear_feature_store()
        ext = PretrainedFeatureExtractor(
            "resnet18", weights=None, preprocessing=preprocessing(size),
            batch_size=BATCH, num_workers=num_workers, device="cpu",
            feature_store=True,
        ).fit([probe])
        start, cpu = time.perf_counter(), time.process_time()
        ext.transform(paths)
        first, cpu = time.perf_counter() - start, time.process_time() - cpu
        start = time.perf_counter()
        ext.transform(paths)
        second = time.perf_counter() - start
        if round_:  # the first round warms up
            firsts.append(first)
            seconds.append(second)
            cpus.append(cpu)
    skxfer.clear_feature_store()
    return (len(paths) / statistics.median(firsts),
            len(paths) / statistics.median(seconds),
            1000 * statistics.median(cpus) / len(paths))


def child(args):
    """(e) and (f) alone, in this process: one JSON line."""
    out = {}
    for size, n in sizes(args.images):
        with tempfile.TemporaryDirectory() as folder:
            rng = np.random.RandomState(0)
            paths = write_pngs(
                rng.randint(0, 256, (n, size, size, 3), dtype=np.uint8), folder)
            out[size] = store_passes(paths, size, args.repeats, folder,
                                     0 if args.in_process else None)
    print(json.dumps(out))


def sizes(images):
    return ((224, images), (64, images * 4))


def compare(args):
    from _compare import interleaved

    results = interleaved(
        os.path.abspath(__file__), args.compare_ref,
        ["--images", str(args.images), "--repeats", str(args.repeats),
         "--threads", str(args.threads)]
        + (["--in-process"] if args.in_process else []), args.rounds)
    ref = args.compare_ref
    print(f"PNG files with the feature store, resnet18 (weights=None), "
          f"{args.threads} threads, "
          f"{'decoded in process' if args.in_process else 'default workers'}; "
          f"median of {args.rounds} interleaved processes (each the median of "
          f"{args.repeats} rounds)")
    print(f"{'':38s} {ref:>10s} {'this tree':>10s} {'ratio':>7s}")
    rows = [("first pass, images/s", 0), ("second pass (hits), images/s", 1)]
    if args.in_process:
        rows.append(("first pass, CPU ms/image", 2))
    for size, n in sizes(args.images):
        for name, i in rows:
            value = {tree: statistics.median(r[str(size)][i] for r in runs)
                     for tree, runs in results.items()}
            print(f"{f'{size} px, {n} files, {name}':44s} {value[ref]:10.1f} "
                  f"{value['this tree']:10.1f} "
                  f"{value['this tree'] / value[ref]:7.3f}")


_RSS_CHILD = """
import resource, sys, glob, numpy as np, torch
torch.set_num_threads(int(sys.argv[3]))
from torchvision.models import resnet18
from torchvision.transforms import v2
from skxfer import PretrainedFeatureExtractor
paths = sorted(glob.glob(sys.argv[1] + "/*.png"))[: int(sys.argv[2])]
prep = v2.Compose([v2.Resize(64, antialias=True), v2.CenterCrop(64),
                   v2.ToDtype(torch.float32, scale=True),
                   v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
ext = PretrainedFeatureExtractor(
    resnet18(weights=None), weights=None, device="cpu", preprocessing=prep)
out = ext.fit(paths[:1]).transform(paths)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, out.nbytes)
"""


def memory(folder, threads):
    rng = np.random.RandomState(1)
    write_pngs(rng.randint(0, 256, (5000, 64, 64, 3), dtype=np.uint8), folder)
    rows = []
    for n in (500, 5000):
        result = subprocess.run(
            [sys.executable, "-c", _RSS_CHILD, folder, str(n), str(threads)],
            capture_output=True, text=True, check=True,
        )
        rss, nbytes = map(int, result.stdout.split())
        rows.append((n, rss, nbytes))
    print("\npeak RSS transforming PNG paths (64x64), fresh process each")
    for n, rss, nbytes in rows:
        print(f"{n:6d} paths: peak RSS {rss / 2**20:8.1f} MiB, "
              f"output {nbytes / 2**20:6.1f} MiB")
    grew, out_grew = rows[1][1] - rows[0][1], rows[1][2] - rows[0][2]
    print(f"RSS grew {grew / 2**20:.1f} MiB; the output grew "
          f"{out_grew / 2**20:.1f} MiB")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-timm", action="store_true")
    parser.add_argument("--compare-ref", metavar="REF",
                        help="compare (e) and (f) with skxfer at git ref REF")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--in-process", action="store_true",
                        help="with --compare-ref: decode in the process that "
                        "runs the network, and compare its CPU time too")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        return child(args)
    if args.compare_ref:
        return compare(args)
    print(f"resnet18 (weights=None), {args.threads} threads, "
          f"median of {args.repeats}")
    for size, n in sizes(args.images):
        with tempfile.TemporaryDirectory() as folder:
            run(size, n, args.repeats, folder)
        if size == 224 and not args.skip_timm:
            timm_rows(n, args.repeats)
    if not args.skip_memory:
        with tempfile.TemporaryDirectory() as folder:
            memory(folder, args.threads)


if __name__ == "__main__":
    main()

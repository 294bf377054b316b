"""The same fits on a quiet machine and beside a busy process.

Each case runs in a fresh process at torch's default threads (nothing here
sets them), after one warm-up run, once quiet and once beside a busy
process: a subprocess spinning on one core, started just before the timed
run and killed right after (it also stops by itself after ``--spin-limit``
seconds). Cases:

- ``tabular``: ``TransferMLPClassifier((64,), max_epochs=30)`` on digits,
  beside scikit-learn's ``MLPClassifier((64,), max_iter=30)`` (``sklearn``)
  and a hand-written torch loop of the same network (``torch_loop``: Adam,
  batches of 200, 30 epochs);
- ``head``: a small CNN (random weights) frozen, a (64,) head trained on its
  features of 1,000 32x32 images, 30 epochs;
- ``cnn``: the same CNN fine-tuned end to end, 3 epochs;
- ``resnet18``: ``PretrainedFeatureExtractor`` of resnet18 (weights=None) on
  64 224x224 images (fit and transform);
- ``first``: the tabular fit in a fresh process, no warm-up: the time to
  ``import skxfer``, the first fit, a second fit, and how long the first
  optimizer's import of ``torch._dynamo`` takes on its own;
- ``workers``: ``cross_val_score(..., cv=2, n_jobs=2)`` of the tabular fit,
  the first call (fresh joblib workers) and a second (the same workers).

Medians of ``--rounds`` rounds; in each round the quiet and busy runs (and
the trees, with ``--compare-ref``) are interleaved. ``--compare-ref main``
runs each case with another git ref's skxfer too (``git archive`` into a
temporary folder) and adds its columns and this tree's quiet time over it.

``--rule`` instead measures what ``skxfer._threads.MACS_PER_THREAD`` rests
on: for MLP training steps of growing size, the time per step on one thread
and on two (wall: meaningful on a quiet machine), and the two-thread gain
estimated from CPU time (the main thread's CPU time per step with two
threads waiting passively, ``OMP_WAIT_POLICY=PASSIVE``, against one
thread's), which other processes disturb far less.

Run: ``python benchmarks/bench_busy.py [--quick] [--rounds 3]
[--compare-ref main] [--cases tabular,first]`` or ``--rule``.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _compare import ROOT, tree  # noqa: E402

CASES = ("tabular", "sklearn", "torch_loop", "head", "cnn", "resnet18", "first",
         "workers")
SPIN = ("import sys, time\n"
        "end = time.monotonic() + float(sys.argv[1])\n"
        "while time.monotonic() < end:\n"
        "    pass\n")


class Busy:
    """A process spinning on one core while the block runs (bounded)."""

    def __init__(self, on, limit):
        self.on, self.limit = on, limit

    def __enter__(self):
        if self.on:
            self.proc = subprocess.Popen([sys.executable, "-c", SPIN,
                                          str(self.limit)])
            time.sleep(0.3)  # let it start spinning
        return self

    def __exit__(self, *exc):
        if self.on:
            self.proc.kill()
            self.proc.wait(timeout=30)


# ---- the workloads (run in a child process) ------------------------------------


def _digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype("float32"), y


def _images(n, size):
    import numpy as np

    rng = np.random.RandomState(0)
    return (rng.randint(0, 256, (n, size, size, 3)).astype("uint8"),
            rng.randint(0, 10, n))


def _cnn():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )


def _no_store():
    import skxfer

    if hasattr(skxfer, "set_config"):  # every fit computes its features
        try:
            skxfer.set_config(feature_store=False)
        except TypeError:
            pass


def workload(case, quick):
    """A function running one fit of ``case`` (its data built once)."""
    import torch

    if case in ("tabular", "first"):
        from skxfer import TransferMLPClassifier

        X, y = _digits()
        return lambda: TransferMLPClassifier((64,), max_epochs=30,
                                             random_state=0).fit(X, y)
    if case == "sklearn":
        from sklearn.neural_network import MLPClassifier

        X, y = _digits()
        return lambda: MLPClassifier((64,), max_iter=30, random_state=0).fit(X, y)
    if case == "torch_loop":
        from torch import nn

        X, y = _digits()
        X, y = torch.from_numpy(X), torch.from_numpy(y)

        def loop():
            torch.manual_seed(0)
            net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
            opt = torch.optim.Adam(net.parameters(), lr=1e-3)
            for _ in range(30):
                for idx in torch.randperm(len(X)).split(200):
                    opt.zero_grad()
                    nn.functional.cross_entropy(net(X[idx]), y[idx]).backward()
                    opt.step()
        return loop
    if case in ("head", "cnn"):
        from skxfer import PretrainedFeatureExtractor, TransferMLPClassifier

        _no_store()
        X, y = _images(300 if quick else 1000, 32)
        # the images as they are (no resizing to 224 px), features never stored
        backbone = PretrainedFeatureExtractor(_cnn(), preprocessing=None,
                                              feature_store=False)
        if case == "head":
            return lambda: TransferMLPClassifier(
                (64,), backbone=backbone, freeze=True, max_epochs=30,
                random_state=0).fit(X, y)
        return lambda: TransferMLPClassifier(
            (64,), backbone=backbone, freeze=False, max_epochs=3,
            random_state=0).fit(X, y)
    if case == "resnet18":
        from torchvision.models import resnet18

        from skxfer import PretrainedFeatureExtractor

        _no_store()
        X, _ = _images(16 if quick else 64, 224)
        torch.manual_seed(0)
        model = resnet18(weights=None)
        return lambda: PretrainedFeatureExtractor(
            model, preprocessing=None, feature_store=False).fit(X).transform(X)
    if case == "workers":
        from joblib.externals.loky import get_reusable_executor
        from sklearn.model_selection import cross_val_score

        from skxfer import TransferMLPClassifier

        X, y = _digits()
        get_reusable_executor().shutdown(wait=True)  # fresh workers next
        return lambda: cross_val_score(
            TransferMLPClassifier((64,), max_epochs=30, random_state=0), X, y,
            cv=2, n_jobs=2)
    raise ValueError(case)


def timed(fn):
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def run_child(case, busy, quick, limit):
    """One measurement in this fresh process; prints a JSON line."""
    warnings.simplefilter("ignore")  # ConvergenceWarning of the fixed epochs
    out = {}
    if case == "first":
        with Busy(busy, limit):
            t0 = time.perf_counter()
            import skxfer  # noqa: F401

            out["import"] = time.perf_counter() - t0
            fn = workload(case, quick)
            dynamo = "torch._dynamo" in sys.modules
            out["first"], out["first_cpu"] = timed(fn)
            out["dynamo_imported_by_fit"] = (not dynamo
                                             and "torch._dynamo" in sys.modules)
            out["wall"], out["cpu"] = timed(fn)  # the warm fit
        return out
    fn = workload(case, quick)
    if case == "workers":  # the first call starts the workers
        with Busy(busy, limit):
            out["fresh_workers"] = timed(fn)[0]
            out["wall"], out["cpu"] = timed(fn)
        return out
    timed(fn)  # warm-up: imports, torch._dynamo, caches
    with Busy(busy, limit):
        out["wall"], out["cpu"] = timed(fn)
    import torch

    out["threads"] = torch.get_num_threads()
    return out


def run_dynamo_child():
    """Time ``import torch._dynamo`` alone, after importing skxfer."""
    import skxfer  # noqa: F401

    t0 = time.perf_counter()
    import torch._dynamo  # noqa: F401

    return {"dynamo_import": time.perf_counter() - t0}


def child(root, args, extra_env=None):
    env = dict(os.environ, PYTHONPATH=root, **(extra_env or {}))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(var, None)  # torch's defaults
    result = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                             *args], capture_output=True, text=True, env=env,
                            timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"bench_busy {args} failed under {root}:\n"
                           f"{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---- the rule's measurement ------------------------------------------------------

SHAPES = [  # rows, features, hidden
    (200, 64, (64,)), (200, 64, (100,)), (200, 64, (128,)), (512, 64, (64,)),
    (32, 64, (256, 256)), (200, 64, (256,)), (200, 512, (64,)), (200, 128, (256,)),
    (128, 64, (256, 256)), (200, 512, (100,)), (512, 64, (256, 256)),
    (512, 256, (1024, 1024)),
]


def run_rule_child(quick):
    """Per MLP shape: time and CPU time per training step, 1 and 2 threads."""
    import torch
    from torch import nn

    out = []
    for rows, features, hidden in SHAPES:
        row = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            torch.manual_seed(0)
            widths = (features, *hidden)
            layers = []
            for a, b in zip(widths[:-1], widths[1:], strict=True):
                layers += [nn.Linear(a, b), nn.ReLU()]
            net = nn.Sequential(*layers, nn.Linear(widths[-1], 10))
            X, y = torch.randn(rows, features), torch.randint(0, 10, (rows,))
            opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)

            def step(net=net, X=X, y=y, opt=opt):
                opt.zero_grad()
                nn.functional.cross_entropy(net(X), y).backward()
                opt.step()

            outs = (*widths[1:], 10)
            macs = rows * max(a * b for a, b in zip(widths, outs, strict=True))
            reps = max(5, min(300, int(3e9 // (macs * 6 + 1))))
            reps = max(3, reps // 5) if quick else reps
            for _ in range(3):
                step()
            walls, cpu, main = [], [], []
            for _ in range(3):
                c0, m0 = time.process_time(), time.thread_time()
                t0 = time.perf_counter()
                for _ in range(reps):
                    step()
                walls.append((time.perf_counter() - t0) / reps)
                cpu.append((time.process_time() - c0) / reps)
                main.append((time.thread_time() - m0) / reps)
            row[threads] = (min(walls), min(cpu), min(main))
        out.append({"shape": [rows, features, list(hidden)], "macs": macs,
                    "t1": row[1][0], "t2": row[2][0], "cpu1": row[1][1],
                    "main2": row[2][2]})
    return out


def rule(quick):
    sys.path.insert(0, ROOT)
    from skxfer._threads import MACS_PER_THREAD, threads_for

    flags = ["--quick"] if quick else []
    wall = child(ROOT, ["rule", *flags])
    cpu = child(ROOT, ["rule", *flags], {"OMP_WAIT_POLICY": "PASSIVE"})
    print(f"MLP training steps (Adam); MACS_PER_THREAD = {MACS_PER_THREAD:,}\n")
    print("| rows x features -> hidden | largest product (MACs) | 1 thread ms | "
          "2 threads ms | 2-thread gain (wall) | 2-thread gain (CPU time) | "
          "rule's threads on 2 CPUs |")
    print("|---|---|---|---|---|---|---|")
    for w, c in zip(wall, cpu, strict=True):
        rows, features, hidden = w["shape"]
        print(f"| {rows} x {features} -> {tuple(hidden)} | {w['macs']:,} | "
              f"{w['t1'] * 1e3:.3f} | {w['t2'] * 1e3:.3f} | {w['t1'] / w['t2']:.2f} | "
              f"{c['cpu1'] / c['main2']:.2f} | {threads_for(w['macs'], 2)} |")


# ---- the table -------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="one round, smaller image cases")
    parser.add_argument("--compare-ref", default=None,
                        help="also run a git ref's skxfer (e.g. main)")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--spin-limit", type=float, default=900.0,
                        help="seconds after which a busy loop stops by itself")
    parser.add_argument("--rule", action="store_true",
                        help="measure the thread rule's threshold instead")
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "rule":
            result = run_rule_child(args.quick)
        elif kind == "dynamo":
            result = run_dynamo_child()
        else:
            result = run_child(kind, rest[0] == "busy", args.quick,
                               args.spin_limit)
        print(json.dumps(result))
        return
    if args.rule:
        rule(args.quick)
        return
    rounds = 1 if args.quick else args.rounds
    cases = args.cases.split(",")
    trees = {"this tree": ROOT}
    if args.compare_ref:
        trees = {args.compare_ref: tree(args.compare_ref), "this tree": ROOT}
    flags = ["--quick"] if args.quick else []
    results = {(t, c, b): [] for t in trees for c in cases for b in (False, True)}
    dynamo = {t: [] for t in trees}
    for r in range(rounds):
        for case in cases:
            order = (False, True) if r % 2 == 0 else (True, False)
            for busy in order:
                for name, root in trees.items():
                    if case in ("sklearn", "torch_loop") and name != "this tree":
                        continue  # no skxfer in them
                    results[name, case, busy].append(child(
                        root, [case, "busy" if busy else "quiet", *flags,
                               f"--spin-limit={args.spin_limit}"]))
        if "first" in cases:
            for name, root in trees.items():
                dynamo[name].append(child(root, ["dynamo"])["dynamo_import"])
        print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)

    def med(name, case, busy, key="wall"):
        values = [x[key] for x in results[name, case, busy] if key in x]
        return statistics.median(values) if values else float("nan")

    print(f"Wall seconds, median of {rounds} interleaved run(s), torch's default "
          f"threads; busy: beside a process spinning on one core "
          f"({os.cpu_count()} CPUs).\n")
    head = "| case | quiet | beside busy | busy / quiet |"
    line = "|---|---|---|---|"
    if args.compare_ref:
        head += (f" {args.compare_ref} quiet | {args.compare_ref} beside busy | "
                 f"quiet / {args.compare_ref} |")
        line += "---|---|---|"
    print(head)
    print(line)
    for case in cases:
        q, b = med("this tree", case, False), med("this tree", case, True)
        text = f"| {case}{' (warm fit)' if case == 'first' else ''} | {q:.2f} | " \
               f"{b:.2f} | {b / q:.2f} |"
        if args.compare_ref:
            ref = args.compare_ref
            rq, rb = med(ref, case, False), med(ref, case, True)
            text += (f" {rq:.2f} | {rb:.2f} | {q / rq:.2f} |"
                     if rq == rq else " | | |")
        print(text)
    if "first" in cases:
        print("\nFirst fit in a fresh process (tabular case, seconds, quiet / beside "
              "busy):\n")
        print("| tree | import skxfer | first fit | warm fit | first / warm | "
              "import torch._dynamo alone |")
        print("|---|---|---|---|---|---|")
        for name in trees:
            cells = []
            for key in ("import", "first", "wall"):
                cells.append(f"{med(name, 'first', False, key):.2f} / "
                             f"{med(name, 'first', True, key):.2f}")
            ratio = [med(name, "first", busy, "first") / med(name, "first", busy)
                     for busy in (False, True)]
            print(f"| {name} | {' | '.join(cells)} | {ratio[0]:.1f} / "
                  f"{ratio[1]:.1f} | {statistics.median(dynamo[name]):.2f} |")
    checks(cases, trees, args.compare_ref, med)
    if "workers" in cases:
        print("\ncross_val_score(cv=2, n_jobs=2), seconds, quiet / beside busy: "
              "fresh workers then the same workers:\n")
        for name in trees:
            print(f"- {name}: fresh "
                  f"{med(name, 'workers', False, 'fresh_workers'):.2f} / "
                  f"{med(name, 'workers', True, 'fresh_workers'):.2f}, reused "
                  f"{med(name, 'workers', False):.2f} / "
                  f"{med(name, 'workers', True):.2f}")


SKXFER_CASES = ("tabular", "head", "cnn", "resnet18")


def checks(cases, trees, ref, med):
    """The targets, each with the figures it rests on and whether it holds."""
    rows = []
    this = "this tree"
    for case in (c for c in SKXFER_CASES if c in cases):
        ratio = med(this, case, True) / med(this, case, False)
        rows.append((f"{case}: beside busy within 1.5x of quiet", f"{ratio:.2f}x",
                     ratio <= 1.5))
    if "tabular" in cases and "sklearn" in cases:
        ours, theirs = med(this, "tabular", True), med(this, "sklearn", True)
        rows.append(("tabular beside busy no slower than scikit-learn's MLP",
                     f"{ours:.2f} vs {theirs:.2f} s", ours <= theirs))
    if "first" in cases:
        ratio = med(this, "first", False, "first") / med(this, "first", False)
        rows.append(("first fit in a fresh process within 1.5x of a warm fit "
                     "(quiet; else named in README)", f"{ratio:.1f}x", ratio <= 1.5))
    if ref:
        for case in (c for c in SKXFER_CASES + ("first",) if c in cases):
            ratio = med(this, case, False) / med(ref, case, False)
            rows.append((f"{case}: quiet no more than 5% slower than {ref}",
                         f"{ratio:.2f}x", ratio <= 1.05))
    if not rows:
        return
    print("\nTargets (one round is noise on a shared machine: use --rounds 3):\n")
    print("| target | measured | holds |")
    print("|---|---|---|")
    for target, measured, holds in rows:
        print(f"| {target} | {measured} | {'yes' if holds else 'NO'} |")


if __name__ == "__main__":
    main()

"""Run a benchmark's workload against another git ref's skxfer, side by side.

``tree(ref)`` unpacks ``git archive <ref>`` of this repository into a
temporary folder (nothing in the repository changes); ``interleaved`` runs
``python <script> --child ...`` once per tree and round, alternating the
trees, each in a fresh process with ``PYTHONPATH`` set to that tree, and
collects the JSON each child prints on its last line.
"""

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tree(ref):
    """A folder holding skxfer as it is at ``ref`` (removed at exit)."""
    folder = tempfile.mkdtemp(prefix=f"skxfer-{ref.replace('/', '_')}-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    archive = subprocess.run(["git", "-C", ROOT, "archive", ref],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    return folder


def child(script, root, args):
    """Run ``script --child args`` with skxfer imported from ``root``."""
    env = dict(os.environ, PYTHONPATH=root)
    result = subprocess.run([sys.executable, script, "--child", *args],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{script} failed under {root}:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def interleaved(script, ref, args, rounds):
    """``{name: [result, ...]}`` for ``ref`` and this tree, ``rounds`` each,
    run alternately (ref, this, ref, this, ...)."""
    trees = {ref: tree(ref), "this tree": ROOT}
    results = {name: [] for name in trees}
    for _ in range(rounds):
        for name, root in trees.items():
            results[name].append(child(script, root, args))
    return results

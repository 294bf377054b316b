"""Doctests that need an optional extra skip where it is not installed."""

import importlib.util

import pytest

# doctest name prefix -> (modules it imports, the extra that brings them)
NEEDS = {
    "skxfer.distributed.embed_dask": (("dask", "distributed"), "dask"),
}


def _installed(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def pytest_collection_modifyitems(config, items):
    for item in items:
        for prefix, (modules, extra) in NEEDS.items():
            missing = [m for m in modules if not _installed(m)]
            if item.name.startswith(prefix) and missing:
                item.add_marker(pytest.mark.skip(reason=(
                    f'needs {", ".join(missing)}: pip install "skxfer[{extra}]"')))

"""Shared test set-up: markers by folder, so `make` can run each group in its own process.

tests/kernels -> `kernels` (needs TRITON_INTERPRET=1 on a CPU, set by `make kernels` before import),
tests/site -> `site` (a built site and a browser), files named *distributed* -> `distributed`.
"""

import pathlib

import pytest

TESTS = pathlib.Path(__file__).resolve().parent
ROOT = TESTS.parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = pathlib.Path(str(item.fspath)).resolve()
        try:
            parts = path.relative_to(TESTS).parts
        except ValueError:
            continue  # notebooks (nbval) live in book/
        if parts[0] == "kernels":
            item.add_marker(pytest.mark.kernels)
        elif parts[0] == "site":
            item.add_marker(pytest.mark.site)
        if "distributed" in path.name:
            item.add_marker(pytest.mark.distributed)


@pytest.fixture
def root():
    """The repository root."""
    return ROOT

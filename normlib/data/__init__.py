"""Results of the book's full-scale experiments, stored as JSON inside the package.

A chapter's quick run executes in seconds; its full-scale version runs behind a flag
(``FULL = True``) and writes its results here with :func:`save`, so the notebook loads the same
file on the website, in CI and on Colab, where only the installed package is there.
"""

from __future__ import annotations

import json
import pathlib
from importlib import resources


def load(name: str):
    """The stored result ``name`` (file ``normlib/data/<name>.json``)."""
    return json.loads(resources.files(__name__).joinpath(f"{name}.json").read_text())


def save(name: str, value) -> pathlib.Path:
    """Write ``value`` as ``normlib/data/<name>.json`` (run from a source checkout)."""
    path = pathlib.Path(__file__).with_name(f"{name}.json")
    path.write_text(json.dumps(value, indent=1, sort_keys=True) + "\n")
    return path


def names(prefix: str = "") -> list[str]:
    """Names of the stored results that start with ``prefix``, sorted."""
    files = resources.files(__name__).iterdir()
    return sorted(
        f.name[:-5] for f in files if f.name.endswith(".json") and f.name.startswith(prefix)
    )

"""Helpers shared by the exercise tests: run one code cell of a chapter, judge a check's answer."""

from __future__ import annotations

import json
import pathlib

BOOK = pathlib.Path(__file__).resolve().parents[2] / "book"


def notebook_cell_namespace(notebook: str, marker: str) -> dict:
    """Execute the one code cell of ``book/<notebook>`` containing ``marker`` (a self-contained
    cell, e.g. an explorer's draw function) and return its namespace."""
    import matplotlib

    matplotlib.use("Agg")
    cells = json.loads((BOOK / notebook).read_text())["cells"]
    found = [
        "".join(c["source"])
        for c in cells
        if c["cell_type"] == "code" and marker in "".join(c["source"])
    ]
    assert len(found) == 1, f"{notebook}: expected one code cell containing {marker!r}"
    ns: dict = {}
    exec(compile(found[0], f"{notebook}:{marker}", "exec"), ns)
    return ns


def ok(result) -> bool:
    """The check passed, and says so."""
    return bool(result) and repr(result).startswith("✅")


def hint(result, text) -> bool:
    """The check failed, and its message contains ``text``."""
    return (not result) and repr(result).startswith("❌") and text in repr(result)


def assert_reports_exceptions(check) -> None:
    """An unimplemented or crashing answer gets a message from ``check``, not a traceback."""

    def todo(*args, **kwargs):
        raise NotImplementedError

    def broken(*args, **kwargs):
        return {}["missing"]

    assert "not implemented yet" in repr(check(todo))
    assert "raised KeyError" in repr(check(broken))

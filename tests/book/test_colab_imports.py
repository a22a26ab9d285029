"""Every chapter imports only what Colab has, plus normlib (which the first cell installs)."""

from __future__ import annotations

import ast
import json
import pathlib
import re
import sys

import pytest

BOOK = pathlib.Path(__file__).resolve().parents[2] / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
# Third-party packages a Colab runtime ships (triton: on its GPU runtimes, with CUDA torch).
COLAB = {"numpy", "torch", "matplotlib", "sklearn", "ipywidgets", "IPython", "scipy", "triton"}

pytestmark = pytest.mark.notebooks


def imported_top_level(source: str) -> set[str]:
    """Top-level module names imported by a cell (IPython magics and shell lines dropped)."""
    # a magic becomes `pass` at its own indentation, so the block around it still parses
    code = re.sub(r"^(\s*)[%!].*$", r"\1pass", source, flags=re.MULTILINE)
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_imports_are_available_on_colab(path):
    cells = json.loads(path.read_text())["cells"]
    used = set()
    for cell in cells:
        if cell["cell_type"] == "code":
            used |= imported_top_level("".join(cell["source"]))
    foreign = used - COLAB - {"normlib"} - set(sys.stdlib_module_names)
    assert not foreign, (
        f"{path.name} imports {sorted(foreign)}, which Colab lacks (use normlib.notebook.glue, "
        "not myst_nb)"
    )


def test_the_scan_finds_imports():
    assert imported_top_level("import a.b\nfrom c.d import e\n%pip install x\nfrom . import f") == {
        "a",
        "c",
    }

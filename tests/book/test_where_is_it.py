"""The landing page's "where is it" tables (book/intro.md) name files that exist and cover every op.

The op table has a column per tier, whose header names the folder (`normlib/ref/`, ...), and a row
per op naming the file in it; the table of shared pieces names paths from the repository root.
"""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
INTRO = ROOT / "book" / "intro.md"
OPS = ("batch_norm", "layer_norm", "instance_norm", "group_norm", "rms_norm")
TIERS = ("normlib/ref/", "normlib/nn/", "normlib/kernels/")
# InstanceNorm has no kernel of its own: it is GroupNorm with one channel per group (G = C).
# normlib.nn.functional.instance_norm runs batch_norm on the (1, N*C, ...) view, as torch does
KERNEL_FILE = {op: "batch_norm" if op == "instance_norm" else op for op in OPS}

pytestmark = pytest.mark.notebooks


def section() -> str:
    """The text of the '## Where is it in normlib?' section."""
    text = INTRO.read_text(encoding="utf-8")
    match = re.search(r"^## Where is it.*?(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, "book/intro.md has no '## Where is it ...' section"
    return match.group(0)


def tables(text: str) -> list[list[list[str]]]:
    """Markdown tables as rows of cells (header first, the --- row dropped)."""
    found, rows = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                rows.append(cells)
        elif rows:
            found.append(rows)
            rows = []
    return found


def code(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def is_path(token: str) -> bool:
    return "/" in token or token.endswith(".py")


def op_table() -> tuple[list[str], list[list[list[str]]]]:
    """(the folder of each tier column, [per row: the paths named in each tier column])."""
    [table] = [t for t in tables(section()) if "NumPy reference" in t[0][1]]
    header, *rows = table
    folders = [[t for t in code(h) if is_path(t)][0] for h in header[1:]]
    return folders, [[[folders[i] + t for t in code(c)] for i, c in enumerate(r[1:])] for r in rows]


def named_paths() -> list[str]:
    """Every file or folder the section names, relative to the repository root."""
    _, rows = op_table()
    in_op_table = {p for row in rows for cell in row for p in cell}
    op_cells = {p.rsplit("/", 1)[1] for p in in_op_table}
    elsewhere = {t for t in code(section()) if is_path(t) and t not in op_cells}
    return sorted(in_op_table | elsewhere)


def test_every_named_file_exists():
    paths = named_paths()
    assert len(paths) >= 20, paths
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"book/intro.md names files that do not exist: {missing}"


def test_the_op_table_covers_every_op_and_tier():
    folders, rows = op_table()
    assert folders == list(TIERS)
    assert len(rows) == len(OPS), rows
    for op, (ref, module, kernel) in zip(OPS, rows):
        assert ref == [f"normlib/ref/{op}.py"]
        assert module == [f"normlib/nn/{op}.py"]
        assert kernel == [f"normlib/kernels/{KERNEL_FILE[op]}.py"]


def test_the_functional_forms_are_where_the_table_says():
    [row] = [r for t in tables(section()) for r in t if "`normlib/nn/functional.py`" in r[-1]]
    names = [t for t in code(row[0]) if t in OPS]
    assert names == list(OPS), row
    functional = pytest.importorskip("normlib.nn.functional")
    missing = [n for n in names if not callable(getattr(functional, n, None))]
    assert not missing, f"not in normlib/nn/functional.py: {missing}"


def test_axes_is_named_as_the_single_source_of_truth():
    assert "`normlib/axes.py`" in section()

"""Notebook-level checks of every chapter (book/*.ipynb), as the website and Colab need them.

- Colab: the first cell installs normlib from the repository (tools/colab_cell.py --check).
- Standalone: a chapter runs with only itself and the installed normlib. `make notebooks` runs
  strict nbval on copies of the chapters in a fresh temporary folder, so its one run checks both
  the outputs and standalone-ness; here, the chapters are checked for paths into the repository,
  and the Makefile for running nbval that way.
- Website: outputs are stored (execution counts 1..n: the site renders them, it runs nothing) and
  widget views come with their stored state (else the site draws an empty box).
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted(ROOT.glob("book/*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

pytestmark = pytest.mark.notebooks

# What code in a chapter must not do: on Colab only the notebook and the installed normlib exist.
REPOSITORY_PATHS = {
    "a path into the repository": re.compile(
        r"""["'](\.\.?/)*(book|normlib|tests|tools|_build|_vendor|\.ci)/"""
    ),
    "a repository file": re.compile(
        r"""["'][^"']*(_config\.yml|_toc\.yml|references\.bib|requirements\.txt|pyproject\.toml"""
        r"""|Makefile)["']"""
    ),
    "a parent-folder path": re.compile(r"""["']\.\./"""),
    "sys.path surgery": re.compile(r"sys\.path\.(insert|append|extend)|sys\.path\s*[+=]"),
    "a change of folder": re.compile(r"os\.chdir|%cd\b"),
    "a file of the repository next to the notebook (__file__)": re.compile(r"__file__"),
    "another notebook or script (%run / %load)": re.compile(r"^\s*%(run|load)\b", re.MULTILINE),
}


def notebook_params():
    return [pytest.param(p, id=p.name) for p in NOTEBOOKS] or [
        pytest.param(None, id="no-notebook", marks=pytest.mark.skip(reason="no book/*.ipynb yet"))
    ]


def load(path: pathlib.Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


@pytest.mark.parametrize("path", notebook_params())
def test_colab_install_cell_is_current(path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "colab_cell.py"), "--check", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr + " (fix: make colab-cells)"


@pytest.mark.parametrize("path", notebook_params())
def test_reads_nothing_from_the_repository(path):
    """Static half of the standalone check; `make notebooks` runs the chapter away from the repo."""
    cells = [c for c in load(path)["cells"] if c["cell_type"] == "code"]
    found = [
        f"cell {i}: {what}: {m.group(0)!r}"
        for i, cell in enumerate(cells[1:], start=2)  # cells[0]: the Colab install cell
        for what, pattern in REPOSITORY_PATHS.items()
        for m in pattern.finditer(source(cell))
    ]
    assert not found, f"{path.name} would not run on Colab:\n  " + "\n  ".join(found)


@pytest.mark.parametrize("path", notebook_params())
def test_outputs_are_stored_top_to_bottom(path):
    counts = [c.get("execution_count") for c in load(path)["cells"] if c["cell_type"] == "code"]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name}: execution counts {counts}; run it top to bottom and store the outputs"
    )


@pytest.mark.parametrize("path", notebook_params())
def test_widget_views_have_their_state(path):
    nb = load(path)
    views = {
        out["data"][WIDGET_VIEW]["model_id"]
        for cell in nb["cells"]
        for out in cell.get("outputs", [])
        if WIDGET_VIEW in out.get("data", {})
    }
    if not views:
        return
    state = nb["metadata"].get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    missing = sorted(views - set(state))
    assert not missing, (
        f"{path.name}: {len(missing)} widget view(s) without stored state (the website shows them "
        "empty): execute with nbclient/jupyter execute, which stores widget state"
    )


def test_notebooks_target_runs_nbval_away_from_the_repository():
    """`make notebooks` copies the chapters to a fresh temporary folder and runs nbval there."""
    done = subprocess.run(
        ["make", "-n", "--always-make", "notebooks"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    recipe = done.stdout[done.stdout.find("mktemp") :]
    assert "mktemp -d" in done.stdout, done.stdout
    assert re.search(r"\bcp\b[^\n]*\.ipynb", recipe), recipe
    assert re.search(r"\bcd\b", recipe) and "--nbval" in recipe, recipe

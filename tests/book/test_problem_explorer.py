"""The explorer of chapter 01 (book/01_problem.ipynb): its draw function, taken from the notebook
and fed synthetic training histories, draws the distribution it is given, per step and network."""

from __future__ import annotations

import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from normlib.explorer import Explorer  # noqa: E402

NOTEBOOK = pathlib.Path(__file__).resolve().parents[2] / "book" / "01_problem.ipynb"
KEEP = (0, 50, 100)
KINDS = ("plain", "bn", "noisy")


def cell_defining(name: str) -> str:
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    found = [s for s in sources if f"def {name}(" in s]
    assert len(found) == 1, f"expected one cell defining {name}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def chapter():
    rng = np.random.default_rng(0)
    # synthetic histories: the distribution of z widens and moves with the step
    runs = {
        kind: {"z": {t: rng.normal(-t / 50, 1 + t / 50 + k, size=500) for t in KEEP}}
        for k, kind in enumerate(KINDS)
    }
    namespace = {
        "np": np,
        "plt": plt,
        "Explorer": Explorer,
        "runs": runs,
        "KEEP": KEEP,
        "KINDS": KINDS,
        "COLORS": {"plain": "tab:red", "bn": "tab:blue", "noisy": "tab:green"},
        "LABELS": {"plain": "no BN", "bn": "BN", "noisy": "noisy BN"},
        "Z_SAT": float(np.log(19.0)),
    }
    exec(cell_defining("draw_input_distribution"), namespace)  # noqa: S102 (our own notebook)
    return namespace


def heights(fig):
    return [p.get_data().values for p in fig.axes[0].patches if hasattr(p, "get_data")][0]


def test_frames_differ_by_step_and_network(chapter):
    draw = chapter["draw_input_distribution"]
    first = heights(draw(0, "plain"))
    assert not np.allclose(first, heights(draw(100, "plain")))
    assert not np.allclose(first, heights(draw(0, "bn")))
    plt.close("all")


def test_percentile_lines_and_title(chapter):
    draw = chapter["draw_input_distribution"]
    fig = draw(50, "noisy")
    z = chapter["runs"]["noisy"]["z"][50]
    lines = [line.get_xdata()[0] for line in fig.axes[0].lines if line.get_linestyle() == "--"]
    np.testing.assert_allclose(sorted(lines), np.percentile(z, [15, 50, 85]))
    title = fig.axes[0].get_title()
    plt.close("all")
    assert title.startswith("noisy BN, step 50")
    assert f"{np.mean(np.abs(z) > chapter['Z_SAT']):.0%} saturated" in title


def test_explorer_covers_every_step_and_network(chapter):
    explorer = chapter["input_explorer"]
    assert explorer.params == {"step": list(KEEP), "kind": list(KINDS)}
    assert explorer.name == "problem-sigmoid-input"

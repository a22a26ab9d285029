"""The explorer of chapter 02 (book/02_algorithm.ipynb): its draw function, taken from the notebook,
draws different frames for different gamma and beta, and its static version has every frame."""

from __future__ import annotations

import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from normlib.explorer import Explorer  # noqa: E402

NOTEBOOK = pathlib.Path(__file__).resolve().parents[2] / "book" / "02_algorithm.ipynb"


def cell_defining(name: str) -> str:
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    found = [s for s in sources if f"def {name}(" in s]
    assert len(found) == 1, f"expected one cell defining {name}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def chapter():
    namespace = {"np": np, "plt": plt, "Explorer": Explorer}
    exec(cell_defining("draw_scale_shift"), namespace)  # noqa: S102 (our own notebook's cell)
    return namespace


def stairs_heights(fig):
    return [p.get_data().values for ax in fig.axes for p in ax.patches if hasattr(p, "get_data")]


def test_frames_differ_with_gamma_and_beta(chapter):
    draw = chapter["draw_scale_shift"]
    base = stairs_heights(draw(1.0, 0.0))
    for gamma, beta in [(4.0, 0.0), (1.0, 3.0)]:
        other = stairs_heights(draw(gamma, beta))
        assert any(not np.allclose(a, b) for a, b in zip(base, other)), (gamma, beta)
    plt.close("all")


def test_title_reports_the_saturated_share(chapter):
    draw = chapter["draw_scale_shift"]
    small = draw(0.25, 0.0).axes[0].get_title()
    large = draw(4.0, 3.0).axes[0].get_title()
    plt.close("all")
    assert "0% saturated" in small
    share = float(large.split(":")[-1].split("%")[0])
    x_hat = chapter["x_hat_demo"]
    assert share == pytest.approx(
        100 * np.mean(np.abs(4.0 * x_hat + 3.0) > chapter["SAT"]), abs=0.5
    )


def test_static_version_has_every_frame(chapter):
    explorer = chapter["scale_shift"]
    assert explorer.name == "algorithm-scale-shift"
    n = len(explorer.params["gamma"]) * len(explorer.params["beta"])
    assert n <= 25
    html = Explorer(
        explorer.draw,
        name="t",
        gamma=explorer.params["gamma"][:2],
        beta=explorer.params["beta"][:2],
    ).static_html()
    assert html.count("data:image/png;base64,") == 4 + 1  # four frames, and the first shown

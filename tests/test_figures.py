"""normlib.figures: the cubes highlight exactly normlib.axes' sets, the flowchart highlights the
path, the explorers' frames depend on their parameters."""

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from normlib.axes import NORMS, stat_mask  # noqa: E402
from normlib.figures import (  # noqa: E402
    HIGHLIGHT,
    batch_noise_figure,
    draw_flowchart,
    draw_norm_cube,
    finetune_figure,
    norm_cube_figure,
    normalized_values,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40, metadata={"Software": None})
    return buf.getvalue()


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("shape, index, groups", [((4, 6, 3), (1, 4, 2), 3), ((3, 4, 5), None, 2)])
def test_cube_highlights_the_stat_mask(norm, shape, index, groups):
    ax = plt.figure().add_subplot(projection="3d")
    mask = draw_norm_cube(ax, norm, shape=shape, index=index, num_groups=groups)
    expected_index = index if index is not None else (shape[0] - 1, 0, shape[2] - 1)
    expected = stat_mask(norm, shape, expected_index, num_groups=groups, normalized_ndim=2)
    np.testing.assert_array_equal(mask, expected)
    assert len(ax.collections) > 0
    assert ax.get_title()


def test_cube_set_sizes():
    n, c, hw = 5, 6, 4
    ax = plt.figure().add_subplot(projection="3d")
    sizes = {
        norm: int(draw_norm_cube(ax, norm, shape=(n, c, hw), num_groups=3).sum()) for norm in NORMS
    }
    assert sizes == {
        "batch_norm": n * hw,  # one channel, every sample and position
        "instance_norm": hw,
        "group_norm": (c // 3) * hw,
        "layer_norm": c * hw,
        "rms_norm": c * hw,
    }


def test_cube_highlight_colour_is_on_the_highlighted_cells_only():
    ax = plt.figure().add_subplot(projection="3d")
    draw_norm_cube(ax, "instance_norm", shape=(3, 3, 2), color="#ff0000")
    faces = np.concatenate([coll.get_facecolor() for coll in ax.collections])
    # voxels are shaded (each face darkened by its angle to the light): pure red stays pure red
    red = (faces[:, 0] > 0.2) & (faces[:, 1] < 0.05) & (faces[:, 2] < 0.05)
    assert 0 < red.sum() < len(faces)


def test_norm_cube_figure_one_panel_per_norm():
    fig, masks = norm_cube_figure(
        ("batch_norm", "group_norm"),
        shape=(3, 4, 2),
        num_groups=2,
        notes={"group_norm": "two groups"},
    )
    assert list(masks) == ["batch_norm", "group_norm"]
    assert len(fig.axes) == 2
    assert fig.axes[1].get_title() == "Group Norm (G=2)"
    assert any(t.get_text() == "two groups" for t in fig.axes[1].texts)


NODES = {
    "q": (0.5, 0.8, "question?", "question"),
    "a": (0.25, 0.2, "A", "answer"),
    "b": (0.75, 0.2, "B", "answer"),
}
EDGES = [("q", "a", "yes"), ("q", "b", "no")]


def test_flowchart_highlights_the_path():
    fig, ax = plt.subplots()
    boxes = draw_flowchart(ax, NODES, EDGES, highlight=("q", "b"))
    assert set(boxes) == set(NODES)
    lit = to_rgba(HIGHLIGHT)
    assert np.allclose(boxes["b"].get_edgecolor(), lit)
    assert np.allclose(boxes["q"].get_edgecolor(), lit)
    assert not np.allclose(boxes["a"].get_edgecolor(), lit)
    arrows = [p for p in ax.patches if p not in boxes.values()]
    assert len(arrows) == len(EDGES)
    colours = {tuple(np.round(a.get_edgecolor(), 3)) for a in arrows}
    assert len(colours) == 2  # one lit arrow (q -> b), one not
    _png(fig)  # draws without error (arrows clipped at the boxes)


def test_flowchart_frames_differ_with_the_path():
    frames = []
    for path in (("q", "a"), ("q", "b")):
        fig, ax = plt.subplots(figsize=(3, 2))
        draw_flowchart(ax, NODES, EDGES, highlight=path)
        frames.append(_png(fig))
    assert frames[0] != frames[1]


@pytest.fixture(scope="module")
def features():
    return np.random.default_rng(0).normal(1.0, 2.0, size=(40, 4, 3, 3))


def test_normalized_values_batch_norm_depends_on_the_batch(features):
    v2 = normalized_values(features, "batch_norm", 2, index=(1, 0, 2), draws=100)
    v16 = normalized_values(features, "batch_norm", 16, index=(1, 0, 2), draws=100)
    assert v2.shape == (100,)
    assert v2.std() > v16.std() > 0  # fewer companions: a noisier normalization


@pytest.mark.parametrize("norm", ["group_norm", "layer_norm"])
def test_normalized_values_per_sample_norms_ignore_the_batch(features, norm):
    v = normalized_values(features, norm, 4, index=(1, 0, 2), draws=30)
    assert np.ptp(v) < 1e-12


def test_normalized_values_rejects_unknown_norm(features):
    with pytest.raises(ValueError, match="expected batch_norm"):
        normalized_values(features, "instance_norm", 2, draws=2)


def test_batch_noise_frames_differ(features):
    a = batch_noise_figure(features, "batch_norm", 2, draws=50)
    b = batch_noise_figure(features, "batch_norm", 16, draws=50)
    c = batch_noise_figure(features, "group_norm", 2, draws=50)
    assert "batch size 2" in a.axes[0].get_title() and "Group Norm" in c.axes[0].get_title()
    assert len({_png(a), _png(b), _png(c)}) == 3


def _fake_runs():
    runs = {}
    for b in (2, 8):
        for mode, acc in (("train mode", 0.4), ("eval mode", 0.8)):
            runs[b, mode] = {
                "step": [10, 20, 30],
                "accuracy": [0.2, acc - 0.1, acc + b / 100],
                "running_mean": [0.1, 0.3 if mode == "train mode" else 0.0, 0.2],
                "pretrained_mean": 0.0,
            }
    return runs


def test_finetune_figure_bold_run_and_frames_differ():
    runs = _fake_runs()
    fig = finetune_figure(runs, 2, "eval mode")
    ax_acc, ax_mean = fig.axes
    widths = {line.get_label(): line.get_linewidth() for line in ax_acc.lines}
    assert widths["eval mode"] > widths["train mode"]
    assert "batch 2" in ax_acc.get_title() and "82%" in ax_acc.get_title()
    assert len(ax_mean.lines) == 3  # two runs and the pretrained value
    frames = {
        _png(finetune_figure(runs, b, m)) for b in (2, 8) for m in ("train mode", "eval mode")
    }
    assert len(frames) == 4


def test_finetune_figure_unknown_run():
    with pytest.raises(KeyError, match="no run for batch_size=4"):
        finetune_figure(_fake_runs(), 4, "eval mode")

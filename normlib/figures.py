"""Figures the book draws more than once.

- :func:`draw_norm_cube`: the (N, C, H·W) tensor as a cube of cells with the cells that share
  statistics with one element highlighted (the style of Wu & He 2018, Figure 2). The highlighted set
  comes from :func:`normlib.axes.stat_mask`, the same definition the code normalizes with.
- :func:`norm_cube_figure`: one such cube per norm, side by side.
- :func:`draw_flowchart`: boxes and arrows, with one path through them highlighted (the "which
  normalization should I use?" figure).
- :func:`normalized_values` / :func:`batch_noise_figure`: what one activation is normalized to in
  random batches (the explorer of the chapter on variants).
- :func:`finetune_figure`: fine-tuning runs with BatchNorm in train or eval mode (the explorer of
  the chapter on implementation details).

Each function returns what it drew (masks, boxes, figures), so tests can check it without pixels.
"""

from __future__ import annotations

import numpy as np

from .axes import stat_mask

TITLES = {
    "batch_norm": "Batch Norm",
    "layer_norm": "Layer Norm",
    "instance_norm": "Instance Norm",
    "group_norm": "Group Norm",
    "rms_norm": "RMS Norm",
}
HIGHLIGHT = "#1f77b4"  # the cells that share one mean and variance
BACKGROUND = "#d9d9d9"  # every other cell


def draw_norm_cube(
    ax,
    norm: str,
    *,
    shape: tuple[int, int, int] = (6, 6, 5),
    index: tuple[int, int, int] | None = None,
    num_groups: int = 2,
    color: str = HIGHLIGHT,
    title: str | None = None,
):
    """Draw the ``(N, C, H·W)`` tensor on the 3-D axes ``ax`` with the cells that share statistics
    with the element at ``index`` highlighted; returns that boolean mask, shape ``shape``.

    ``norm`` is a name of :data:`normlib.axes.NORMS`. LayerNorm and RMSNorm normalize over
    ``(C, H·W)`` here (``normalized_shape = (C, H, W)``, as in Wu & He's figure); ``num_groups`` is
    GroupNorm's G.
    The default ``index`` is the corner cell nearest the viewer, so every highlighted set shows.
    """
    n, c, hw = shape
    if index is None:
        index = (n - 1, 0, hw - 1)  # on the three faces the default view shows
    mask = stat_mask(norm, shape, index, num_groups=num_groups, normalized_ndim=2)

    from matplotlib.colors import to_rgba

    colors = np.empty(shape + (4,))
    colors[mask] = to_rgba(color, 0.95)
    colors[~mask] = to_rgba(BACKGROUND, 0.35)
    # Two voxel sets, so the highlighted cells get their own faces even where they touch grey cells.
    ax.voxels(~mask, facecolors=colors, edgecolor=(0.5, 0.5, 0.5, 0.4), linewidth=0.3)
    ax.voxels(mask, facecolors=colors, edgecolor=(0.1, 0.1, 0.1, 0.6), linewidth=0.4)
    _style_cube_axes(ax, shape)
    ax.set_title(TITLES.get(norm, norm) if title is None else title, fontsize=11)
    return mask


def _style_cube_axes(ax, shape):
    n, c, hw = shape
    ax.set_box_aspect((n, c, hw), zoom=0.9)
    ax.set_facecolor("none")  # neighbouring panels must not hide this one's axis labels
    ax.view_init(elev=22, azim=-58)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_zticks([])
    ax.set_xlabel("N", labelpad=-12)
    ax.set_ylabel("C", labelpad=-12)
    ax.set_zlabel("H·W", labelpad=-13)
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.pane.set_visible(False)
        axis.line.set_color((0.4, 0.4, 0.4))
    ax.grid(False)


def norm_cube_figure(
    norms=("batch_norm", "layer_norm", "instance_norm", "group_norm", "rms_norm"),
    *,
    shape: tuple[int, int, int] = (6, 6, 5),
    num_groups: int = 2,
    notes: dict[str, str] | None = None,
    figsize=None,
):
    """A figure with one :func:`draw_norm_cube` per norm; returns ``(fig, masks)``.

    ``notes`` puts a line of text under a panel (e.g. ``{"rms_norm": "no mean subtracted"}``).
    """
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=figsize or (2.4 * len(norms), 2.9))
    masks = {}
    for i, norm in enumerate(norms):
        ax = fig.add_subplot(1, len(norms), i + 1, projection="3d")
        title = f"{TITLES[norm]} (G={num_groups})" if norm == "group_norm" else None
        masks[norm] = draw_norm_cube(ax, norm, shape=shape, num_groups=num_groups, title=title)
        if notes and norm in notes:
            ax.text2D(
                0.5,
                -0.02,
                notes[norm],
                transform=ax.transAxes,
                ha="center",
                va="top",
                fontsize=8,
                color="0.25",
            )
    fig.subplots_adjust(left=0.0, right=0.97, bottom=0.06, top=0.92, wspace=0.05)
    return fig, masks


def draw_flowchart(ax, nodes: dict, edges, *, highlight=(), color: str = HIGHLIGHT):
    """Boxes and arrows on ``ax`` (axes coordinates 0..1); returns ``{name: box patch}``.

    ``nodes``: ``{name: (x, y, text, kind)}`` with ``kind`` ``"question"`` (rounded box) or
    ``"answer"`` (filled box). ``edges``: ``[(src, dst, label), ...]``. ``highlight``: the names of
    the nodes on one path, in order; those boxes and the arrows between consecutive ones take
    ``color``.
    """
    from matplotlib.patches import FancyArrowPatch

    on_path = set(highlight)
    path_edges = set(zip(highlight, highlight[1:]))
    boxes = {}
    for name, (x, y, text, kind) in nodes.items():
        lit = name in on_path
        face = (
            ("#e8f1fa" if kind == "question" else "#f4f4f4")
            if not lit
            else ("#cfe3f6" if kind == "question" else color)
        )
        text_color = "white" if lit and kind == "answer" else "black"
        label = ax.text(
            x,
            y,
            text,
            ha="center",
            va="center",
            fontsize=8.5,
            color=text_color,
            fontweight="bold" if kind == "answer" else "normal",
            transform=ax.transAxes,
            zorder=3,
            bbox=dict(
                boxstyle="round,pad=0.45" if kind == "question" else "square,pad=0.45",
                facecolor=face,
                edgecolor=color if lit else "0.45",
                linewidth=2.2 if lit else 0.8,
            ),
        )
        boxes[name] = label.get_bbox_patch()
        boxes[name].set_gid(name)
    for src, dst, label in edges:
        lit = (src, dst) in path_edges
        (x0, y0), (x1, y1) = nodes[src][:2], nodes[dst][:2]
        arrow = FancyArrowPatch(
            (x0, y0),
            (x1, y1),
            transform=ax.transAxes,
            arrowstyle="-|>",
            mutation_scale=11,
            color=color if lit else "0.55",
            linewidth=2.2 if lit else 0.9,
            # clipped at the boxes' edges; drawn after them (zorder) so their patches are placed
            patchA=boxes[src],
            patchB=boxes[dst],
            shrinkA=1,
            shrinkB=1,
            zorder=3.5,
        )
        ax.add_patch(arrow)
        if label:
            ax.text(
                (x0 + x1) / 2,
                (y0 + y1) / 2,
                label,
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=7.5,
                color=color if lit else "0.3",
                zorder=4,
                bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none"),
            )
    ax.set_axis_off()
    return boxes


def normalized_values(
    x, norm, batch_size, *, sample=0, index=(0, 0, 0), draws=200, seed=0, num_groups=2
):
    """What element ``index = (c, h, w)`` of sample ``sample`` of ``x`` (M, C, H, W) is normalized
    to, in ``draws`` random training batches of ``batch_size`` that contain that sample.

    Batch norm's value depends on the other ``batch_size - 1`` samples drawn with it; the per-sample
    norms give the same value in every batch. Returns a float64 array of shape ``(draws,)``.
    """
    from . import ref

    rng = np.random.default_rng(seed)
    others = np.delete(np.arange(len(x)), sample)
    c, h, w = index
    out = np.empty(draws)
    for i in range(draws):
        batch = x[np.concatenate([[sample], rng.choice(others, batch_size - 1, replace=False)])]
        if norm == "batch_norm":
            y = ref.batch_norm_forward(batch)[0]
        elif norm == "group_norm":
            y = ref.group_norm_forward(batch, num_groups=num_groups)[0]
        elif norm == "layer_norm":
            y = ref.layer_norm_forward(batch, normalized_shape=batch.shape[1:])[0]
        else:
            raise ValueError(f"expected batch_norm, group_norm or layer_norm, got {norm!r}")
        out[i] = y[0, c, h, w]
    return out


def batch_noise_figure(
    x,
    norm,
    batch_size,
    *,
    sample=0,
    index=(0, 0, 0),
    draws=200,
    seed=0,
    num_groups=2,
    xlim=(-3.0, 3.0),
    figsize=(6, 3.5),
):
    """Histogram of :func:`normalized_values`, with batch norm's eval-mode value (statistics of all
    of ``x``, what converged running statistics give) as a dashed line. Returns the figure."""
    import matplotlib.pyplot as plt

    values = normalized_values(
        x,
        norm,
        batch_size,
        sample=sample,
        index=index,
        draws=draws,
        seed=seed,
        num_groups=num_groups,
    )
    c, h, w = index
    xs = np.asarray(x, dtype=np.float64)[:, c]
    eval_value = (xs[sample, h, w] - xs.mean()) / np.sqrt(xs.var() + 1e-5)
    fig, ax = plt.subplots(figsize=figsize)
    bins = np.linspace(*xlim, 61)
    ax.hist(
        np.clip(values, *xlim),
        bins=bins,
        color=HIGHLIGHT,
        alpha=0.85,
        label=f"training mode, {draws} random batches",
    )
    if norm == "batch_norm":
        ax.axvline(
            eval_value,
            color="#d62728",
            ls="--",
            lw=1.5,
            label="eval mode (statistics of the whole data set)",
        )
    ax.set_xlim(*xlim)
    ax.set_ylim(0, draws * 1.05)
    ax.set_xlabel("normalized value of one fixed activation")
    ax.set_ylabel("batches")
    spread = float(values.std())
    ax.set_title(f"{TITLES[norm]}, batch size {batch_size}: spread (std) {spread:.2f}", fontsize=11)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def finetune_figure(results, batch_size, bn_mode, *, figsize=(7.5, 3.2)):
    """Fine-tuning runs side by side: test accuracy (left) and one running mean (right) over the
    steps, for ``batch_size``; the run ``bn_mode`` is drawn bold, the other modes faint.

    ``results[(batch_size, mode)]`` holds ``"step"``, ``"accuracy"``, ``"running_mean"`` (lists of
    equal length) and ``"pretrained_mean"`` (the running mean before fine-tuning).
    """
    import matplotlib.pyplot as plt

    modes = [m for b, m in results if b == batch_size]
    if bn_mode not in modes:
        raise KeyError(f"no run for batch_size={batch_size}, bn_mode={bn_mode!r}")
    fig, (ax_acc, ax_mean) = plt.subplots(1, 2, figsize=figsize)
    colors = dict(zip(sorted(modes), ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")))
    for mode in sorted(modes):
        run = results[batch_size, mode]
        style = dict(
            color=colors[mode],
            lw=2.2 if mode == bn_mode else 1.0,
            alpha=1.0 if mode == bn_mode else 0.45,
        )
        ax_acc.plot(run["step"], run["accuracy"], label=mode, **style)
        ax_mean.plot(run["step"], run["running_mean"], **style)
    ax_mean.axhline(
        results[batch_size, bn_mode]["pretrained_mean"],
        color="0.3",
        ls="--",
        lw=1,
        label="before fine-tuning",
    )
    final = results[batch_size, bn_mode]["accuracy"][-1]
    ax_acc.set_title(f"batch {batch_size}, BN in {bn_mode}: {final:.0%}", fontsize=10)
    ax_acc.set_xlabel("fine-tuning step")
    ax_acc.set_ylabel("test accuracy")
    ax_acc.set_ylim(0, 1)
    ax_acc.legend(fontsize=8, loc="lower right")
    ax_mean.set_title("running_mean of one channel (last BN)", fontsize=10)
    ax_mean.set_xlabel("fine-tuning step")
    ax_mean.legend(fontsize=8)
    fig.tight_layout()
    return fig

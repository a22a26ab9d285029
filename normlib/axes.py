"""Which elements share statistics: the one definition every tier of normlib uses.

A normalization layer computes a mean (and for most, a variance) over a set of elements and
normalizes each element with the statistics of its set. The five norms differ only in that set.
For an input of shape ``(N, C, *spatial)``:

=============  ====================================  ===========================  ================
norm           reduces over                          one statistic per            affine shape
=============  ====================================  ===========================  ================
batch_norm     N and every spatial dim               channel ``c``                ``(C,)``
instance_norm  every spatial dim                     sample ``n``, channel ``c``  ``(C,)``
group_norm     the channels of a group, and spatial  sample ``n``, group ``g``    ``(C,)``
layer_norm     the last ``len(normalized_shape)``    every leading index          normalized_shape
rms_norm       the last ``len(normalized_shape)``    every leading index          normalized_shape
=============  ====================================  ===========================  ================

GroupNorm is the general case of the middle rows: with the input viewed as
``(N, G, C/G, *spatial)`` it reduces over axes ``(2, 3, ...)``; ``G = C`` gives InstanceNorm's sets
and ``G = 1`` gives LayerNorm's sets over ``(C, *spatial)``.
"""

from __future__ import annotations

NORMS = ("batch_norm", "instance_norm", "group_norm", "layer_norm", "rms_norm")

# rms_norm has no mean: it divides by sqrt(mean(x^2) + eps) and has no beta.
CENTERED = {
    "batch_norm": True,
    "instance_norm": True,
    "group_norm": True,
    "layer_norm": True,
    "rms_norm": False,
}


def reduction_axes(norm: str, ndim: int, *, normalized_ndim: int | None = None) -> tuple[int, ...]:
    """Axes of an ``ndim``-dimensional input that ``norm`` reduces over.

    For ``group_norm`` the input is the grouped view ``(N, G, C/G, *spatial)`` (so ``ndim`` counts
    the
    extra axis); for ``layer_norm`` and ``rms_norm`` pass ``normalized_ndim =
    len(normalized_shape)``.

    >>> reduction_axes("batch_norm", 4)
    (0, 2, 3)
    >>> reduction_axes("instance_norm", 4)
    (2, 3)
    >>> reduction_axes("group_norm", 5)
    (2, 3, 4)
    >>> reduction_axes("layer_norm", 3, normalized_ndim=1)
    (2,)
    """
    if norm == "batch_norm":
        if ndim < 2:
            raise ValueError(
                f"batch_norm needs an input of at least 2 dims (N, C, ...), got {ndim}"
            )
        return (0, *range(2, ndim))
    if norm == "instance_norm":
        if ndim < 3:
            raise ValueError(
                f"instance_norm needs an input of at least 3 dims (N, C, L...), got {ndim}"
            )
        return tuple(range(2, ndim))
    if norm == "group_norm":
        if ndim < 3:
            raise ValueError(
                f"group_norm's grouped view (N, G, C/G, ...) has at least 3 dims, got {ndim}"
            )
        return tuple(range(2, ndim))
    if norm in ("layer_norm", "rms_norm"):
        if normalized_ndim is None or not 1 <= normalized_ndim <= ndim:
            raise ValueError(
                f"{norm} needs 1 <= normalized_ndim <= ndim, got {normalized_ndim}, {ndim}"
            )
        return tuple(range(ndim - normalized_ndim, ndim))
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def group_view_shape(shape: tuple[int, ...], num_groups: int) -> tuple[int, ...]:
    """``(N, C, *spatial) -> (N, G, C // G, *spatial)``: the view in which GroupNorm is a plain
    reduction."""
    n, c, *spatial = shape
    if c % num_groups:
        raise ValueError(f"num_channels ({c}) must be divisible by num_groups ({num_groups})")
    return (n, num_groups, c // num_groups, *spatial)


def stat_mask(
    norm: str,
    shape: tuple[int, ...],
    index: tuple[int, ...],
    *,
    num_groups: int = 1,
    normalized_ndim: int = 1,
):
    """Boolean NumPy mask of the elements that share statistics with the element at ``index``.

    The book's "which cells share statistics" figures are drawn from this, i.e. from the same
    definition
    the code uses. ``shape`` is the input's ``(N, C, *spatial)`` shape (for group_norm too).
    """

    if norm == "group_norm":
        view = group_view_shape(tuple(shape), num_groups)
        n, c, *rest = index
        grouped_index = (n, c // view[2], c % view[2], *rest)
        return _mask_in(norm, view, grouped_index, normalized_ndim).reshape(shape)
    return _mask_in(norm, tuple(shape), tuple(index), normalized_ndim)


def _mask_in(norm, shape, index, normalized_ndim):
    import numpy as np

    axes = reduction_axes(norm, len(shape), normalized_ndim=normalized_ndim)
    mask = np.ones(shape, dtype=bool)
    for ax in range(len(shape)):
        if ax in axes:
            continue  # every index along a reduced axis shares the statistics
        keep = np.arange(shape[ax]) == index[ax]
        mask &= keep.reshape([-1 if a == ax else 1 for a in range(len(shape))])
    return mask

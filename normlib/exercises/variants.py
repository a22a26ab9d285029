"""Auto-checks for the exercises of the chapter "Variants" (book/07_variants.ipynb).

Every expected answer is computed here from :mod:`normlib.ref` and :mod:`normlib.axes`, never
typed in.
"""

from __future__ import annotations

import numpy as np

from .. import ref
from ..axes import NORMS, group_view_shape, reduction_axes
from ._check import Case, Result, run_cases


def _rng(seed):
    return np.random.default_rng(seed)


# -------------------------------------------------------------------------------------------------
# Exercise: GroupNorm from scratch


def _group_norm(x, num_groups, eps=1e-5):
    return ref.group_norm_forward(x, None, None, num_groups=num_groups, eps=eps)[0]


def _gn_interleaved(x, num_groups, eps=1e-5):
    """The mistake: channel c in group c % G (a reshape to (N, C/G, G, ...))."""
    n, c, *spatial = x.shape
    v = x.reshape(n, c // num_groups, num_groups, *spatial).swapaxes(1, 2)
    axes = tuple(range(2, v.ndim))
    y = (v - v.mean(axis=axes, keepdims=True)) / np.sqrt(v.var(axis=axes, keepdims=True) + eps)
    return y.swapaxes(1, 2).reshape(x.shape)


def _gn_unbiased(x, num_groups, eps=1e-5):
    v = x.reshape(group_view_shape(x.shape, num_groups))
    axes = tuple(range(2, v.ndim))
    y = (v - v.mean(axis=axes, keepdims=True)) / np.sqrt(
        v.var(axis=axes, keepdims=True, ddof=1) + eps
    )
    return y.reshape(x.shape)


def _gn_eps_outside(x, num_groups, eps=1e-5):
    v = x.reshape(group_view_shape(x.shape, num_groups))
    axes = tuple(range(2, v.ndim))
    y = (v - v.mean(axis=axes, keepdims=True)) / (np.sqrt(v.var(axis=axes, keepdims=True)) + eps)
    return y.reshape(x.shape)


def _gn_with_batch(x, num_groups, eps=1e-5):
    """The mistake: the batch axis reduced too (a "group batch norm")."""
    v = x.reshape(group_view_shape(x.shape, num_groups))
    axes = (0, *range(2, v.ndim))
    y = (v - v.mean(axis=axes, keepdims=True)) / np.sqrt(v.var(axis=axes, keepdims=True) + eps)
    return y.reshape(x.shape)


def check_group_norm(fn) -> Result:
    """``fn(x, num_groups, eps=1e-5) -> y``: GroupNorm without affine, ``x`` (N, C, *spatial)."""
    rng = _rng(7)
    xs = {
        "(2, 4, 3, 3), G=2": (rng.normal(1.0, 2.0, (2, 4, 3, 3)), 2),
        "G=1 (normalizes like LayerNorm)": (rng.normal(size=(3, 6, 2, 2)), 1),
        "G=C (InstanceNorm)": (rng.normal(size=(2, 6, 4, 4)), 6),
        "1-D input (N, C, L), G=3": (rng.normal(size=(2, 6, 5)), 3),
        "small variance (eps matters)": (rng.normal(scale=2e-3, size=(2, 4, 3, 3)), 2),
        "batch of one": (rng.normal(size=(1, 8, 2, 3)), 4),
    }
    cases = [
        Case(
            name,
            (x, g),
            expected=_group_norm(x, g),
            hint="view x as (N, G, C // G, *spatial) and reduce over every axis from 2 on.",
        )
        for name, (x, g) in xs.items()
    ]
    mistakes = [
        (
            _gn_interleaved,
            "you grouped channels c, c+G, c+2G, ...; a group is C // G CONSECUTIVE "
            "channels: reshape to (N, G, C // G, *spatial), not (N, C // G, G, ...).",
        ),
        (_gn_unbiased, "normalization uses the biased variance (divide by the count, ddof=0)."),
        (_gn_eps_outside, "eps goes inside the square root: (x - mean) / sqrt(var + eps)."),
        (
            _gn_with_batch,
            "GroupNorm's statistics are per sample: do not reduce over the batch axis 0.",
        ),
    ]
    return run_cases(fn, cases, what="group_norm", mistakes=mistakes)


# -------------------------------------------------------------------------------------------------
# Exercise: RMSNorm from scratch


def _rms_norm(x, weight, eps=1e-6):
    return ref.rms_norm_forward(x, weight, eps=eps)[0]


def _rms_centered(x, weight, eps=1e-6):
    return ref.layer_norm_forward(x, weight, None, eps=eps)[0]


def _rms_eps_outside(x, weight, eps=1e-6):
    return weight * x / (np.sqrt((x * x).mean(-1, keepdims=True)) + eps)


def _rms_no_eps(x, weight, eps=1e-6):
    return weight * x / np.sqrt((x * x).mean(-1, keepdims=True))


def _rms_no_weight(x, weight, eps=1e-6):
    return ref.rms_norm_forward(x, None, normalized_shape=x.shape[-1:], eps=eps)[0]


def check_rms_norm(fn) -> Result:
    """``fn(x, weight, eps=1e-6) -> y``: RMSNorm over the last dim, ``weight`` of shape (D,)."""
    rng = _rng(11)
    data = {
        "(4, 8)": rng.normal(size=(4, 8)),
        "(2, 3, 16), tokens": rng.normal(size=(2, 3, 16)),
        "mean far from zero": rng.normal(3.0, 0.5, size=(3, 8)),
        "an all-zero row": np.vstack([np.zeros(8), rng.normal(size=8)]),
        "tiny values (eps matters)": rng.normal(scale=1e-3, size=(2, 8)),
    }
    cases = [
        Case(
            name,
            (x, rng.normal(1.0, 0.3, x.shape[-1])),
            kwargs={"eps": 1e-6},
            hint="y = weight * x / sqrt(mean(x**2, axis=-1, keepdims=True) + eps).",
        )
        for name, x in data.items()
    ]
    for case in cases:
        case.expected = _rms_norm(*case.args, **case.kwargs)
    mistakes = [
        (
            _rms_centered,
            "you subtracted the mean: that is LayerNorm. RMSNorm divides x itself by "
            "the root mean square and never centers.",
        ),
        (_rms_eps_outside, "eps goes inside the square root: sqrt(mean(x**2) + eps)."),
        (
            _rms_no_eps,
            "add eps inside the square root: sqrt(mean(x**2) + eps); it keeps small "
            "inputs from being blown up (and an all-zero row from giving 0 / 0).",
        ),
        (_rms_no_weight, "multiply by weight (the learnable gain, one value per feature)."),
    ]
    return run_cases(fn, cases, what="rms_norm", mistakes=mistakes)


# -------------------------------------------------------------------------------------------------
# Exercise: how many statistics, over how many elements


def count_statistics(norm, shape, num_groups=1):
    """``(number of means computed, elements per mean)`` for ``norm`` on an (N, C, H, W) input.

    LayerNorm and RMSNorm normalize over (C, H, W) here, as in a CNN.
    """
    if norm == "group_norm":
        shape = group_view_shape(tuple(shape), num_groups)
    axes = reduction_axes(norm, len(shape), normalized_ndim=len(shape) - 1)
    per_stat = int(np.prod([shape[a] for a in axes]))
    return int(np.prod(shape)) // per_stat, per_stat


def check_count_statistics(fn) -> Result:
    """``fn(norm, shape, num_groups) -> (number of means, elements per mean)``."""
    scenarios = [
        ("batch_norm", (32, 64, 14, 14), 1),
        ("batch_norm", (2, 64, 1, 1), 1),
        ("instance_norm", (32, 64, 14, 14), 1),
        ("group_norm", (32, 64, 14, 14), 32),
        ("group_norm", (4, 64, 7, 7), 1),
        ("layer_norm", (32, 64, 14, 14), 1),
        ("rms_norm", (8, 16, 4, 4), 1),
    ]
    hints = {
        "batch_norm": "BatchNorm keeps one mean per channel, over N·H·W elements: the batch size "
        "sets how many elements each estimate sees.",
        "instance_norm": "InstanceNorm keeps one mean per (sample, channel), over H·W elements.",
        "group_norm": "GroupNorm keeps one mean per (sample, group), over (C/G)·H·W elements.",
        "layer_norm": "LayerNorm (over C, H, W) keeps one mean per sample, over C·H·W elements.",
        "rms_norm": "RMSNorm reduces over the same elements as LayerNorm (it just skips the mean "
        "subtraction); count its mean squares the same way.",
    }
    cases = [
        Case(
            f"{norm}, shape {shape}" + (f", G={g}" if norm == "group_norm" else ""),
            (norm, shape, g),
            expected=count_statistics(norm, shape, g),
            hint=hints[norm],
        )
        for norm, shape, g in scenarios
    ]
    return run_cases(fn, cases, what="count_statistics")


# -------------------------------------------------------------------------------------------------
# Exercise: which per-sample changes does each norm undo?

TRANSFORMS = ("scale", "shift", "channel_scale", "channel_shift")


def _transform(x, name):
    """Change sample 0 of ``x`` (N, C, H, W): scale or shift it whole, or one channel of it."""
    x = x.copy()
    if name == "scale":
        x[0] *= 3.0
    elif name == "shift":
        x[0] += 2.0
    elif name == "channel_scale":
        x[0, 1] *= 3.0
    elif name == "channel_shift":
        x[0, 1] += 2.0
    else:
        raise ValueError(name)
    return x


def _forward(norm, x):
    eps = 1e-12  # tiny, so "invariant" means equal to ~1e-9, not "equal up to eps"
    if norm == "batch_norm":
        return ref.batch_norm_forward(x, eps=eps)[0]
    if norm == "instance_norm":
        return ref.instance_norm_forward(x, eps=eps)[0]
    if norm == "group_norm":
        return ref.group_norm_forward(x, num_groups=2, eps=eps)[0]
    if norm == "layer_norm":
        return ref.layer_norm_forward(x, normalized_shape=x.shape[1:], eps=eps)[0]
    return ref.rms_norm_forward(x, normalized_shape=x.shape[1:], eps=eps)[0]


def invariances() -> dict[str, set[str]]:
    """``{norm: the changes to one sample that leave that sample's output unchanged}``, measured.

    BatchNorm in training mode; GroupNorm with G=2 of C=4 channels; LayerNorm and RMSNorm over
    (C, H, W).
    """
    x = _rng(3).normal(0.5, 1.0, size=(4, 4, 3, 3))
    out = {}
    for norm in NORMS:
        y = _forward(norm, x)[0]
        out[norm] = {
            t for t in TRANSFORMS if np.allclose(_forward(norm, _transform(x, t))[0], y, atol=1e-8)
        }
    return out


def check_invariances(answer) -> Result:
    """``answer``: ``{norm: set of TRANSFORMS that leave the sample's output unchanged}``."""
    what = "invariances"
    if not isinstance(answer, dict):
        return Result(
            False,
            f"❌ {what}: expected a dict {{norm: set of changes}}, got {type(answer).__name__}.",
        )
    truth = invariances()
    for norm in NORMS:
        if norm not in answer:
            return Result(False, f"❌ {what}: no entry for {norm!r} (use an empty set() for none).")
        got = set(answer[norm])
        unknown = got - set(TRANSFORMS)
        if unknown:
            return Result(
                False,
                f"❌ {what}, {norm}: unknown change(s) {sorted(unknown)}; "
                f"choose from {list(TRANSFORMS)}.",
            )
        for t in TRANSFORMS:
            if (t in got) != (t in truth[norm]):
                verdict = "does not undo" if t in got else "does undo"
                return Result(
                    False,
                    f"❌ {what}, {norm}: it {verdict} '{t}'. Hint: " + _INVARIANCE_HINTS[norm],
                )
    return Result(True, f"✅ {what}: all {len(NORMS) * len(TRANSFORMS)} answers are right.")


_INVARIANCE_HINTS = {
    "batch_norm": "in training mode a change to one sample moves the batch mean and variance, "
    "so that sample's output changes with it: nothing is undone per sample.",
    "instance_norm": "each (sample, channel) has its own mean and variance, so any affine change "
    "of one channel (a > 0) is removed.",
    "group_norm": "a group of channels shares one mean and variance: changing one channel of the "
    "group changes the group's statistics differently from the others.",
    "layer_norm": "one mean and variance per sample: a change of the whole sample is undone, a "
    "change of one channel is not.",
    "rms_norm": "RMSNorm divides by the root mean square and never subtracts a mean: scaling is "
    "undone, a shift is not.",
}

"""Properties that hold for any input (hypothesis): invariances, identities between norms, and the
structure of the gradient."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import normlib.nn as nl
import normlib.nn.functional as F

SETTINGS = settings(max_examples=15, deadline=None)


@st.composite
def inputs(draw, min_dims=3, max_dims=4):
    """A float64 ``(N, C, *spatial)`` tensor with at least 2 values per normalized set."""
    ndim = draw(st.integers(min_dims, max_dims))
    shape = [draw(st.integers(2, 4)), draw(st.integers(1, 4))]
    shape += [draw(st.integers(2, 4)) for _ in range(ndim - 2)]
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64)


def _norms(x):
    """The centered norms in train mode, without affine, each a function of the input."""
    c = x.shape[1]
    return {
        "batch": lambda t: F.batch_norm(t, None, None, training=True, eps=1e-12),
        "instance": lambda t: F.instance_norm(t, eps=1e-12),
        "group": lambda t: F.group_norm(t, 1, eps=1e-12),
        "layer": lambda t: F.layer_norm(t, t.shape[1:], eps=1e-12),
        "group C": lambda t: F.group_norm(t, c, eps=1e-12),
    }


@SETTINGS
@given(x=inputs(), scale=st.floats(0.1, 100), shift=st.floats(-100, 100))
def test_shift_and_scale_invariance(x, scale, shift):
    """norm(a x + b) = norm(x) for a > 0: the statistics absorb any affine change of the input."""
    for name, norm in _norms(x).items():
        torch.testing.assert_close(norm(scale * x + shift), norm(x), atol=1e-6, rtol=1e-6, msg=name)
    rms = nl.RMSNorm(x.shape[-1], eps=1e-12).double()
    torch.testing.assert_close(rms(scale * x), rms(x), atol=1e-8, rtol=1e-8)


@SETTINGS
@given(x=inputs())
def test_group_norm_with_c_groups_is_instance_norm(x):
    c = x.shape[1]
    gn = nl.GroupNorm(c, c).double()
    inorm = nl.InstanceNorm2d(c, affine=True).double() if x.dim() == 4 else None
    expected = F.instance_norm(x) if inorm is None else inorm(x)
    torch.testing.assert_close(gn(x), expected, atol=1e-10, rtol=1e-10)


@SETTINGS
@given(x=inputs())
def test_group_norm_with_one_group_normalizes_like_layer_norm(x):
    """GroupNorm(1, C) = LayerNorm over (C, *spatial), up to GroupNorm's per-channel affine."""
    c = x.shape[1]
    gn = nl.GroupNorm(1, c).double()
    with torch.no_grad():
        gn.weight.copy_(torch.linspace(0.5, 2, c))
        gn.bias.copy_(torch.linspace(-1, 1, c))
    ln = nl.LayerNorm(x.shape[1:], elementwise_affine=False).double()
    view = (1, c) + (1,) * (x.dim() - 2)
    torch.testing.assert_close(gn(x), ln(x) * gn.weight.view(view) + gn.bias.view(view))


@SETTINGS
@given(x=inputs(), seed=st.integers(0, 2**16))
def test_input_gradients_sum_to_zero_over_each_set(x, seed):
    """d/dx of a centered norm has zero sum over each normalized set (the mean's path), whatever
    the output gradient and the affine parameters."""
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    c = x.shape[1]
    spatial = tuple(range(2, x.dim()))
    cases = [
        (nl.BatchNorm2d(c) if x.dim() == 4 else nl.BatchNorm1d(c), (0, *spatial)),
        (
            nl.InstanceNorm2d(c, affine=True)
            if x.dim() == 4
            else nl.InstanceNorm1d(c, affine=True),
            spatial,
        ),
        (nl.GroupNorm(1, c), tuple(range(1, x.dim()))),
        (nl.LayerNorm(x.shape[-1]), (x.dim() - 1,)),
    ]
    for module, dims in cases:
        module = module.double()
        for p in module.parameters():
            with torch.no_grad():
                p.uniform_(0.5, 1.5)
        xg = x.clone().requires_grad_()
        (dx,) = torch.autograd.grad(module(xg), xg, dy)
        torch.testing.assert_close(dx.sum(dims), torch.zeros_like(dx.sum(dims)), atol=1e-9, rtol=0)


@SETTINGS
@given(x=inputs(min_dims=2, max_dims=4))
def test_batch_norm_output_has_zero_mean_unit_variance(x):
    """Train-mode BN without affine: every channel of the output has mean 0 and variance 1."""
    y = F.batch_norm(x, None, None, training=True, eps=1e-12)
    dims = (0, *range(2, x.dim()))
    torch.testing.assert_close(
        y.mean(dims), torch.zeros(x.shape[1], dtype=x.dtype), atol=1e-9, rtol=0
    )
    torch.testing.assert_close(
        y.var(dims, correction=0), torch.ones(x.shape[1], dtype=x.dtype), atol=1e-6, rtol=0
    )

"""The NumPy reference against torch (float64, 1e-10): forward and backward through autograd."""

from __future__ import annotations

import numpy as np
import torch

TOL = dict(atol=1e-10, rtol=1e-10)


def arrays(shape, param_shape, seed=0):
    """``(x, dy, gamma, beta)`` float64 NumPy arrays, deterministic, with a non-zero mean."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.7, 2.0, size=shape)
    dy = rng.normal(size=shape)
    gamma = rng.uniform(0.5, 1.5, size=param_shape)
    beta = rng.uniform(-0.5, 0.5, size=param_shape)
    return x, dy, gamma, beta


def torch_forward_backward(fn, x, dy, *params):
    """``(y, dx, *dparams)`` of ``fn(x, *params)`` by torch in float64 (None stays None)."""
    xt = torch.tensor(x, requires_grad=True)
    pt = [None if p is None else torch.tensor(p, requires_grad=True) for p in params]
    y = fn(xt, *pt)
    wrt = [xt] + [p for p in pt if p is not None]
    grads = iter(torch.autograd.grad(y, wrt, torch.tensor(dy)))
    dx = next(grads)
    dparams = [None if p is None else next(grads) for p in pt]
    return y.detach().numpy(), dx.numpy(), *[None if g is None else g.numpy() for g in dparams]


def assert_close(actual, expected):
    if expected is None:
        assert actual is None
        return
    np.testing.assert_allclose(actual, expected, **TOL)

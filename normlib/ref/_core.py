"""The shared core of every norm: normalize over some axes, then scale and shift.

    mean = E[x]                      (over the reduction axes; skipped by RMSNorm)
    var  = E[(x - mean)^2]           (biased; two passes, never E[x^2] - E[x]^2)
    rstd = 1 / sqrt(var + eps)
    x_hat = (x - mean) * rstd
    y = gamma * x_hat + beta

Everything runs in float64 whatever the input dtype (NumPy's float32 ``mean`` over a long axis
can be off by percent), and outputs come back in the input's dtype. Which axes each norm reduces
over is decided in :mod:`normlib.axes`, not here.
"""

from __future__ import annotations

import numpy as np


def normalize_forward(x, axes, eps, *, center=True):
    """``x_hat`` of ``x`` over ``axes``; returns ``(x_hat, stats)`` in float64.

    ``stats`` holds ``mean`` (zeros if ``center`` is False), ``var`` (biased; for RMSNorm the mean
    square), ``rstd`` and ``count`` (elements per set), each shaped like ``x`` with ``axes`` kept
    as 1.
    """
    x = np.asarray(x, dtype=np.float64)
    count = int(np.prod([x.shape[a] for a in axes]))
    if center:
        mean = x.mean(axis=axes, keepdims=True)  # one value per set
    else:
        mean = np.zeros([1 if a in axes else s for a, s in enumerate(x.shape)])
    xc = x - mean  # same shape as x
    var = (xc * xc).mean(axis=axes, keepdims=True)  # biased: divides by count, not count - 1
    rstd = 1.0 / np.sqrt(var + eps)
    x_hat = xc * rstd
    return x_hat, {"mean": mean, "var": var, "rstd": rstd, "count": count}


def normalize_backward(dx_hat, x_hat, rstd, axes, *, center=True):
    """Gradient through ``x_hat = (x - mean) * rstd`` (the compact formula).

        dx = rstd * (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat))

    The ``mean(dx_hat)`` term comes from the path through ``mean`` (RMSNorm has none: no term).
    The ``x_hat * mean(dx_hat * x_hat)`` term comes from the path through ``var``.
    """
    proj = (dx_hat * x_hat).mean(axis=axes, keepdims=True)
    dx = dx_hat - x_hat * proj
    if center:
        dx = dx - dx_hat.mean(axis=axes, keepdims=True)
    return rstd * dx


def affine_forward(x_hat, gamma, beta, shape):
    """``y = gamma * x_hat + beta``, ``gamma``/``beta`` (either may be None) viewed as ``shape``."""
    y = x_hat
    if gamma is not None:
        y = y * np.asarray(gamma, dtype=np.float64).reshape(shape)
    if beta is not None:
        y = y + np.asarray(beta, dtype=np.float64).reshape(shape)
    return y


def affine_backward(dy, x_hat, gamma, view, param_shape, has_beta):
    """``(dx_hat, dgamma, dbeta)`` of the affine step.

    ``view`` is the broadcast shape of gamma/beta (see :func:`channel_shape`);
    ``dgamma``/``dbeta`` sum over the axes where ``view`` is 1 and come back in ``param_shape``
    (None where absent).
    """
    dy = np.asarray(dy, dtype=np.float64)
    sum_axes = tuple(a for a, s in enumerate(view) if s == 1)  # the axes gamma is broadcast along
    dgamma = dbeta = None
    dx_hat = dy
    if gamma is not None:
        dgamma = (dy * x_hat).sum(axis=sum_axes).reshape(param_shape)
        dx_hat = dy * np.asarray(gamma, dtype=np.float64).reshape(view)
    if has_beta:
        dbeta = dy.sum(axis=sum_axes).reshape(param_shape)
    return dx_hat, dgamma, dbeta


def channel_shape(ndim, channels):
    """``(1, C, 1, ...)``: broadcasts a per-channel ``(C,)`` vector over ``(N, C, *spatial)``."""
    return (1, channels) + (1,) * (ndim - 2)


def trailing_shape(ndim, normalized_shape):
    """``(1, ..., *normalized_shape)``: broadcasts over the last dims of an ``ndim`` input."""
    return (1,) * (ndim - len(normalized_shape)) + tuple(normalized_shape)


def norm_forward(x, gamma, beta, eps, *, axes, view, param_shape, center=True):
    """Normalize ``x`` over ``axes``, then scale and shift. Returns ``(y, cache)``.

    The five norms are this function with different ``axes`` (from :mod:`normlib.axes`) and a
    different broadcast ``view`` of ``gamma``/``beta``, whose own shape is ``param_shape``.
    """
    x = np.asarray(x)
    x_hat, stats = normalize_forward(x, axes, eps, center=center)  # like x, float64
    y = affine_forward(x_hat, gamma, beta, view)  # like x, float64
    cache = {
        "x_hat": x_hat,
        "rstd": stats["rstd"],
        "mean": stats["mean"],
        "var": stats["var"],
        "count": stats["count"],
        "gamma": gamma,
        "has_beta": beta is not None,
        "axes": axes,
        "view": view,
        "param_shape": tuple(param_shape),
        "center": center,
        "dtype": x.dtype,
    }
    return as_output(y, x), cache


def norm_backward(dy, cache):
    """``(dx, dgamma, dbeta)`` for :func:`norm_forward`: through the affine step, then the compact
    formula of :func:`normalize_backward`."""
    dx_hat, dgamma, dbeta = affine_backward(
        dy, cache["x_hat"], cache["gamma"], cache["view"], cache["param_shape"], cache["has_beta"]
    )
    dx = normalize_backward(
        dx_hat, cache["x_hat"], cache["rstd"], cache["axes"], center=cache["center"]
    )
    return as_output(dx, np.empty(0, cache["dtype"])), dgamma, dbeta


def as_output(y, like):
    """Return ``y`` in the dtype of ``like`` (float64 stays float64)."""
    dtype = np.asarray(like).dtype
    return y.astype(dtype if np.issubdtype(dtype, np.floating) else np.float64, copy=False)

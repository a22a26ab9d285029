"""normlib.ref BatchNorm (train forward/backward, inference, running-stats update) against torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from normlib import ref

from ._helpers import arrays, assert_close, torch_forward_backward

SHAPES = [(2, 3), (7, 1), (2, 5, 3), (3, 2, 5, 7), (1, 3, 2, 1), (2, 3, 1, 2, 5), (13, 2, 1)]


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_train_forward_backward(shape, affine):
    x, dy, gamma, beta = arrays(shape, (shape[1],))
    if not affine:
        gamma = beta = None
    y, cache = ref.batch_norm_forward(x, gamma, beta, eps=1e-5)
    dx, dgamma, dbeta = ref.batch_norm_backward(dy, cache)

    def fn(t, w, b):
        return torch.nn.functional.batch_norm(t, None, None, w, b, training=True, eps=1e-5)

    expected = torch_forward_backward(fn, x, dy, gamma, beta)
    for a, e in zip((y, dx, dgamma, dbeta), expected):
        assert_close(a, e)
    axes = (0, *range(2, len(shape)))
    assert_close(cache["mean"], x.mean(axis=axes))
    assert_close(cache["var"], x.var(axis=axes))
    assert cache["count"] == x.size // shape[1]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_inference(shape):
    x, _, gamma, beta = arrays(shape, (shape[1],))
    rng = np.random.default_rng(1)
    mean, var = rng.normal(size=shape[1]), rng.uniform(0.5, 2, size=shape[1])
    y = ref.batch_norm_inference(x, mean, var, gamma, beta, eps=1e-3)
    expected = torch.nn.functional.batch_norm(
        *(torch.tensor(a) for a in (x, mean, var, gamma, beta)), training=False, eps=1e-3
    )
    assert_close(y, expected.numpy())


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_update_running_stats(momentum):
    """The reference update is torch's: momentum weighs the new batch, var unbiased."""
    x, *_ = arrays((6, 3, 2), (3,))
    rm, rv = np.zeros(3), np.ones(3)
    rm_t, rv_t = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    _, cache = ref.batch_norm_forward(x)
    rm, rv = ref.update_running_stats(
        rm,
        rv,
        cache["mean"],
        cache["var"],
        cache["count"],
        momentum,
        num_batches_tracked=1 if momentum is None else None,
    )
    torch.nn.functional.batch_norm(
        torch.tensor(x), rm_t, rv_t, training=True, momentum=1.0 if momentum is None else momentum
    )
    assert_close(rm, rm_t.numpy())
    assert_close(rv, rv_t.numpy())


def test_float32_input_is_accumulated_in_float64():
    x = (np.random.default_rng(0).normal(size=(64, 2, 32)) + 1e4).astype(np.float32)
    y, cache = ref.batch_norm_forward(x)
    assert y.dtype == np.float32
    expected = torch.nn.functional.batch_norm(
        torch.tensor(x, dtype=torch.float64), None, None, training=True
    )
    np.testing.assert_allclose(y, expected.numpy(), atol=1e-5)

"""normlib.ref InstanceNorm against torch (float64, 1e-10)."""

from __future__ import annotations

import pytest
import torch

from normlib import ref

from ._helpers import arrays, assert_close, torch_forward_backward

SHAPES = [(2, 3, 5), (1, 4, 3, 7), (3, 1, 2), (2, 3, 2, 1, 3)]


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_backward(shape, affine):
    x, dy, gamma, beta = arrays(shape, (shape[1],))
    if not affine:
        gamma = beta = None
    y, cache = ref.instance_norm_forward(x, gamma, beta, eps=1e-5)
    grads = ref.instance_norm_backward(dy, cache)

    def fn(t, w, b):
        return torch.nn.functional.instance_norm(t, weight=w, bias=b, eps=1e-5)

    for a, e in zip((y, *grads), torch_forward_backward(fn, x, dy, gamma, beta)):
        assert_close(a, e)
    assert cache["mean"].shape == shape[:2]

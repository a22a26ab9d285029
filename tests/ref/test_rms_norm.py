"""normlib.ref RMSNorm against torch (float64, 1e-10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from normlib import ref

from ._helpers import arrays, assert_close, torch_forward_backward

CASES = [((4, 7), (7,)), ((2, 3, 5), (3, 5)), ((13,), (13,)), ((3, 1), (1,))]


@pytest.mark.parametrize("eps", [1e-5, None])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape,normalized_shape", CASES, ids=str)
def test_forward_backward(shape, normalized_shape, affine, eps):
    x, dy, gamma, _ = arrays(shape, normalized_shape)
    gamma = gamma if affine else None
    y, cache = ref.rms_norm_forward(x, gamma, normalized_shape=normalized_shape, eps=eps)
    dx, dgamma, dbeta = ref.rms_norm_backward(dy, cache)
    assert dbeta is None

    def fn(t, w):
        return torch.nn.functional.rms_norm(t, normalized_shape, w, eps=eps)

    for a, e in zip((y, dx, dgamma), torch_forward_backward(fn, x, dy, gamma)):
        assert_close(a, e)


def test_default_eps_is_machine_epsilon():
    x = np.full((2, 4), 1e-9)
    y, cache = ref.rms_norm_forward(x, normalized_shape=(4,))
    expected = torch.nn.functional.rms_norm(torch.tensor(x), (4,))
    assert_close(y, expected.numpy())

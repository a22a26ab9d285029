"""normlib.ref LayerNorm against torch (float64, 1e-10)."""

from __future__ import annotations

import pytest
import torch

from normlib import ref

from ._helpers import arrays, assert_close, torch_forward_backward

CASES = [((4, 7), (7,)), ((2, 3, 5), (3, 5)), ((13,), (13,)), ((3, 2), (2,)), ((2, 1, 3), (1, 3))]


@pytest.mark.parametrize("affine", ["both", "weight", "none"])
@pytest.mark.parametrize("shape,normalized_shape", CASES, ids=str)
def test_forward_backward(shape, normalized_shape, affine):
    x, dy, gamma, beta = arrays(shape, normalized_shape)
    gamma = None if affine == "none" else gamma
    beta = beta if affine == "both" else None
    y, cache = ref.layer_norm_forward(x, gamma, beta, normalized_shape=normalized_shape, eps=1e-5)
    grads = ref.layer_norm_backward(dy, cache)

    def fn(t, w, b):
        return torch.nn.functional.layer_norm(t, normalized_shape, w, b, eps=1e-5)

    for a, e in zip((y, *grads), torch_forward_backward(fn, x, dy, gamma, beta)):
        assert_close(a, e)


def test_shape_errors():
    x, _, gamma, _ = arrays((2, 3), (3,))
    with pytest.raises(ValueError, match="normalized_shape"):
        ref.layer_norm_forward(x, None, None)
    with pytest.raises(ValueError, match="does not end in"):
        ref.layer_norm_forward(x, None, None, normalized_shape=(4,))

"""normlib.ref GroupNorm against torch (float64, 1e-10)."""

from __future__ import annotations

import pytest
import torch

from normlib import ref

from ._helpers import arrays, assert_close, torch_forward_backward

CASES = [
    (2, (3, 6, 5, 4)),
    (3, (2, 6, 7)),
    (1, (2, 5, 3)),
    (5, (2, 5, 3, 2)),
    (2, (4, 6)),
    (7, (1, 7, 2, 1, 3)),
]


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("groups,shape", CASES, ids=str)
def test_forward_backward(groups, shape, affine):
    x, dy, gamma, beta = arrays(shape, (shape[1],))
    if not affine:
        gamma = beta = None
    y, cache = ref.group_norm_forward(x, gamma, beta, num_groups=groups, eps=1e-5)
    grads = ref.group_norm_backward(dy, cache)

    def fn(t, w, b):
        return torch.nn.functional.group_norm(t, groups, w, b, eps=1e-5)

    for a, e in zip((y, *grads), torch_forward_backward(fn, x, dy, gamma, beta)):
        assert_close(a, e)
    assert cache["mean"].shape == (shape[0], groups)


def test_indivisible_channels():
    x, *_ = arrays((2, 6, 3), (6,))
    with pytest.raises(ValueError, match="divisible"):
        ref.group_norm_forward(x, num_groups=4)

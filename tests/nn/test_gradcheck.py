"""gradcheck and gradgradcheck (float64) of every normlib.nn module, train and eval, with respect to
the input and the parameters; the "torch" backend's backward is differentiable."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck
from torch.func import functional_call

import normlib.nn as nl

from ._helpers import randomize

MODULES = {
    "BatchNorm1d": (lambda: nl.BatchNorm1d(3), (4, 3)),
    "BatchNorm2d": (lambda: nl.BatchNorm2d(2), (3, 2, 2, 3)),
    "BatchNorm3d no affine": (lambda: nl.BatchNorm3d(2, affine=False), (2, 2, 2, 1, 3)),
    "BatchNorm2d untracked": (lambda: nl.BatchNorm2d(2, track_running_stats=False), (2, 2, 3, 1)),
    "SyncBatchNorm": (lambda: nl.SyncBatchNorm(2), (3, 2, 2)),
    "InstanceNorm1d affine": (
        lambda: nl.InstanceNorm1d(3, affine=True, track_running_stats=True),
        (2, 3, 4),
    ),
    "InstanceNorm2d": (lambda: nl.InstanceNorm2d(2), (2, 2, 2, 3)),
    "LayerNorm": (lambda: nl.LayerNorm((2, 3)), (3, 2, 3)),
    "LayerNorm no bias": (lambda: nl.LayerNorm(4, bias=False), (3, 4)),
    "GroupNorm": (lambda: nl.GroupNorm(2, 4), (2, 4, 3)),
    "GroupNorm no affine": (lambda: nl.GroupNorm(3, 3, affine=False), (2, 3, 2, 2)),
    "RMSNorm": (lambda: nl.RMSNorm((2, 3), eps=1e-3), (3, 2, 3)),
}


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("make,shape", MODULES.values(), ids=MODULES.keys())
def test_gradcheck_and_gradgradcheck(make, shape, train):
    module = randomize(make().double()).train(train)
    names = [n for n, _ in module.named_parameters()]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    params = tuple(p.detach().clone().requires_grad_() for p in module.parameters())

    def f(x, *params):
        return functional_call(module, dict(zip(names, params)), (x,))

    assert gradcheck(f, (x, *params))
    assert gradgradcheck(f, (x, *params))


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_gradcheck_channels_last(train):
    module = randomize(nl.BatchNorm2d(2).double()).train(train)
    x = torch.randn(2, 2, 2, 3, dtype=torch.float64).to(memory_format=torch.channels_last)
    x.requires_grad_()
    assert gradcheck(module, (x,))
    assert gradgradcheck(module, (x,))

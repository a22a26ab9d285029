"""normlib.kernels as normlib's "triton" backend: the contract's five ops, and normlib.nn modules
giving the same results, gradients and running statistics as with the "torch" backend."""

from __future__ import annotations

import copy
import inspect
import os
import subprocess
import sys

import pytest
import torch
from conftest import DEVICE, randn

import normlib
import normlib.kernels as kernels
from normlib import backend

OPS = ["batch_norm_train", "batch_norm_eval", "layer_norm", "rms_norm", "group_norm"]


@pytest.mark.parametrize("op", OPS)
def test_contract_signatures_match_the_torch_backend(op):
    torch_backend = backend.get("torch")
    mine = list(inspect.signature(getattr(kernels, op)).parameters)
    theirs = list(inspect.signature(getattr(torch_backend, op)).parameters)
    assert mine == theirs


def test_triton_backend_is_this_package():
    assert "triton" in backend.backends()
    assert backend.get("triton") is kernels
    with normlib.use_backend("triton"):
        assert backend.resolve(torch.device("cpu")) == "triton"


def modules():
    """(name, module factory, input shape, channels_last) for every normlib.nn layer."""
    import normlib.nn as nn  # written alongside the kernels: import when the test runs

    return [
        ("BatchNorm2d", lambda: nn.BatchNorm2d(3), (4, 3, 5, 6), False),
        ("BatchNorm2d-cl", lambda: nn.BatchNorm2d(3), (4, 3, 5, 6), True),
        ("BatchNorm1d", lambda: nn.BatchNorm1d(5), (7, 5), False),
        ("BatchNorm3d", lambda: nn.BatchNorm3d(2, momentum=None), (2, 2, 3, 2, 3), False),
        ("LayerNorm", lambda: nn.LayerNorm((4, 6)), (3, 5, 4, 6), False),
        ("RMSNorm", lambda: nn.RMSNorm(6), (3, 5, 6), False),
        ("GroupNorm", lambda: nn.GroupNorm(2, 6), (3, 6, 4, 5), False),
        ("InstanceNorm2d", lambda: nn.InstanceNorm2d(3, affine=True, track_running_stats=True),
         (2, 3, 5, 4), False),
    ]  # fmt: skip


def run(module, x, dy, name):
    """Output, input gradient, parameter gradients and buffers of one training step (then eval)."""
    with normlib.use_backend(name):
        x = x.detach().clone().requires_grad_(True)
        module.train()
        y = module(x)
        y.backward(dy)
        out = [y, x.grad] + [p.grad for p in module.parameters()]
        out += [b.clone() for b in module.buffers() if b.is_floating_point()]
        module.eval()
        with torch.no_grad():
            out.append(module(x))
    return out


@pytest.mark.parametrize("case", range(8), ids=lambda i: modules()[i][0])
def test_nn_modules_agree_with_the_torch_backend(case):
    _, factory, shape, channels_last = modules()[case]
    torch.manual_seed(0)
    module = factory().to(DEVICE)
    for p in module.parameters():  # non-trivial affine parameters
        torch.nn.init.normal_(p, mean=1.0, std=0.5)
    x = randn(*shape, requires_grad=False)
    dy = randn(*shape, seed=1, scale=1.0, shift=0.0, requires_grad=False)
    if channels_last:
        x, dy = x.to(memory_format=torch.channels_last), dy.to(memory_format=torch.channels_last)
    got = run(copy.deepcopy(module), x, dy, "triton")
    want = run(copy.deepcopy(module), x, dy, "torch")
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
    if channels_last:
        assert got[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the kernels compile for it")
def test_import_turns_on_the_interpreter_without_a_gpu():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = "import os, normlib.kernels; print(os.environ.get('TRITON_INTERPRET'))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"

"""Shared machinery of the normlib.nn parity tests: torch is the oracle.

``make(ns)`` builds a module from a namespace (``torch.nn`` or ``normlib.nn``, same API), so one
lambda describes both modules of a pair.
"""

from __future__ import annotations

import re

import pytest
import torch

import normlib.nn as nl
import normlib.nn.functional as nlF

NAMESPACES = {"torch": (torch.nn, torch.nn.functional), "normlib": (nl, nlF)}

# (outputs, gradients) tolerances per dtype: fp64 1e-10; fp32 1e-5 / 1e-4; half dtypes loose.
TOL = {
    torch.float64: (dict(atol=1e-10, rtol=1e-10), dict(atol=1e-10, rtol=1e-10)),
    torch.float32: (dict(atol=1e-5, rtol=1e-5), dict(atol=1e-4, rtol=1e-4)),
    torch.float16: (dict(atol=2e-3, rtol=2e-3), dict(atol=1e-2, rtol=1e-2)),
    torch.bfloat16: (dict(atol=2e-2, rtol=2e-2), dict(atol=5e-2, rtol=5e-2)),
}


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial parameters and running statistics (deterministic)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            r = torch.rand(p.shape, generator=gen, dtype=torch.float64)
            p.copy_(r + 0.5 if name == "weight" else r - 0.5)
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen, dtype=torch.float64))
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=gen, dtype=torch.float64) + 0.5)
    return module


def make_pair(make, dtype=torch.float64, seed=0):
    """``(torch_module, normlib_module)`` with identical state (loaded torch -> normlib, strict)."""
    reference = randomize(make(torch.nn), seed)
    ours = make(nl)
    if dtype is not None:
        reference, ours = reference.to(dtype), ours.to(dtype)
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def memory_format(t: torch.Tensor) -> str:
    """A name for ``t``'s layout, to compare torch's and ours."""
    if t.is_contiguous():
        return "contiguous"
    for fmt in (torch.channels_last, torch.channels_last_3d):
        if t.dim() == (4 if fmt == torch.channels_last else 5) and t.is_contiguous(
            memory_format=fmt
        ):
            return str(fmt)
    return f"strided{t.stride()}"


def check_step(reference, ours, x, *, grad_dtype=None, seed=0, check_layout=True, dy_layout=None):
    """One forward (and backward when ``x`` is floating) of both modules on the same ``x``; compares
    outputs, layouts, dtypes, input and parameter gradients, and buffers."""
    tol_out, tol_grad = TOL[grad_dtype or x.dtype]
    requires_grad = x.is_floating_point()
    xa = x.detach().requires_grad_(requires_grad)  # same storage and strides for both
    xb = x.detach().requires_grad_(requires_grad)
    ya, yb = reference(xa), ours(xb)
    assert yb.dtype == ya.dtype and yb.shape == ya.shape
    torch.testing.assert_close(yb, ya, equal_nan=True, **tol_out)
    if check_layout:
        assert memory_format(yb) == memory_format(ya)
    for (name, a), (_, b) in zip(reference.named_buffers(), ours.named_buffers()):
        assert b.dtype == a.dtype, name
        torch.testing.assert_close(b, a, equal_nan=True, **tol_out, msg=name)
    if not requires_grad:
        return
    gen = torch.Generator().manual_seed(seed)
    dy = torch.randn(ya.shape, generator=gen, dtype=torch.float64).to(ya.dtype)
    if dy_layout is not None:
        dy = dy_layout(dy)
    params_a = [p for p in reference.parameters() if p.requires_grad]
    params_b = [p for p in ours.parameters() if p.requires_grad]
    ga = torch.autograd.grad(ya, [xa, *params_a], dy, allow_unused=True)
    gb = torch.autograd.grad(yb, [xb, *params_b], dy, allow_unused=True)
    for i, (a, b) in enumerate(zip(ga, gb)):
        if a is None:
            assert b is None or not b.any()
            continue
        assert b.dtype == a.dtype and b.shape == a.shape, i
        torch.testing.assert_close(b, a, equal_nan=True, **tol_grad)
    if check_layout:
        assert memory_format(gb[0]) == memory_format(ga[0])


def run_pair(make, x, *, train=True, steps=2, dtype=torch.float64, **kwargs):
    """``steps`` forward/backward steps of the pair built by ``make``, compared after each."""
    reference, ours = make_pair(make, dtype)
    reference.train(train)
    ours.train(train)
    for step in range(steps):
        check_step(reference, ours, x, seed=step, **kwargs)
    return reference, ours


def outcome(fn):
    """``fn()``'s result, or the exception it raised."""
    try:
        return fn()
    except Exception as exc:  # we compare whatever torch raises
        return exc


def assert_same_error(call):
    """``call(nn, F)`` with torch's namespace and ours: the same exception type and message (checked
    with ``pytest.raises(match=...)``), or both succeed with the same shape and dtype."""
    expected = outcome(lambda: call(*NAMESPACES["torch"]))
    if isinstance(expected, Exception):
        with pytest.raises(type(expected), match=re.escape(str(expected))) as info:
            call(*NAMESPACES["normlib"])
        assert type(info.value) is type(expected)
        return expected
    got = call(*NAMESPACES["normlib"])
    if isinstance(expected, torch.Tensor):
        assert got.shape == expected.shape and got.dtype == expected.dtype
    return None

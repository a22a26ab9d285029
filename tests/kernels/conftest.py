"""Shared set-up of the kernel tests: device, tolerances, and shrunken tile sizes.

On a CPU the kernels run through Triton's interpreter (``make kernels`` sets ``TRITON_INTERPRET=1``;
importing :mod:`normlib.kernels` sets it too when there is no GPU), so sizes stay tiny. The
``small_tiles`` fixture shrinks the launchers' limits so tiny tensors take the code paths that big
ones take on a GPU: rows streamed in several tiles, reductions split across programs.
"""

from __future__ import annotations

import pytest
import torch

from normlib.kernels import _common

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# A real GPU (not the interpreter): the tests add bigger shapes.
ON_GPU = DEVICE == "cuda" and not _common.interpreting()

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]

# (atol, rtol) of outputs and of gradients, against torch in float64 on the same (rounded) inputs.
TOL = {
    torch.float64: ((1e-10, 1e-10), (1e-10, 1e-10)),
    torch.float32: ((1e-5, 1e-5), (1e-4, 1e-4)),
    torch.float16: ((1e-2, 1e-2), (1e-2, 1e-2)),
    torch.bfloat16: ((5e-2, 2e-2), (5e-2, 2e-2)),
}


def tol(dtype, grad=False) -> dict:
    """``assert_close`` keyword arguments for ``dtype``."""
    atol, rtol = TOL[dtype][1 if grad else 0]
    return {"atol": atol, "rtol": rtol}


def randn(*shape, dtype=torch.float32, scale=3.0, shift=2.0, seed=0, requires_grad=True):
    """A seeded ``scale * N(0, 1) + shift`` tensor on DEVICE (off-centre on purpose)."""
    g = torch.Generator().manual_seed(seed)
    t = (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift).to(dtype)
    return t.to(DEVICE).requires_grad_(requires_grad)


def grads(y, dy, *tensors):
    """Gradients of ``(y * dy).sum()`` w.r.t. ``tensors`` (None for a tensor that is None)."""
    present = [t for t in tensors if t is not None]
    got = iter(torch.autograd.grad(y, present, dy))
    return [None if t is None else next(got) for t in tensors]


def as64(*tensors):
    """float64 leaf copies (None stays None) for the reference computation."""
    return [None if t is None else t.detach().double().requires_grad_(True) for t in tensors]


def assert_close(actual, expected, dtype, grad=False):
    if expected is None:
        assert actual is None
        return
    assert actual.dtype == dtype, (actual.dtype, dtype)
    torch.testing.assert_close(actual.double(), expected.double(), **tol(dtype, grad))


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles and register-resident rows of 64 values: tiny tensors take the multi-tile loops."""
    monkeypatch.setattr(_common.LIMITS, "tile", 64)
    monkeypatch.setattr(_common.LIMITS, "row_elems", 64)
    monkeypatch.setattr(_common.LIMITS, "row_elems_bwd", 64)
    return _common.LIMITS


@pytest.fixture
def split_programs(monkeypatch):
    """Ask for many programs: reductions split each channel across programs, then merge."""
    monkeypatch.setattr(_common.LIMITS, "interpreter_programs", 8)
    monkeypatch.setattr(_common.LIMITS, "programs_per_sm", 64)
    return _common.LIMITS


@pytest.fixture
def fused_programs(monkeypatch):
    """Ask for one program: every channel is reduced (and normalized) by a single program."""
    monkeypatch.setattr(_common.LIMITS, "interpreter_programs", 1)
    monkeypatch.setattr(_common.LIMITS, "programs_per_sm", 0)
    return _common.LIMITS

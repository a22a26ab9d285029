"""normlib.nn.functional against torch.nn.functional: direct calls, running tensors, and the dtype
rules (which input/parameter dtype combinations run, which raise, with which message)."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch

from ._helpers import NAMESPACES, TOL, assert_same_error

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64]
PARAM_DTYPES = [None, torch.float16, torch.bfloat16, torch.float32, torch.float64]


def _params(dtype, n):
    if dtype is None:
        return None, None
    return torch.linspace(0.5, 1.5, n).to(dtype), torch.linspace(-0.5, 0.5, n).to(dtype)


CALLS = {
    "batch_norm train": lambda F, x, w, b: F.batch_norm(
        x,
        None if w is None else torch.zeros(3, dtype=w.dtype),
        None if w is None else torch.ones(3, dtype=w.dtype),
        w,
        b,
        training=True,
    ),
    "batch_norm eval": lambda F, x, w, b: F.batch_norm(
        x,
        torch.zeros(3, dtype=w.dtype if w is not None else torch.float32),
        torch.ones(3, dtype=w.dtype if w is not None else torch.float32),
        w,
        b,
    ),
    "instance_norm": lambda F, x, w, b: F.instance_norm(x, weight=w, bias=b),
    "layer_norm": lambda F, x, w, b: F.layer_norm(
        x, (4,), None if w is None else w.repeat(2)[:4], None if b is None else b.repeat(2)[:4]
    ),
    "group_norm": lambda F, x, w, b: F.group_norm(x, 3, w, b),
    "rms_norm": lambda F, x, w, b: F.rms_norm(x, (4,), None if w is None else w.repeat(2)[:4]),
}


@pytest.mark.parametrize("x_dtype,p_dtype", list(itertools.product(DTYPES, PARAM_DTYPES)), ids=str)
@pytest.mark.parametrize("op", CALLS.values(), ids=CALLS.keys())
def test_dtype_rules_match_torch(op, x_dtype, p_dtype):
    """Every input x parameter dtype pair: same exception and message, or the same output dtype
    and (close) values."""
    x = (torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0)) * 2).to(x_dtype)
    w, b = _params(p_dtype, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's rms_norm warns about its fused path
        assert_same_error(lambda nn, F: op(F, x, w, b))
        results = []
        for _, F in NAMESPACES.values():
            try:
                results.append(op(F, x, w, b))
            except Exception:
                return
    low = x_dtype if p_dtype is None else min((x_dtype, p_dtype), key=lambda d: torch.finfo(d).bits)
    torch.testing.assert_close(results[1], results[0], **TOL[low][0])


@pytest.mark.parametrize("momentum", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_with_running_tensors(training, momentum):
    x = torch.randn(5, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    outs = []
    for _, F in NAMESPACES.values():
        rm = torch.linspace(-1, 1, 3, dtype=torch.float64)
        rv = torch.linspace(0.5, 2, 3, dtype=torch.float64)
        y = F.batch_norm(x, rm, rv, None, None, training, momentum, 1e-3)
        outs.append((y, rm, rv))
    for a, b in zip(*outs):
        torch.testing.assert_close(b, a, **TOL[torch.float64][0])


def test_instance_norm_running_stats_update():
    x = torch.randn(4, 3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    outs = []
    for _, F in NAMESPACES.values():
        rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
        y = F.instance_norm(x, rm, rv, momentum=0.3)
        y_eval = F.instance_norm(x, rm, rv, use_input_stats=False)
        outs.append((y, y_eval, rm, rv))
    for a, b in zip(*outs):
        torch.testing.assert_close(b, a, **TOL[torch.float64][0])


ORDER = {
    "layer_norm: dtypes before shapes": lambda nn, F: F.layer_norm(
        torch.randn(2, 4), (4,), torch.ones(4).half(), torch.ones(3).half()
    ),
    "layer_norm: dtypes before input shape": lambda nn, F: F.layer_norm(
        torch.randn(2, 4), (5,), torch.ones(5).half()
    ),
    "layer_norm: shapes before integer": lambda nn, F: F.layer_norm(
        torch.ones(2, 4, dtype=torch.long), (5,)
    ),
    "group_norm: shapes before dtypes": lambda nn, F: F.group_norm(
        torch.randn(2, 3, 4), 3, torch.ones(4).half()
    ),
    "group_norm: groups before dtypes": lambda nn, F: F.group_norm(
        torch.randn(2, 3, 4), -3, torch.ones(3).half()
    ),
    "rms_norm: shapes before integer": lambda nn, F: F.rms_norm(
        torch.ones(2, 4, dtype=torch.long), (5,)
    ),
    "batch_norm: sizes before integer": lambda nn, F: F.batch_norm(
        torch.ones(2, 3, dtype=torch.long), None, None, torch.ones(4), training=True
    ),
    "instance_norm: sizes before integer": lambda nn, F: F.instance_norm(
        torch.ones(2, 3, 4, dtype=torch.long), weight=torch.ones(4)
    ),
}


@pytest.mark.parametrize("call", ORDER.values(), ids=ORDER.keys())
def test_check_order_matches_torch(call):
    """With two things wrong, the same one is reported."""
    assert_same_error(call)

"""Every backend gives the same outputs, gradients and running statistics, for every module (and
torch.nn's, the oracle). "triton" is tested by its own suite (tests/kernels, `kernels` marker)."""

from __future__ import annotations

import pytest
import torch
from nn._helpers import check_step, make_pair  # tests/ is on sys.path (pytest's rootdir import)

import normlib
import normlib.nn as nl
from normlib import backend

BACKENDS = [b for b in normlib.backends() if b != "triton"]

MODULES = {
    "BatchNorm1d": (lambda ns: ns.BatchNorm1d(3), (5, 3)),
    "BatchNorm2d cl": (lambda ns: ns.BatchNorm2d(3), (4, 3, 5, 2)),
    "BatchNorm3d": (lambda ns: ns.BatchNorm3d(2, momentum=None), (2, 2, 3, 2, 3)),
    "BatchNorm2d untracked": (
        lambda ns: ns.BatchNorm2d(3, track_running_stats=False),
        (2, 3, 2, 2),
    ),
    "SyncBatchNorm": (lambda ns: ns.SyncBatchNorm(3), (4, 3, 3)),
    "InstanceNorm1d": (
        lambda ns: ns.InstanceNorm1d(3, affine=True, track_running_stats=True),
        (2, 3, 7),
    ),
    "InstanceNorm2d": (lambda ns: ns.InstanceNorm2d(3), (2, 3, 4, 3)),
    "LayerNorm": (lambda ns: ns.LayerNorm((3, 5)), (4, 3, 5)),
    "GroupNorm": (lambda ns: ns.GroupNorm(2, 6), (3, 6, 5)),
    "GroupNorm cl": (lambda ns: ns.GroupNorm(3, 6, bias=False), (2, 6, 3, 4)),
    "RMSNorm": (lambda ns: ns.RMSNorm(5), (3, 4, 5)),
}


def _x(shape, name, dtype=torch.float64):
    x = (
        torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
        + 0.5
    ).to(dtype)
    return x.to(memory_format=torch.channels_last) if name.endswith(" cl") else x


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("name_backend", BACKENDS)
def test_backend_matches_torch(name_backend, name, train, dtype):
    make, shape = MODULES[name]
    reference, ours = make_pair(make, dtype)
    reference.train(train)
    ours.train(train)
    with normlib.use_backend(name_backend):
        for step in range(2):
            check_step(reference, ours, _x(shape, name, dtype), seed=step)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", MODULES)
def test_backends_agree_with_each_other(name, train):
    """Outputs, input/parameter gradients and buffers of each backend vs the first, float64."""
    make, shape = MODULES[name]
    results = []
    for name_backend in BACKENDS:
        module = make_pair(make)[1].train(train)
        x = _x(shape, name).requires_grad_()
        with normlib.use_backend(name_backend):
            y = module(x)
            y = module(x)
            grads = torch.autograd.grad(y, [x, *module.parameters()], torch.cos(y.detach()))
        results.append([y, *grads, *module.buffers()])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(b, a, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name_backend", BACKENDS)
def test_half_inputs_on_every_backend(name_backend, half):
    """fp16/bf16 in: output in the input dtype, fp32 running statistics, close to torch."""
    reference, ours = make_pair(lambda ns: ns.BatchNorm2d(3), torch.float32)
    x = _x((4, 3, 4, 4), "", half)
    with normlib.use_backend(name_backend):
        check_step(reference, ours, x)
    assert ours.running_mean.dtype == torch.float32


@pytest.mark.parametrize("name_backend", BACKENDS)
def test_functional_dispatches_to_the_selected_backend(name_backend, monkeypatch):
    """normlib.nn.functional calls backend.get(backend.resolve(device)), nothing else: a backend
    plugged in there (as "triton" is) receives every call."""
    module = backend.get(name_backend)
    seen = []
    for op in ("batch_norm_train", "batch_norm_eval", "layer_norm", "rms_norm", "group_norm"):
        original = getattr(module, op)

        def spy(*args, _op=op, _original=original, **kwargs):
            seen.append(_op)
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, op, spy)
    x = torch.randn(2, 4, 3)
    with normlib.use_backend(name_backend):
        assert backend.resolve(x.device) == name_backend
        nl.BatchNorm1d(4)(x)
        nl.BatchNorm1d(4).eval()(x)
        nl.InstanceNorm1d(4)(x)
        nl.LayerNorm(3)(x)
        nl.RMSNorm(3)(x)
        nl.GroupNorm(2, 4)(x)
    assert seen == [
        "batch_norm_train",
        "batch_norm_eval",
        "batch_norm_train",
        "layer_norm",
        "rms_norm",
        "group_norm",
    ]


def test_numpy_backend_is_differentiable_once():
    """The NumPy backward is NumPy: double backward raises instead of returning wrong numbers."""
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    with normlib.use_backend("numpy"):
        y = nl.LayerNorm(3).double()(x)
        (dx,) = torch.autograd.grad(y, x, torch.randn_like(y), create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(dx.sum(), x)

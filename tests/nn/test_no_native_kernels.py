"""normlib owns its arithmetic: with torch's own norm kernels patched to raise (the Python entry
points AND, below them, every aten op whose name says it is a norm), every module still runs forward
and backward (double backward too), in train and eval, on every backend."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import normlib
import normlib.nn as nl

FORBIDDEN_PYTHON = {
    torch: [
        "batch_norm",
        "native_batch_norm",
        "_native_batch_norm_legit",
        "_native_batch_norm_legit_no_training",
        "_batch_norm_impl_index",
        "batch_norm_stats",
        "batch_norm_elemt",
        "batch_norm_gather_stats",
        "batch_norm_gather_stats_with_counts",
        "batch_norm_backward_reduce",
        "batch_norm_backward_elemt",
        "batch_norm_update_stats",
        "cudnn_batch_norm",
        "miopen_batch_norm",
        "layer_norm",
        "native_layer_norm",
        "group_norm",
        "native_group_norm",
        "instance_norm",
        "rms_norm",
        "_fused_rms_norm",
    ],
    torch.nn.functional: ["batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm"],
}
NORM_WORDS = ("batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm")


class NoNativeNorms(TorchDispatchMode):
    """Fails on any aten op with a norm in its name, however it was reached."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if any(word in func._schema.name for word in NORM_WORDS):
            raise AssertionError(f"normlib called torch's {func._schema.name}")
        return func(*args, **(kwargs or {}))


@pytest.fixture
def no_native(monkeypatch):
    def refuse(name):
        def raiser(*args, **kwargs):
            raise AssertionError(f"normlib called torch's {name}")

        return raiser

    for namespace, names in FORBIDDEN_PYTHON.items():
        for name in names:
            if hasattr(namespace, name):
                monkeypatch.setattr(namespace, name, refuse(name))
    with NoNativeNorms():
        yield


MODULES = [
    (lambda: nl.BatchNorm1d(3), (4, 3)),
    (lambda: nl.BatchNorm2d(3), (2, 3, 4, 5)),
    (lambda: nl.BatchNorm3d(3, momentum=None), (2, 3, 2, 2, 2)),
    (lambda: nl.SyncBatchNorm(3), (2, 3, 4)),
    (lambda: nl.InstanceNorm1d(3, affine=True, track_running_stats=True), (2, 3, 5)),
    (lambda: nl.InstanceNorm2d(3), (2, 3, 4, 5)),
    (lambda: nl.InstanceNorm3d(3, affine=True), (3, 2, 2, 2)),
    (lambda: nl.LayerNorm((4, 5)), (2, 3, 4, 5)),
    (lambda: nl.GroupNorm(3, 6), (2, 6, 4)),
    (lambda: nl.RMSNorm(5), (2, 3, 5)),
]


def test_the_guard_catches_torch(no_native):
    """The fixture does refuse torch's kernels (else the test below would prove nothing)."""
    with pytest.raises(AssertionError, match="normlib called torch's"):
        torch.nn.BatchNorm2d(3)(torch.randn(2, 3, 4, 4))
    with pytest.raises(AssertionError, match="normlib called torch's"):
        torch.ops.aten.native_layer_norm(torch.randn(2, 4), [4], None, None, 1e-5)


@pytest.mark.parametrize("backend", [b for b in normlib.backends() if b != "triton"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_every_module_runs_without_native_kernels(no_native, train, backend):
    with normlib.use_backend(backend):
        for make, shape in MODULES:
            module = make().double().train(train)
            for memory_format in (torch.contiguous_format, torch.channels_last):
                x = torch.randn(shape, dtype=torch.float64)
                if x.dim() == 4:
                    x = x.to(memory_format=memory_format)
                x.requires_grad_()
                y = module(x)
                params = [p for p in module.parameters()]
                grads = torch.autograd.grad(
                    y, [x, *params], torch.randn_like(y), create_graph=backend == "torch"
                )
                if backend == "torch":  # double backward: the backward is differentiable
                    torch.autograd.grad(
                        sum(g.square().sum() for g in grads), [x, *params], allow_unused=True
                    )
            with torch.no_grad():
                module(x.detach().float().double())
